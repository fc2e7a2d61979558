"""raw on HTML shards against Resiliparse alone: how close HTML extraction runs to the extractor's own speed.

Usage: python benchmarks/bench_html.py [--input FILE ...] [--repeat 3]

Input: the shared corpus's web JSONL.zst shards (HTML pages). Each side runs in its own subprocess with one polars
thread and is timed in process CPU time (the machine is shared), median of `--repeat` runs:
- `ours`: `read_shard(..., html=True)`, the whole of raw's reading (decompression, JSON, validation, quarantine,
  ids, `html_to_text`: main-content extraction with a full-text fallback);
- `resiliparse`: zstd + `json.loads` per line + `extract_plain_text(html, main_content=True)` with the library's
  defaults and nothing else: the floor for this work.
MB = bytes of the input HTML (`text` field). Last line: the ratio of our MB/s to the bare extractor's.
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
ONE_CORE = {"POLARS_MAX_THREADS": "1", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def worker(side: str, paths: list[str]) -> None:
    """Read every shard once; print [cpu seconds, HTML bytes] as JSON."""
    sys.path.insert(0, str(ROOT))
    import zstandard
    from resiliparse.extract.html2text import extract_plain_text

    from curation_assets.core.readers import detect_format, read_shard

    def html_bytes(path: str) -> int:
        with open(path, "rb") as f:
            lines = zstandard.ZstdDecompressor().stream_reader(f).read().splitlines()
        return sum(len(json.loads(line)["text"].encode()) for line in lines if line.strip())

    def ours(path: str) -> None:
        with open(path, "rb") as f:
            read_shard(f, fmt=detect_format(path), source="web", shard=Path(path).name, html=True)

    def bare(path: str) -> None:
        with open(path, "rb") as f:
            for line in zstandard.ZstdDecompressor().stream_reader(f).read().splitlines():
                if line.strip():
                    extract_plain_text(json.loads(line)["text"], main_content=True)

    run = ours if side == "ours" else bare
    run(paths[0])  # warm-up: lazy imports, first calls
    seconds = 0.0
    for path in paths:
        t0 = time.process_time()
        run(path)
        seconds += time.process_time() - t0
    print(json.dumps([seconds, sum(html_bytes(p) for p in paths)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = sorted(glob.glob(str(ROOT.parent / "shared" / "corpus" / "data" / "web" / "*.jsonl.zst")))
    ap.add_argument("--input", nargs="+", default=default)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.input)
        return
    env = {**os.environ, **ONE_CORE}
    speeds: dict[str, list[float]] = {"ours": [], "resiliparse": []}
    for _ in range(args.repeat):  # interleaved, so a busy spell hits both sides
        for side in speeds:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", side, "--input", *args.input],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            seconds, nbytes = json.loads(out.strip().splitlines()[-1])
            speeds[side].append(nbytes / 1e6 / seconds)
    print(f"{len(args.input)} HTML shards, MB of HTML per CPU second (one core), median of {args.repeat} runs")
    for side, values in speeds.items():
        print(f"  {side:<12} {statistics.median(values):8.2f} MB/s (spread {min(values):.2f}-{max(values):.2f})")
    ratios = [o / b for o, b in zip(speeds["ours"], speeds["resiliparse"], strict=True)]
    print(
        f"html extraction vs bare Resiliparse (per core): {statistics.median(ratios):.2f}x "
        f"(ours {statistics.median(speeds['ours']):.2f} MB/s vs {statistics.median(speeds['resiliparse']):.2f} MB/s; "
        f"spread {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


if __name__ == "__main__":
    main()
