"""Throughput and peak memory of the step cores, each against a named baseline measured in the same run.

Usage: python benchmarks/run.py [--corpus ../shared/corpus] [--repeat 3]
Every case runs in a fresh subprocess (so peak RSS is its own); the clock starts after imports (each snippet resets
`t0`); the median of `--repeat` runs is reported. Baselines: a bare zstandard + json.loads loop (the corpus README's
reference reader, no validation, no quarantine). Tokenization has its own benchmark: benchmarks/bench_tokenize.py.
Results go to stdout and benchmarks/results/latest.json. Falls back to the bundled sample without the corpus.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # name: (code, baseline name or None). Each snippet sets `docs` (documents processed) and `mb` (input MB).
    "raw.read_shard": (
        """
from curation_assets.core.readers import read_shard, detect_format
import time; t0 = time.perf_counter()
docs = mb = 0
for p in FILES:
    with open(p, 'rb') as f:
        r = read_shard(f, fmt=detect_format(p.name), source='b', shard=p.name)
    docs += r.docs.height; mb += p.stat().st_size / 1e6
""",
        "baseline.zstd_json_loop",
    ),
    "baseline.zstd_json_loop": (
        """
import io, json, zstandard, polars as pl
import time; t0 = time.perf_counter()
docs = mb = 0
for p in FILES:
    mb += p.stat().st_size / 1e6
    if p.suffix == '.zst':
        with open(p, 'rb') as f:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding='utf-8'):
                json.loads(line); docs += 1
    else:
        docs += pl.read_parquet(p).height
""",
        None,
    ),
}

HARNESS = """
import sys, time, json, resource
from pathlib import Path
FILES = [Path(p) for p in json.loads(sys.argv[1])]
t0 = time.perf_counter()
{code}
elapsed = time.perf_counter() - t0
print(json.dumps({{"docs": docs, "mb": mb, "seconds": elapsed,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(code: str, files: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", HARNESS.format(code=code), json.dumps(files)], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    books = Path(args.corpus) / "data" / "books"
    files = (
        sorted(map(str, books.glob("part-*")))
        if books.is_dir()
        else sorted(map(str, (ROOT / "curation_assets" / "sample" / "books").glob("part-*")))
    )
    results = {}
    for name, (code, _) in CASES.items():
        runs = [measure(code, files) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "peak_rss_mb")}
        results[name] = {
            "docs": runs[0]["docs"],
            "input_mb": round(runs[0]["mb"], 2),
            **med,
            "docs_per_s": round(runs[0]["docs"] / med["seconds"], 1),
            "mb_per_s_per_core": round(runs[0]["mb"] / med["seconds"], 2),
        }  # every case is single-process
    for name, (_, base) in CASES.items():
        if base:
            results[name]["baseline"] = base
            results[name]["speed_ratio_to_baseline"] = round(results[base]["seconds"] / results[name]["seconds"], 2)
    print(f"{'case':<32} {'docs':>7} {'MB':>7} {'s (median)':>10} {'docs/s':>9} {'MB/s/core':>9} {'RSS MB':>7} ratio")
    for name, r in results.items():
        print(
            f"{name:<32} {r['docs']:>7} {r['input_mb']:>7} {r['seconds']:>10.3f} {r['docs_per_s']:>9} "
            f"{r['mb_per_s_per_core']:>9} {r['peak_rss_mb']:>7.0f} {r.get('speed_ratio_to_baseline', '')}"
        )
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "latest.json").write_text(
        json.dumps({"files": [os.path.relpath(f, ROOT) for f in files], "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
