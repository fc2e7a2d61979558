"""Benchmark decontamination: documents that share a long word n-gram with an evaluation set (pure numpy/polars: no
Dagster, no I/O).

An n-gram is `ngram` consecutive words of the normalised text; 13 by default, as GPT-3 (Brown et al. 2020, appendix
C: 13-grams, after lower-casing and splitting off punctuation) and Dolma's decontamination (13-grams) use. The words
and their hashes are dedup's (`core/minhash.py`, scheme `poly64_fmix64_fold`): the `\\w+` runs of the NFKC-normalised,
case-folded text, each n-gram a 64-bit fold of its words' hashes, computed in numpy over a whole batch. A text of
fewer than `ngram` words has no n-gram: it cannot contaminate, nor be matched.

1. `index_items(items, n)`: per eval item its word count and the sorted set of its n-gram hashes (what the
   `decontam_index` asset stores, one row per item);
2. `Index.of(rows)`: every (hash, eval set) pair of those rows in one sorted array (sets in the rows' order);
3. `match(texts, index)` / `mark_contaminated(docs, index)`: each document's n-gram hashes looked up by binary search
   (`np.searchsorted`), the first matching n-gram by position reported with its eval set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_assets.core.dedup import batches
from curation_assets.core.frames import DROP_REASON
from curation_assets.core.minhash import HASH_SCHEME, normalize, shingle_hashes, word_hashes

CONTAMINATED = "contaminated"
WORD = r"\w+"  # dedup's word: the pattern `word_hashes` extracts (Rust regex, Unicode)
INDEX_SCHEMA = {
    "eval_set": pl.String,
    "file": pl.String,
    "item": pl.Int64,
    "ngram": pl.Int64,  # n of the n-grams: the matcher takes it from the index, never from a config that may differ
    "n_words": pl.Int64,
    "hashes": pl.List(pl.UInt64),
}
MATCH_SCHEMA = {"eval_set": pl.String, "eval_ngram": pl.String}


class EvalSet(BaseModel):
    """One evaluation set: JSONL (.jsonl, .jsonl.gz, .jsonl.zst) or Parquet files, the text of each item in
    `text_field`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    paths: list[str] = Field(min_length=1)  # files or globs; relative ones against the thresholds file's directory
    text_field: str = "text"


class DecontamParams(BaseModel):
    """`decontam_index` (thresholds.yaml): the eval sets, the n-gram length and the blocking check's floor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eval_sets: list[EvalSet] = []
    ngram: int = Field(default=13, ge=1)
    # eval_sets_indexed (blocking): each set indexes at least this many items (a wrong text_field indexes none)
    min_items: int = Field(default=1, ge=0)
    hashfunc: Literal["poly64_fmix64_fold"] = HASH_SCHEME  # pinned (dedup's words and n-gram fold)

    @model_validator(mode="after")
    def _unique(self) -> DecontamParams:
        names = [s.name for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"eval set names must be unique: {names}")
        return self


def ngram_hashes(normalized: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hash of every word n-gram, index of its text, position of its first word, word count of every text) of
    `normalize`d texts; the n-grams of a text are contiguous and in position order; a text of fewer than `n` words
    has none."""
    words, counts = word_hashes(normalized)
    hashes, owner = shingle_hashes(words, counts, n)
    per_text = np.maximum(counts - n + 1, 0)
    full = per_text[owner] > 0  # shingle_hashes gives a shorter text one shingle of all its words: not an n-gram
    hashes, owner = hashes[full], owner[full]
    position = np.arange(owner.size) - np.repeat(np.cumsum(per_text) - per_text, per_text)
    return hashes, owner, position, counts


def index_items(items: pl.DataFrame, n: int) -> pl.DataFrame:
    """`items` (`eval_set, file, item, text`) -> INDEX_SCHEMA: per item its word count and the sorted, distinct hashes
    of its n-grams (empty for an item of fewer than `n` words)."""
    hashes, owner, _, counts = ngram_hashes([normalize(t or "") for t in items.get_column("text")], n)
    pairs = pl.DataFrame({"row": owner.astype(np.int64), "hash": pl.Series(hashes, dtype=pl.UInt64)})
    per_item = pairs.group_by("row").agg(pl.col("hash").unique().sort().alias("hashes"))
    return (
        items.with_row_index("row")
        .with_columns(row=pl.col("row").cast(pl.Int64), ngram=pl.lit(n, pl.Int64), n_words=pl.Series(counts))
        .join(per_item, on="row", how="left", maintain_order="left")
        .with_columns(pl.col("hashes").fill_null(pl.lit([], pl.List(pl.UInt64))))
        .select(list(INDEX_SCHEMA))
        .cast(INDEX_SCHEMA)
    )


@dataclass(frozen=True)
class Index:
    """Every (n-gram hash, eval set) pair, sorted by hash then by the sets' config order; `n` the n-gram length."""

    hashes: np.ndarray  # uint64, sorted
    sets: np.ndarray  # int64: position in `names`
    names: tuple[str, ...]
    n: int

    @classmethod
    def of(cls, rows: pl.DataFrame) -> Index:
        """The index of `decontam_index` rows (INDEX_SCHEMA, the eval sets in config order: a hash in several sets is
        reported in the first). No rows: an empty index, which matches nothing."""
        if not rows.height:
            return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), (), 0)
        ngram = rows.get_column("ngram").unique()
        if ngram.len() != 1:
            raise ValueError(f"an index mixes n-gram lengths {ngram.to_list()}: rebuild decontam_index")
        names = rows.get_column("eval_set").unique(maintain_order=True).to_list()
        pairs = (
            rows.select(set=pl.col("eval_set").replace_strict(names, range(len(names)), return_dtype=pl.Int64))
            .with_columns(hash=rows.get_column("hashes"))
            .explode("hash")
            .drop_nulls("hash")
            .unique()
            .sort("hash", "set")
        )
        return cls(
            hashes=pairs.get_column("hash").to_numpy().astype(np.uint64),
            sets=pairs.get_column("set").to_numpy().astype(np.int64),
            names=tuple(names),
            n=int(ngram.item()),
        )

    def __len__(self) -> int:
        return int(self.hashes.size)


def match(texts: list[str], index: Index) -> pl.DataFrame:
    """MATCH_SCHEMA, one row per text: the eval set and the text (normalised words joined by a space) of the text's
    first n-gram, by position, that the index holds; nulls for a clean text."""
    out = {k: [None] * len(texts) for k in MATCH_SCHEMA}
    if not len(index) or not texts:
        return pl.DataFrame(out, schema=MATCH_SCHEMA)
    normalized = [normalize(t or "") for t in texts]
    hashes, owner, position, _ = ngram_hashes(normalized, index.n)
    at = np.minimum(np.searchsorted(index.hashes, hashes), len(index) - 1)
    hit = np.flatnonzero(index.hashes[at] == hashes)
    docs, first = np.unique(owner[hit], return_index=True)  # n-grams are in text then position order
    if docs.size:
        words = pl.Series([normalized[d] for d in docs], dtype=pl.String).str.extract_all(WORD)
        starts = position[hit[first]]
        for d, s, w, k in zip(docs, starts, words.to_list(), index.sets[at[hit[first]]]):
            out["eval_set"][d] = index.names[k]
            out["eval_ngram"][d] = " ".join(w[s : s + index.n])
    return pl.DataFrame(out, schema=MATCH_SCHEMA)


def mark_contaminated(docs: pl.DataFrame, index: Index, batch_bytes: int = 8 << 20) -> pl.DataFrame:
    """`docs` (`text`, `drop_reason`) + `eval_set`, `eval_ngram` (see `match`): a document not dropped yet that
    shares an n-gram with the index gets `drop_reason` `contaminated`. Matched in batches of about `batch_bytes` of
    text (memory bounded by the batch, not the partition)."""
    open_ = docs.with_row_index("_row").filter(pl.col(DROP_REASON).is_null()).select("_row", "text")
    found = [
        pl.concat([batch.select("_row"), match(batch.get_column("text").to_list(), index)], how="horizontal")
        for batch in (batches(open_, batch_bytes) if len(index) else [])
    ]
    hits = (
        pl.concat(found).drop_nulls("eval_set") if found else pl.DataFrame(schema={"_row": pl.UInt32, **MATCH_SCHEMA})
    )
    return (
        docs.with_row_index("_row")
        .join(hits, on="_row", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("eval_set").is_not_null())
            .then(pl.lit(CONTAMINATED))
            .otherwise(pl.col(DROP_REASON))
            .alias(DROP_REASON)
        )
        .drop("_row")
    )
