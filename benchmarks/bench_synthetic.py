"""Per-document cost of every programmatic generator, and whether any document is pathological.

Usage: python benchmarks/bench_synthetic.py [--input FILE ...] [--min-kb 1]

Input: the shared corpus's code and books shards (or any shards named with `--input`). Every generator runs on every
document of at least `--min-kb` KB (smaller ones measure call overhead, not the generator), one document at a time,
one core. Per generator it prints documents/s, MB/s, and the spread of seconds per MB: the slowest document's over
the median document's (issue 19's bound: <= 20x; a generator quadratic in document size shows up here as hundreds).

Baseline in the same run: `code_docs` with the standard library's `ast.get_source_segment` (which re-splits the whole
file on every call) instead of `generators.SourceSegments`; the ratio printed last is baseline seconds over ours.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation_assets.core import generators
from curation_assets.core.readers import detect_format, read_shard


class StdlibSegments:
    """The baseline: `ast.get_source_segment` on every call (what code_docs did before)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, node, padded: bool = False):
        import ast

        return ast.get_source_segment(self.source, node, padded=padded)


def load(paths: list[Path], min_bytes: int) -> list[str]:
    texts = []
    for p in paths:
        with open(p, "rb") as f:
            texts += [t for t in read_shard(f, fmt=detect_format(p.name), source="b", shard=p.name).docs["text"]]
    return [t for t in texts if len(t.encode()) >= min_bytes]


def timed(fn, texts: list[str]) -> list[float]:
    seconds = []
    for i, t in enumerate(texts):
        start = time.perf_counter()
        fn(t, f"doc-{i}")
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    corpus = ROOT.parent / "shared" / "corpus" / "data"
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", nargs="+", type=Path, default=sorted(corpus.glob("code/part-*")) + sorted(corpus.glob("books/part-*")))
    ap.add_argument("--min-kb", type=float, default=1.0)
    args = ap.parse_args()
    texts = load(args.input, int(args.min_kb * 1024))
    sizes = [len(t.encode()) / 1e6 for t in texts]
    print(f"{len(texts)} documents >= {args.min_kb} KB, {sum(sizes):.1f} MB, from {len(args.input)} shards")
    print(f"{'generator':<12} {'docs/s':>9} {'MB/s':>7} {'slowest s/MB over median':>25} {'slowest doc':>12}")
    ours_code = None
    for name, fn in generators.PROGRAMMATIC.items():
        seconds = timed(fn, texts)
        per_mb = [s / mb for s, mb in zip(seconds, sizes, strict=True)]
        worst = max(range(len(texts)), key=per_mb.__getitem__)
        spread = per_mb[worst] / statistics.median(per_mb)
        total = sum(seconds)
        print(
            f"{name:<12} {len(texts) / total:>9.0f} {sum(sizes) / total:>7.1f} {spread:>24.1f}x "
            f"{seconds[worst]:>9.3f} s ({sizes[worst] * 1e3:.0f} KB)"
        )
        if name == "code_docs":
            ours_code = total
    with mock.patch.object(generators, "SourceSegments", StdlibSegments):
        base_code = sum(timed(generators.gen_code_docs, texts))
    print(f"code_docs speedup vs ast.get_source_segment: {base_code / ours_code:.2f}x ({base_code:.2f} s vs {ours_code:.2f} s)")


if __name__ == "__main__":
    main()
