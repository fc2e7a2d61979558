"""Tokens/s per core: the tokenized asset's core, the loader's two paths, and bare tiktoken, on the same text.

Usage: python benchmarks/bench_tokenize.py [--corpus ../shared/corpus] [--mb 8] [--threads 1 2] [--repeat 3]

Cases (same documents, same encoding `cl100k_base`, same thread count; the clock covers only the case):
- `bare.encode_ordinary_batch`: `enc.encode_ordinary_batch(texts, num_threads=T)` - the reference;
- `tokenized.tokenize_docs`: the asset's core - encode, append EOT, build the Megatron `.bin` bytes and `.idx` per
  shard (everything but writing files and the sha256 of the wrapper);
- `loader.online`: the on-the-fly path of the dial - encode and cut 2048-token sequences;
- `loader.offline`: the pre-tokenized path - read the shards (memory-mapped) and cut the same sequences.
Tokens/s per core = tokens / seconds / T. Runs are interleaved and the median of `--repeat` is reported, because a
shared machine's load drifts; the ratio to bare is computed per repeat, then the median taken.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl

from curation_assets.core.loader import OfflineSource, OnlineSource, sequences
from curation_assets.core.readers import detect_format, read_shard
from curation_assets.core.tokens import text_batches, tokenize_docs
from resources.tokenizer import TokenizerResource

SEQ = 2048


def load_texts(corpus: Path, mb: float) -> list[str]:
    files = sorted(p for d in ("web", "books", "code", "multilingual") for p in (corpus / "data" / d).glob("part-*"))
    if not files:
        files = sorted(p for p in (ROOT / "curation_assets" / "sample").glob("*/part-*"))
    texts, size = [], 0
    for p in files:
        with open(p, "rb") as f:
            for t in read_shard(f, fmt=detect_format(p.name), source="b", shard=p.name).docs["text"]:
                texts.append(t)
                size += len(t.encode())
                if size >= mb * 1e6:
                    return texts
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    texts = load_texts(Path(args.corpus), args.mb)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            tok = TokenizerResource(num_threads=threads)
            enc = tok.enc
            docs = pl.DataFrame({"text": texts})
            counts = tok.count_tokens(texts)
            mixed = docs.with_columns(pl.Series("n_tokens", counts, dtype=pl.Int64))
            tokens = sum(counts) + len(counts)  # with EOT

            # shards for the offline path, written once
            out, shards = Path(tmp) / f"t{threads}", []
            out.mkdir()
            for s in tokenize_docs(map(tok.encode_arrays, text_batches(docs)), tok.eot_id, tok.vocab_size, 1 << 24):
                (out / f"{s.name}.bin").write_bytes(s.data)
                shards.append({"name": s.name, "bin": f"{s.name}.bin", "tokens": int(s.lengths.sum())})
            (out / "manifest.json").write_text(json.dumps({"dtype": "<i4", "shards": shards}))
            offline = OfflineSource({p.name: str(p) for p in out.iterdir()}, lambda u: Path(u).read_bytes())

            cases = {
                "bare.encode_ordinary_batch": lambda: enc.encode_ordinary_batch(texts, num_threads=threads),
                "tokenized.tokenize_docs": lambda: sum(
                    len(s.data)
                    for s in tokenize_docs(
                        map(tok.encode_arrays, text_batches(docs)), tok.eot_id, tok.vocab_size, 1 << 24
                    )
                ),
                "loader.online": lambda: sum(
                    1
                    for _ in sequences(
                        "online", seq_len=SEQ, online=OnlineSource(mixed, tok.encode_arrays, tok.eot_id, batch=1024)
                    )
                ),
                "loader.offline": lambda: sum(1 for _ in sequences("offline", seq_len=SEQ, offline=offline)),
            }
            times = {name: [] for name in cases}
            for _ in range(args.repeat):
                for name, fn in cases.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            for name, ts in times.items():
                med = statistics.median(ts)
                ratio = statistics.median(b / t for b, t in zip(times["bare.encode_ordinary_batch"], ts))
                results[f"{name}@{threads}"] = {
                    "threads": threads,
                    "seconds": round(med, 3),
                    "tokens": tokens,
                    "tokens_per_s_per_core": round(tokens / med / threads),
                    "mb_per_s_per_core": round(mb / med / threads, 2),
                    "ratio_to_bare": round(ratio, 3),
                }
    print(f"{len(texts)} documents, {mb:.1f} MB, cl100k_base")
    print(f"{'case':<34} {'s (median)':>10} {'tok/s/core':>12} {'MB/s/core':>10} {'x bare':>7}")
    for name, r in results.items():
        print(
            f"{name:<34} {r['seconds']:>10.3f} {r['tokens_per_s_per_core']:>12,} {r['mb_per_s_per_core']:>10} "
            f"{r['ratio_to_bare']:>7}"
        )
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "tokenize.json").write_text(json.dumps({"mb": mb, "results": results}, indent=1))


if __name__ == "__main__":
    main()
