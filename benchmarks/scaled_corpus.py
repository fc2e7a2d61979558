"""Scaled dedup benchmark corpus (issue 16): the shared corpus's dedup input at 1x to 64x, cached outside the repo.

Usage: python benchmarks/scaled_corpus.py 1 4 16 64 [--corpus ../shared/corpus] [--cache DIR]

Scale s = replicas 0..s-1 of the base corpus (all four sources, web pages already extracted to text). Replica 0 is
the base unchanged; replica r >= 1 has `doc_id` `f"{doc_id}-r{r}"` and its text NFKC-normalised with every `\\w+`
word suffixed with the replica's tag: one letter of a script absent from the corpus (Thaana, then NKo: 2 UTF-8 bytes,
no case, NFKC-stable, `\\w` for Python `re` and polars). The suffix keeps every word one word and the word sequence
as it was, so within a replica each planted pair keeps its word-5-gram Jaccard (the truth is replicated unchanged),
while no word, hence no shingle, is shared between replicas (`w + tag(r1) == w' + tag(r2)` needs r1 == r2, and no
base word holds a tag letter): replicas are not near-duplicates of one another and the duplicate rate stays that of
the base. Replicas have the base's words and shingles but 2 bytes more text per word (+24 % on this corpus). Scales
up to `len(TAGS) + 1` = 72. NFKC first because dedup tokenises NFKC-normalised, case-folded text (`core/minhash.py`):
², ™, ´ or ㊙ are not `\\w` until NFKC makes them words, and a word the tag did not follow would be in every replica.
Dedup sees the same text either way; only the raw form of such characters differs from the base (case is kept).

Layout under `cache` (default `$CURATION_BENCH_CACHE/dedup-scale`, else `~/.cache/curation-bench/dedup-scale`):
  base/docs.parquet             `doc_id, source, text` of the 1x corpus, sorted source files in order
  x{s}/shard-NNNNN.parquet      `doc_id, source, text`, `shard_docs` rows each (the last shorter), zstd; replica-major
  x{s}/truth.csv                planted.csv's rows per replica, `copy_id`/`original_id` suffixed like the doc_ids
  {base,x{s}}/done.json         written last; a directory is built under a temp name and renamed into place, so a
                                directory without its marker (an interrupted build) never exists under its own name
A marker records a digest of the corpus manifest, the tags and VERSION: a cache built otherwise is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"  # ../shared/corpus beside the repository
DEFAULT_CACHE = Path(os.environ.get("CURATION_BENCH_CACHE", Path.home() / ".cache" / "curation-bench")) / "dedup-scale"
SOURCES = ("books", "code", "multilingual", "web")  # sorted: the base order is the sorted source files
# Thaana and NKo letters (Lo): one code point per replica, so no tag ends another tag.
TAGS = "".join(map(chr, [*range(0x0780, 0x07A6), *range(0x07CA, 0x07EB)]))
VERSION = 2  # of the replica transform, part of the cache key: a change rebuilds cached corpora
SCHEMA = {"doc_id": pl.String, "source": pl.String, "text": pl.String}


def tag(replica: int) -> str:
    """The word suffix of replica `replica` >= 1."""
    if not 1 <= replica <= len(TAGS):
        raise ValueError(f"replica must be in [1, {len(TAGS)}]: {replica}")
    return TAGS[replica - 1]


def replica(docs: pl.DataFrame, r: int) -> pl.DataFrame:
    """`docs` (`doc_id, source, text`) as replica `r`: unchanged for 0, else suffixed ids and tagged words (pass NFKC
    text for r >= 1)."""
    if r == 0:
        return docs
    return docs.with_columns(
        doc_id=pl.col("doc_id") + f"-r{r}", text=pl.col("text").str.replace_all(r"\w+", "${0}" + tag(r))
    )


def _cache_key(corpus: Path) -> str:
    """Of the corpus manifest, the tags and the transform: a cache built from another corpus or otherwise is rebuilt."""
    return hashlib.sha256((corpus / "manifest.json").read_bytes() + f"{TAGS}{VERSION}".encode()).hexdigest()[:16]


def _cached(out: Path, key: str) -> dict | None:
    marker = out / "done.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("key") == key:
            return done
    return None


def _publish(tmp: Path, out: Path, done: dict) -> None:
    """Write the marker last, then swap `tmp` in for `out` (a stale `out`, built otherwise, is removed first)."""
    (tmp / "done.json").write_text(json.dumps(done, indent=1) + "\n")
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def base(corpus: Path = CORPUS, cache: Path = DEFAULT_CACHE) -> Path:
    """The 1x corpus as one Parquet file `doc_id, source, text` (web HTML extracted once: the slow part)."""
    out, key = cache / "base", _cache_key(corpus)
    if _cached(out, key):
        return out / "docs.parquet"
    sys.path.insert(0, str(ROOT))
    from benchmarks.dedup_eval import read_shard, source_shards

    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=cache))
    try:
        t0 = time.perf_counter()
        frames = [
            frame.select(pl.col(c).cast(t) for c, t in SCHEMA.items())
            for source in SOURCES
            for path in source_shards(corpus, source)
            for frame in read_shard(path, html=source == "web")
        ]
        docs = pl.concat(frames)
        if docs["text"].str.contains(f"[{TAGS}]").any():
            raise ValueError("the corpus uses a replica tag letter: replicas could share words")
        docs.write_parquet(tmp / "docs.parquet", compression="zstd")
        text_bytes = int(docs["text"].str.len_bytes().sum())
        done = {"docs": docs.height, "text_bytes": text_bytes, "seconds": round(time.perf_counter() - t0, 1)}
        _publish(tmp, out, {**done, "corpus": str(corpus), "key": key})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "docs.parquet"


def build(
    scale: int, corpus: Path = CORPUS, cache: Path = DEFAULT_CACHE, shard_docs: int = 20_000
) -> tuple[list[Path], Path]:
    """(Parquet shards `doc_id, source, text` of the scaled corpus, in a fixed order; its truth CSV)."""
    out, key = cache / f"x{scale}", _cache_key(corpus)
    done = _cached(out, key)
    if not 1 <= scale <= len(TAGS) + 1:
        raise ValueError(f"scale must be in [1, {len(TAGS) + 1}]: {scale}")
    if not (done and done.get("shard_docs") == shard_docs):
        t0 = time.perf_counter()
        docs = pl.read_parquet(base(corpus, cache))
        nfkc = docs.with_columns(pl.Series("text", [unicodedata.normalize("NFKC", t) for t in docs["text"]], pl.String))
        tmp = Path(tempfile.mkdtemp(prefix=f".x{scale}-", dir=cache))
        try:
            total, text_bytes, n = scale * docs.height, 0, 0
            # Global rows [start, start + shard_docs) of the replica-major order, one shard in memory at a time.
            for n, start in enumerate(range(0, total, shard_docs)):
                end, parts = min(start + shard_docs, total), []
                for r in range(start // docs.height, (end - 1) // docs.height + 1):
                    lo, hi = max(start - r * docs.height, 0), min(end - r * docs.height, docs.height)
                    parts.append(replica((nfkc if r else docs).slice(lo, hi - lo), r))
                shard = pl.concat(parts)
                text_bytes += int(shard["text"].str.len_bytes().sum())
                shard.write_parquet(tmp / f"shard-{n:05d}.parquet", compression="zstd")
            # All columns as strings: the truth keeps planted.csv's exact format (e.g. "1.000000").
            planted = pl.read_csv(corpus / "truth" / "planted.csv", infer_schema=False)
            ids = ("copy_id", "original_id")
            pl.concat(
                [planted] + [planted.with_columns(pl.col(c) + f"-r{r}" for c in ids) for r in range(1, scale)]
            ).write_csv(tmp / "truth.csv")
            done = {
                "scale": scale,
                "docs": total,
                "text_bytes": text_bytes,
                "shards": n + 1,
                "shard_docs": shard_docs,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            _publish(tmp, out, {**done, "corpus": str(corpus), "key": key})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / f"shard-{i:05d}.parquet" for i in range(done["shards"])], out / "truth.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scales", nargs="+", type=int)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--shard-docs", type=int, default=20_000)
    args = ap.parse_args()
    for scale in args.scales:
        t0 = time.perf_counter()
        shards, _ = build(scale, args.corpus, args.cache, args.shard_docs)
        done = json.loads((shards[0].parent / "done.json").read_text())
        print(
            f"x{scale}: {done['docs']:,} docs, {done['text_bytes'] / 1e6:,.1f} MB text, {len(shards)} shards, "
            f"{time.perf_counter() - t0:.1f} s ({shards[0].parent})",
            flush=True,
        )


if __name__ == "__main__":
    main()
