"""raw's task with and without tokenizing every document: what moving token counts off the ingest path saves, and how
close raw's estimate (text bytes x the tokens per byte of a seeded 1/32 sample) comes to the exact count.

Usage: .venv/bin/python benchmarks/bench_raw_tokens.py [--input SHARD ...] [--repeat 3] [--tokenizer cl100k_base]
Default input: every data shard of the shared corpus (../shared/corpus/data/*/part-*), one source per directory.

Both sides run raw's task on one core, in this process: `read_shard` (as `raw` reads, the same reader for both),
then the baseline counts every document's tokens (what `raw` did before issue 19) and ours counts the seeded sample
(`core.frames.sample_tokens`) only. The exact count the baseline makes is the truth the estimate is compared with.
CPU seconds are process time, the median of `--repeat` runs (reads and counts alternate, so a busy machine
weighs on both). The last line is the ratio.
"""

import argparse
import glob
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation_assets.core.frames import TokenEstimate, sample_tokens  # noqa: E402
from curation_assets.core.readers import detect_format, read_shard  # noqa: E402
from resources.tokenizer import TokenizerResource  # noqa: E402


def cpu(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = sorted(glob.glob(str(ROOT.parent / "shared" / "corpus" / "data" / "*" / "part-*")))
    ap.add_argument("--input", nargs="+", default=default)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokenizer", default="cl100k_base")
    args = ap.parse_args()
    if not args.input:
        sys.exit("no input: pass --input SHARD ... (the shared corpus is not at ../shared/corpus)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as one Ray task
    tok = TokenizerResource(encoding=args.tokenizer, num_threads=1)
    tok.count_tokens(["warm up"])

    def read(path: str):
        with open(path, "rb") as f:
            return read_shard(f, fmt=detect_format(path), source=Path(path).parent.name, shard=Path(path).name).docs

    runs = {"read": [], "all": [], "sample": []}
    per_source: dict[str, dict] = {}
    for _ in range(args.repeat):
        t = dict.fromkeys(runs, 0.0)
        for path in args.input:
            seconds, docs = cpu(lambda p=path: read(p))
            t["read"] += seconds
            seconds, counts = cpu(lambda d=docs: tok.count_tokens(d["text"].to_list()))
            t["all"] += seconds
            seconds, sample = cpu(lambda d=docs: sample_tokens(d, tok.count_tokens))
            t["sample"] += seconds
            s = per_source.setdefault(Path(path).parent.name, {"docs": 0, "bytes": 0, "exact": 0, "samples": []})
            if len(runs["read"]) == 0:  # the figures of the first run (every run's are the same)
                s["docs"] += docs.height
                s["bytes"] += int(docs["text"].str.len_bytes().sum() or 0)
                s["exact"] += sum(counts)
                s["samples"].append(sample)
        for k in runs:
            runs[k].append(t[k])
    worst = 0.0
    print(f"{'source':<14} {'docs':>6} {'MB':>7} {'exact tokens':>13} {'estimate':>11} {'error':>7} {'sampled':>8}")
    for name, s in per_source.items():
        est = TokenEstimate.of(s["samples"], args.tokenizer, kept_bytes=s["bytes"])
        err = (est.kept - s["exact"]) / s["exact"]
        worst = max(worst, abs(err))
        print(
            f"{name:<14} {s['docs']:>6} {s['bytes'] / 1e6:>7.1f} {s['exact']:>13,} {est.kept:>11,} "
            f"{err:>+7.2%} {est.sample_docs:>8}"
        )
    read_s, all_s, sample_s = (statistics.median(runs[k]) for k in ("read", "all", "sample"))
    mb = sum(s["bytes"] for s in per_source.values()) / 1e6
    print(f"read_shard: {read_s:.2f} s CPU ({mb / read_s:.1f} MB/s of text), median of {args.repeat}")
    print(f"tokenize every document: {all_s:.2f} s; the seeded sample: {sample_s:.2f} s")
    print(f"raw task, every document tokenized (baseline): {read_s + all_s:.2f} s, {mb / (read_s + all_s):.1f} MB/s")
    print(f"raw task, sample only (ours): {read_s + sample_s:.2f} s, {mb / (read_s + sample_s):.1f} MB/s")
    print(
        f"raw task CPU: {(read_s + all_s) / (read_s + sample_s):.2f}x faster without counting every document; "
        f"token estimate within {worst:.2%} of the exact count on every source"
    )


if __name__ == "__main__":
    main()
