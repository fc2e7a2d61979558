"""Throughput of `filtered`'s core against datatrove 0.10.1's FineWeb filter chain, same documents, same run, one core.

Usage: .venv/bin/python benchmarks/bench_filter.py --input SHARD [SHARD ...] [--dt-python /tmp/dtvenv/bin/python]
       [--dt-json FILE]
Shards are read with our readers (HTML extracted as `raw` does) outside the clock; both chains then filter the same
texts: LanguageFilter(en, > 0.65) -> GopherRepetition -> GopherQuality -> C4Quality(filter_no_terminal_punct=False)
-> FineWebQuality, datatrove's defaults. Each side runs in its own subprocess pinned to CPU 0 (polars limited to one
thread), so "per core" is literal; seconds are the subprocess's CPU time (`time.process_time`, both sides: the
machine may be shared, wall time would count other processes' load); peak RSS is the subprocess's. The datatrove side
needs its own venv (see benchmarks/datatrove_baseline.py); without it only our side is reported. `--dt-json` keeps
datatrove's result (seconds, per-document reasons) in FILE and reuses it when FILE exists and was measured on the same
documents: datatrove takes minutes, ours seconds, so iterating on ours runs datatrove once.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OURS = """
import json, resource, sys, time
import fasttext, polars as pl
from curation_assets.core.filtering import FilterParams, filter_docs, lang_labels, BATCH_DOCS
docs = pl.read_parquet(sys.argv[1])
model = fasttext.load_model(sys.argv[2])
params = FilterParams(languages=("en",))
t0 = time.process_time()
reasons = []
for start in range(0, docs.height, BATCH_DOCS):
    batch = docs.slice(start, BATCH_DOCS)
    lang = lang_labels(
        lambda b: model.predict(b, k=1), batch["text"], params.lang_max_chars, threshold=params.min_lang_score
    )
    reasons += filter_docs(batch, params, lang)["drop_reason"].to_list()
seconds = time.process_time() - t0
print(json.dumps({"seconds": seconds, "docs": docs.height, "mb": docs["text"].str.len_bytes().sum() / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "reasons": reasons}))
"""
# datatrove_baseline.chain with its clock on the process's CPU time (see the module docstring)
DATATROVE = """
import sys, time
sys.path.insert(0, sys.argv[1])
time.perf_counter = time.process_time
import datatrove_baseline
datatrove_baseline.chain(*sys.argv[2:])
"""


def pinned(cmd: list[str]) -> list[str]:
    return (["taskset", "-c", "0"] if os.path.exists("/usr/bin/taskset") else []) + cmd


def main() -> None:
    import polars as pl

    from curation_assets.core.readers import detect_format, read_shard

    ap = argparse.ArgumentParser()
    ap.add_argument("--input", nargs="+", required=True)
    ap.add_argument("--dt-python", default="/tmp/dtvenv/bin/python")
    ap.add_argument("--dt-json", type=Path, help="datatrove's result: reused if present (same docs), else written")
    args = ap.parse_args()
    frames = []
    for p in map(Path, args.input):
        with open(p, "rb") as f:
            frames.append(read_shard(f, fmt=detect_format(p.name), source=p.parent.name, shard=p.name).docs)
    docs = pl.concat(frames).select("doc_id", "text")
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/docs.parquet"
        docs.write_parquet(path)
        out = subprocess.run(
            pinned([sys.executable, "-c", OURS, path, str(ROOT / "resources/models/lid.176.ftz")]),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results["ours (polars + lid.176)"] = json.loads(out.stdout.strip().splitlines()[-1])
        dt_json = args.dt_json or Path(f"{tmp}/dt.json")
        cached = json.loads(dt_json.read_text()) if dt_json.exists() else None
        ours = results["ours (polars + lid.176)"]
        if cached and (cached["docs"], round(cached["mb"], 6)) == (ours["docs"], round(ours["mb"], 6)):
            results["datatrove 0.10.1 FineWeb chain"] = cached
        elif Path(args.dt_python).exists():
            subprocess.run(
                pinned([args.dt_python, "-c", DATATROVE, str(ROOT / "benchmarks"), path, str(dt_json)]),
                env=env,
                check=True,
                capture_output=True,
            )
            results["datatrove 0.10.1 FineWeb chain"] = json.loads(dt_json.read_text())
    print(f"{'chain':<34} {'docs':>6} {'MB':>7} {'s':>8} {'docs/s':>8} {'MB/s/core':>9} {'RSS MB':>7}")
    for name, r in results.items():
        print(
            f"{name:<34} {r['docs']:>6} {r['mb']:>7.2f} {r['seconds']:>8.2f} {r['docs'] / r['seconds']:>8.1f} "
            f"{r['mb'] / r['seconds']:>9.2f} {r['peak_rss_mb']:>7.0f}"
        )
    if len(results) == 2:
        ours, dt = results.values()
        agree = sum((a is None) == (b is None) for a, b in zip(ours["reasons"], dt["reasons"])) / len(ours["reasons"])
        print(f"speed ratio ours/datatrove: {dt['seconds'] / ours['seconds']:.2f}x; keep/drop agreement {agree:.4f}")


if __name__ == "__main__":
    main()
