"""raw's reader against plain polars on the same shards: `read_shard` vs zstd + `polars.read_ndjson` (.jsonl.zst) and
vs `polars.read_parquet` (.parquet), in MB of document text per CPU second on one core.

Usage: .venv/bin/python benchmarks/bench_read.py [--input SHARD ...] [--repeat 3]
Default input: the shared corpus's clean non-HTML shards (../shared/corpus/data/{books,code,multilingual}/part-*).

Each side of each run is a fresh subprocess with one polars / rayon thread (POLARS_MAX_THREADS=1,
RAYON_NUM_THREADS=1), so "per core" is literal; seconds are that subprocess's CPU time (`time.process_time`, not the
wall clock: the machine is shared) over the reads only, from opening the file to the frame, imports excluded. MB are
the UTF-8 bytes of the documents' text each side returns (equal on clean shards). Figures are the median of
`--repeat` runs, with their spread; the sides alternate, so a busy machine weighs on both. The last line is the ratio.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "POLARS_MAX_THREADS": "1", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def worker(side: str, paths: list[str]) -> None:
    """Read every shard once; print {format: [cpu seconds, text bytes]} as JSON."""
    sys.path.insert(0, str(ROOT))
    import polars as pl
    import zstandard

    from curation_assets.core.readers import detect_format, read_shard

    def ours(path: str, fmt: str) -> pl.DataFrame:
        with open(path, "rb") as f:
            return read_shard(f, fmt=fmt, source=Path(path).parent.name, shard=Path(path).name).docs

    def polars(path: str, fmt: str) -> pl.DataFrame:
        if fmt == "parquet":
            return pl.read_parquet(path)
        with open(path, "rb") as f:
            return pl.read_ndjson(zstandard.ZstdDecompressor().stream_reader(f).read())

    read = ours if side == "ours" else polars
    for fmt, path in {detect_format(p): p for p in paths}.items():  # warm up per format: lazy imports, first calls
        read(path, fmt)
    out: dict[str, list[float]] = {}
    for path in paths:
        fmt = detect_format(path)
        t0 = time.process_time()
        docs = read(path, fmt)
        seconds = time.process_time() - t0
        acc = out.setdefault(fmt, [0.0, 0])
        acc[0] += seconds
        acc[1] += int(docs["text"].str.len_bytes().sum())
    print(json.dumps(out))


def run(side: str, paths: list[str]) -> dict[str, list[float]]:
    cmd = [sys.executable, __file__, "--worker", side, "--input", *paths]
    return json.loads(subprocess.run(cmd, env=ENV, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = sorted(
        p
        for source in ("books", "code", "multilingual")
        for p in glob.glob(str(ROOT.parent / "shared" / "corpus" / "data" / source / "part-*"))
        if p.endswith((".jsonl.zst", ".parquet"))
    )
    ap.add_argument("--input", nargs="+", default=default)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", choices=("ours", "polars"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.input:
        sys.exit("no input: pass --input SHARD ... (the shared corpus is not at ../shared/corpus)")
    if args.worker:
        return worker(args.worker, args.input)

    runs: dict[str, list[dict]] = {"ours": [], "polars": []}
    for _ in range(args.repeat):
        for side in runs:
            runs[side].append(run(side, args.input))
    fmts = sorted(runs["ours"][0])

    def speeds(side: str, fmt: str | None) -> list[float]:
        """MB/s of each run, over one format or (None) all of them."""
        keys = [fmt] if fmt else fmts
        return [sum(r[k][1] for k in keys) / 1e6 / sum(r[k][0] for k in keys) for r in runs[side]]

    print(f"{len(args.input)} shards, median of {args.repeat} runs per side, MB of text per CPU second (one core)")
    baseline = {"jsonl.zst": "zstd + pl.read_ndjson", "parquet": "pl.read_parquet"}
    for fmt in [*fmts, None]:
        ours, polars = speeds("ours", fmt), speeds("polars", fmt)
        mb = runs["ours"][0][fmt][1] / 1e6 if fmt else sum(runs["ours"][0][k][1] for k in fmts) / 1e6
        label = fmt or "overall"
        base = baseline.get(fmt, "polars")
        print(
            f"  {label:10} {mb:7.1f} MB  ours {statistics.median(ours):6.1f} MB/s ({min(ours):.1f}-{max(ours):.1f})"
            f"  {base} {statistics.median(polars):6.1f} MB/s ({min(polars):.1f}-{max(polars):.1f})"
            f"  ratio {statistics.median(ours) / statistics.median(polars):.2f}x"
        )
    ours, polars = statistics.median(speeds("ours", None)), statistics.median(speeds("polars", None))
    print(
        f"read speed vs polars (clean non-HTML shards, per core): {ours / polars:.2f}x "
        f"(ours {ours:.1f} MB/s vs polars {polars:.1f} MB/s)"
    )


if __name__ == "__main__":
    main()
