"""`deduped`: filtered docs -> docs without exact or near duplicates; a cluster keeps its first document (row order).

Pure core (no Dagster, no I/O). Scope is the frame passed in (one partition); cross-partition dedup is a later step.

- Exact: blake2b-128 of the UTF-8 of the normalised text (NFKC, casefold, whitespace runs -> one space, stripped), so
  CRLF/trailing-space/tab and case variants are exact duplicates. hashlib + unicodedata are stable across polars and
  Python versions (polars' `.hash()` is not).
- Near: datasketch MinHash over word n-gram shingles + `MinHashLSH(params=(bands, rows))` (datatrove: 5-grams, 14x8,
  seed 1), union-find over LSH candidate pairs, each pair optionally verified with the exact Jaccard of the shingle-hash
  sets (`threshold`). Words are the `\\w+` runs of the NFKC-normalised, case-folded text (datatrove's `simplify_text`
  also drops punctuation); a text with fewer than `ngram` words has one shingle, its whole word sequence; a text without
  words is never a near duplicate. Union-find chains: a cluster member may be similar only to another member.
- Hash scheme (pinned in `DedupParams.hashfunc`, "sha1w64_fmix64_fold"): a word's hash is the first 8 bytes
  (little-endian) of SHA-1 over its UTF-8 (cached per call); a shingle's 64-bit hash folds its words' hashes in order,
  h = w0, h = fmix64(h * 0x9E3779B97F4A7C15 + w_k) (uint64 wrap-around, MurmurHash3 fmix64). Only numpy arithmetic
  runs per shingle: hashing the books source took 3.9 s instead of 9.1 s with SHA-1 over each joined shingle string.
  The low 32 bits are the MinHash input (`MinHash(num_perm, seed, hashfunc=int, scheme="affine32")`, the hashes being
  precomputed); the 64-bit values form the sets for the Jaccard check. Memory: 8 bytes per word and per distinct
  shingle; the text is tokenised in ~1 MiB segments, so a 16 MiB text never becomes millions of Python strings at once.
"""


import hashlib
import re
import unicodedata
from collections.abc import Iterator
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from datasketch import LeanMinHash, MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, model_validator

from curation_assets._dagster import drop_rate_result, drop_rate_spec, enforce_transfers, pod, source_partitions
from curation_assets.frames import StepOutput, mark_dropped, split_kept, stable_id
from resources.cost_guard import CostGuard

_WORD = re.compile(r"\w+")
_NON_WORD = re.compile(r"\W")
_SEGMENT = 1 << 20  # chars tokenised at once
_BATCH = 1 << 16  # shingles per MinHash.update_batch call: bounds its (batch x num_perm) temporary to ~29 MB
_CACHE_MAX = 1 << 21  # word-hash cache entries before it is cleared
_LOW32 = np.uint64(0xFFFFFFFF)
_FOLD = np.uint64(0x9E3779B97F4A7C15)
_FMIX = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))


class DedupParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exact: bool = True
    normalize: bool = True  # NFKC + casefold (+ whitespace collapse for the exact key); False = raw text
    near: bool = True
    # datatrove MinhashConfig defaults: word 5-grams, 14 buckets x 8 hashes = 112 permutations, seed 1 (≈0.72 Jaccard).
    num_perm: int = 112
    bands: int = 14
    rows: int = 8
    ngram: int = 5
    seed: int = 1
    # Verified Jaccard of the shingle sets for LSH candidate pairs (NeMo Curator's optional check uses 0.8); None trusts
    # LSH alone (datatrove behaviour, which admits pairs down to ~0.6 with 14x8).
    threshold: float | None = 0.8
    # Pinned hash scheme; changing either changes signatures, so it is part of the config version.
    hashfunc: Literal["sha1w64_fmix64_fold"] = "sha1w64_fmix64_fold"
    scheme: Literal["affine32"] = "affine32"

    @model_validator(mode="after")
    def _check_bands(self) -> "DedupParams":
        if self.bands < 2 or self.bands * self.rows > self.num_perm:
            raise ValueError(f"need bands >= 2, bands * rows <= num_perm: {self.bands}x{self.rows}/{self.num_perm}")
        return self

    @property
    def version(self) -> str:
        return stable_id(self.model_dump_json())[:12]


def normalize_text(text: str, params: DedupParams) -> str:
    return unicodedata.normalize("NFKC", text).casefold() if params.normalize else text


def exact_key(normalized: str, params: DedupParams) -> bytes:
    key = " ".join(normalized.split()) if params.normalize else normalized
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def _segments(text: str) -> Iterator[str]:
    """~`_SEGMENT`-char pieces of `text`, each cut just after a non-word char so that no `\\w+` run is split."""
    start = 0
    while start < len(text):
        cut = _NON_WORD.search(text, start + _SEGMENT) if start + _SEGMENT < len(text) else None
        end = cut.end() if cut else len(text)
        yield text[start:end]
        start = end


def word_hashes(normalized: str, cache: dict[str, int]) -> np.ndarray:
    """64-bit hash of every `\\w+` word, in order: first 8 bytes of SHA-1 over its UTF-8, little-endian."""
    parts = []
    for segment in _segments(normalized):
        words = _WORD.findall(segment)
        for word in set(words).difference(cache):
            cache[word] = int.from_bytes(hashlib.sha1(word.encode()).digest()[:8], "little")
        parts.append(np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words)))
    if len(cache) > _CACHE_MAX:
        cache.clear()
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _fmix64(h: np.ndarray) -> np.ndarray:
    shift, m1, m2 = _FMIX
    h = (h ^ (h >> shift)) * m1
    h = (h ^ (h >> shift)) * m2
    return h ^ (h >> shift)


def shingle_hashes(words: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct fold hashes of the word n-grams; fewer than n words -> one shingle of all of them."""
    if words.size == 0:
        return words
    count, width = max(words.size - n + 1, 1), min(n, words.size)
    h = words[:count].copy()
    for k in range(1, width):
        h = _fmix64(h * _FOLD + words[k : k + count])
    return np.unique(h)


def signature(hashes: np.ndarray, template: MinHash) -> LeanMinHash:
    m = template.copy()
    for start in range(0, len(hashes), _BATCH):
        m.update_batch((hashes[start : start + _BATCH] & _LOW32).tolist())  # hashfunc=int: already hashed
    return LeanMinHash(m)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def _clusters(texts: pl.Series, params: DedupParams) -> tuple[list[bool], list[int]]:
    """One pass in row order: (is exact duplicate, cluster root = first row of the cluster) per row.

    Exact duplicates join their first copy's cluster and skip MinHash. The others are queried against the LSH of earlier
    rows, then inserted; candidate pairs (verified if `threshold`) are merged by union-find, the smaller row as root.
    """
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    template = MinHash(num_perm=params.num_perm, seed=params.seed, hashfunc=int, scheme=params.scheme)
    lsh = MinHashLSH(num_perm=params.num_perm, params=(params.bands, params.rows))
    first: dict[bytes, int] = {}
    sets: dict[int, np.ndarray] = {}
    cache: dict[str, int] = {}
    is_exact = [False] * len(texts)
    for i, text in enumerate(texts):
        normalized = normalize_text(text, params)
        if params.exact and (rep := first.setdefault(exact_key(normalized, params), i)) != i:
            is_exact[i], parent[i] = True, rep
            continue
        if not params.near:
            continue
        hashes = shingle_hashes(word_hashes(normalized, cache), params.ngram)
        if hashes.size == 0:
            continue
        sig = signature(hashes, template)
        for cand in lsh.query(sig):
            ri, rc = find(i), find(cand)
            if ri != rc and (params.threshold is None or _jaccard(hashes, sets[cand]) >= params.threshold):
                parent[max(ri, rc)] = min(ri, rc)
        lsh.insert(i, sig, check_duplication=False)
        if params.threshold is not None:
            sets[i] = hashes
    return is_exact, [find(i) for i in range(len(texts))]


def dedup_docs(docs: pl.DataFrame, params: DedupParams) -> pl.DataFrame:
    """Return `docs` + `dup_cluster` + `drop_reason` (null = kept). Requires `doc_id`, `text`.

    `dup_cluster` is the `doc_id` of the kept representative (the cluster's first row) for every member of a cluster of
    two or more, the representative included; null for unique docs. Reasons: `exact_duplicate`, `near_duplicate`.
    """
    is_exact, final = _clusters(docs.get_column("text").fill_null(""), params)
    sizes = np.bincount(np.asarray(final, dtype=np.int64), minlength=docs.height)
    ids = docs.get_column("doc_id").to_list()
    marked = docs.with_columns(
        pl.Series("dup_cluster", [ids[r] if sizes[r] > 1 else None for r in final], dtype=pl.String),
        pl.Series("_exact", is_exact, dtype=pl.Boolean),
        pl.Series("_near", [r != i for i, r in enumerate(final)], dtype=pl.Boolean),
    )
    rules = {"exact_duplicate": pl.col("_exact"), "near_duplicate": pl.col("_near")}
    return mark_dropped(marked, rules).drop("_exact", "_near")


# --- asset wrapper (added by lead) ---
def build(cfg, version: str) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=source_partitions, code_version=version, op_tags=pod("1", "8Gi"), group_name="curation",
              check_specs=[drop_rate_spec("deduped")])
    def deduped(context: dg.AssetExecutionContext, filtered: pl.LazyFrame, cost_guard: CostGuard):
        """Filtered documents without exact and near duplicates (the first of each cluster is kept); dropped rows
        name their kept representative in `dup_cluster`."""
        docs = filtered.collect()
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        params = DedupParams(**cfg.thresholds.deduped.for_source(context.partition_key))
        kept, dropped = split_kept(dedup_docs(docs, params))
        out = StepOutput(kept=kept.drop("dup_cluster"), dropped=dropped, rows_in=docs.height,
                         bytes_in=docs.estimated_size(), config_version=version,
                         extra={"clusters": kept["dup_cluster"].drop_nulls().n_unique(), **transfer})
        yield dg.Output(out)
        yield drop_rate_result(out, cfg.thresholds.deduped.max_drop_rate)

    return deduped
