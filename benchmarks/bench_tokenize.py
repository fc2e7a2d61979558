"""Tokens/s per core: the `tokenized` step's core against tiktoken's fastest public path, on a seeded sample drawn
from every source of a corpus.

Usage: python benchmarks/bench_tokenize.py [--corpus ../shared/corpus] [--mb 16] [--seed 0] [--threads 1]
       [--repeat 5] [--no-pin]

Input: every shard of every source (`<corpus>/data/<source>/*`, or `<corpus>/<source>/*`; without the corpus, the
bundled sample) read with the project's reader as `raw` reads it (HTML extracted), outside the clock; then a seeded
uniform sample of documents across all sources (each document equally likely, so each source's share of the
sample's bytes is its share of the corpus's) up to `--mb` MB of text (0: all), in the sampled (shuffled) order, as a
mixture is. Each source's documents and MB in the sample are printed.

Cases (same documents, encoding `cl100k_base`, T = `--threads`; the clock covers only the case):
- `bare.encode_ordinary_batch`: `enc.encode_ordinary_batch(texts, num_threads=T)` (lists of Python ints);
- `bare.encode_to_numpy`: `enc.encode_to_numpy(text, disallowed_special=())` per document (ids in a numpy array;
  `disallowed_special=()` makes it `encode_ordinary`'s ids and skips the special-token scan), T contiguous chunks
  on T threads;
- `tokenized.token_files`: the step's core as the step runs it - texts taken from the mixture frame batch by batch,
  encoded (`TokenizerResource.encode_arrays`), EOT appended, packed into Megatron `.bin`/`.idx` bytes per shard
  (the step's default `shard_tokens`), `documents.parquet`, `manifest.json` and every sha256: everything but
  writing the files;
- `loader.online` / `loader.offline`: the dial's two paths (encode and cut 2048-token sequences; read the written
  shards memory-mapped and cut the same sequences).
The baseline is whichever bare case has the lower median time in this run. Tokens/s per core = text tokens (EOT not
counted, the same number on every side) / CPU seconds of the process (`time.process_time`, all threads), so another
job's load on a shared machine is not billed to either side; with T = 1 the process is also pinned to one CPU
(`--no-pin` to leave it free). Cases are interleaved, each round in a rotated order, and the median of `--repeat`
rounds is reported; a ratio is that of the medians, and its spread the min-max of the per-round ratios (same
round, same load). The line printed last is the ratio of the step's core to the baseline.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from curation_assets.core.loader import OfflineSource, OnlineSource, sequences  # noqa: E402
from curation_assets.core.readers import detect_format, read_shard  # noqa: E402
from curation_assets.core.tokens import TokenizeParams, manifest_header, text_batches, token_files  # noqa: E402
from resources.tokenizer import TokenizerResource  # noqa: E402

SEQ = 2048
BARE = ("bare.encode_ordinary_batch", "bare.encode_to_numpy")
OURS = "tokenized.token_files"


def read_corpus(corpus: Path) -> pl.DataFrame:
    """Every readable shard of every source: `doc_id, source, text`, in source and shard order."""
    base = corpus / "data" if (corpus / "data").is_dir() else corpus
    if not base.is_dir():
        base = ROOT / "curation_assets" / "sample"
    frames = []
    for src in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(src.iterdir()):
            try:
                fmt = detect_format(path.name)
            except ValueError:
                continue
            with open(path, "rb") as f:
                docs = read_shard(f, fmt=fmt, source=src.name, shard=path.name).docs
            frames.append(docs.select("doc_id", "source", "text"))
    if not frames:
        raise SystemExit(f"no shards under {base}")
    return pl.concat(frames)


def sample(corpus: pl.DataFrame, mb: float, seed: int) -> pl.DataFrame:
    """A seeded uniform sample of documents (shuffled order) up to `mb` MB of text; 0 = every document."""
    order = np.random.default_rng(seed).permutation(corpus.height)
    docs = corpus[order]
    if mb > 0:
        size = docs["text"].str.len_bytes().cum_sum()
        docs = docs.head(max(1, int((size < mb * 1e6).sum()) + 1))
    missing = set(corpus["source"].unique()) - set(docs["source"].unique())
    if missing:
        raise SystemExit(f"the sample has no document of {sorted(missing)}: raise --mb")
    return docs.with_columns(component=pl.col("source"), epoch=pl.lit(0, pl.UInt32))


def chunks(items: list, k: int) -> list[list]:
    step = -(-len(items) // k)
    return [items[i : i + step] for i in range(0, len(items), step)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--mb", type=float, default=16.0, help="MB of text in the sample (0: the whole corpus)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-pin", action="store_true", help="with --threads 1, do not pin the process to one CPU")
    args = ap.parse_args()
    if args.repeat < 3:
        raise SystemExit("--repeat must be >= 3 (the median and spread of interleaved rounds)")
    threads = args.threads
    if threads == 1 and not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})

    corpus = read_corpus(Path(args.corpus))
    docs = sample(corpus, args.mb, args.seed)
    texts = docs["text"].to_list()
    mb = docs["text"].str.len_bytes().sum() / 1e6

    tok = TokenizerResource(num_threads=threads)
    enc = tok.enc
    counts = [a.size for a in tok.encode_arrays(texts)]
    tokens = sum(counts)
    mixed = docs.select("text").with_columns(pl.Series("n_tokens", counts, dtype=pl.Int64))
    header = manifest_header(
        tokenizer="cl100k_base",
        tokenizer_sha256=None,
        vocab_size=tok.vocab_size,
        eot_id=tok.eot_id,
        sequence_length=SEQ,
        shard_tokens=TokenizeParams().shard_tokens,
        recipe="bench",
        recipe_hash="bench",
    )
    meta = docs.select("doc_id", "source", "component", "epoch")
    numpy_pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def encode_to_numpy(part: list[str]) -> list[np.ndarray]:
        return [enc.encode_to_numpy(t, disallowed_special=()) for t in part]

    def bare_numpy():
        if numpy_pool is None:
            return encode_to_numpy(texts)
        return [a for part in numpy_pool.map(encode_to_numpy, chunks(texts, threads)) for a in part]

    def ours() -> int:
        return sum(len(data) for _, data in token_files(meta, map(tok.encode_arrays, text_batches(docs)), header))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name, data in token_files(meta, map(tok.encode_arrays, text_batches(docs)), header):
            (out / name).write_bytes(data)
        offline = OfflineSource({p.name: str(p) for p in out.iterdir()}, lambda u: Path(u).read_bytes())
        online = OnlineSource(mixed, tok.encode_arrays, tok.eot_id, batch=1024)
        cases = {
            BARE[0]: lambda: enc.encode_ordinary_batch(texts, num_threads=threads),
            BARE[1]: bare_numpy,
            OURS: ours,
            "loader.online": lambda: sum(1 for _ in sequences("online", seq_len=SEQ, online=online)),
            "loader.offline": lambda: sum(1 for _ in sequences("offline", seq_len=SEQ, offline=offline)),
        }
        names = list(cases)
        cpu = {name: [] for name in names}
        wall = {name: [] for name in names}
        for r in range(args.repeat):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated: no case always runs first
                w0, c0 = time.perf_counter(), time.process_time()
                cases[name]()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
    if numpy_pool is not None:
        numpy_pool.shutdown()

    base = min(BARE, key=lambda name: statistics.median(cpu[name]))
    results = {}
    for name in names:
        ratios = [b / t for b, t in zip(cpu[base], cpu[name])]
        rates = [tokens / t / 1e6 for t in cpu[name]]
        results[name] = {
            "cpu_s": round(statistics.median(cpu[name]), 3),
            "wall_s": round(statistics.median(wall[name]), 3),
            "mtok_per_s_per_core": round(tokens / statistics.median(cpu[name]) / 1e6, 3),
            "mtok_per_s_spread": [round(min(rates), 3), round(max(rates), 3)],
            "mb_per_s_per_core": round(mb / statistics.median(cpu[name]), 2),
            "ratio_to_baseline": round(statistics.median(cpu[base]) / statistics.median(cpu[name]), 3),
            "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)],
        }
    per_source = docs.group_by("source").agg(pl.len().alias("docs"), (pl.col("text").str.len_bytes().sum() / 1e6))
    print(
        f"{docs.height} documents, {mb:.1f} MB, {tokens:,} tokens of {corpus.height} documents "
        f"({corpus['text'].str.len_bytes().sum() / 1e6:.1f} MB), seed {args.seed}, cl100k_base, {threads} thread(s)"
    )
    print("  " + ", ".join(f"{s}: {d} docs {m:.1f} MB" for s, d, m in per_source.sort("source").iter_rows()))
    print(
        f"{'case':<28} {'CPU s':>7} {'wall s':>7} {'M tok/s/core':>13} {'spread':>13} {'MB/s/core':>10} {'x base':>7}"
    )
    for name, r in results.items():
        lo, hi = r["mtok_per_s_spread"]
        print(
            f"{name:<28} {r['cpu_s']:>7.3f} {r['wall_s']:>7.3f} {r['mtok_per_s_per_core']:>13.3f} "
            f"{f'{lo:.2f}-{hi:.2f}':>13} {r['mb_per_s_per_core']:>10.2f} {r['ratio_to_baseline']:>7.3f}"
        )
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "tokenize.json").write_text(
        json.dumps(
            {"mb": mb, "documents": docs.height, "tokens": tokens, "baseline": base, "results": results}, indent=1
        )
    )
    r, b = results[OURS], results[base]
    lo, hi = r["ratio_spread"]
    print(
        f"tokenize: tokenized core {r['mtok_per_s_per_core']:.2f} M tok/s vs bare {base.removeprefix('bare.')} "
        f"{b['mtok_per_s_per_core']:.2f} M tok/s per core: {r['ratio_to_baseline']:.2f}x "
        f"(median of {args.repeat} interleaved rounds, spread {lo:.2f}-{hi:.2f}x)"
    )


if __name__ == "__main__":
    main()
