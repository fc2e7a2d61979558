"""Line-level boilerplate removal across the documents of a source: CCNet's line dedup (Wenzek et al. 2020:
lines are normalised and hashed, and the lines whose hash recurs across the shard's documents are removed) and
Dolma's paragraph dedup (Soldaini et al. 2024). A licence footer, a mirror notice or a cookie banner is the same
line in many documents; removed before MinHash, it can no longer make two unrelated short texts look alike.

Pure polars/numpy (no Dagster, no I/O), in three stages:

1. `line_doc_counts(texts, min_chars)`, per batch: the document frequency of every counted line hash of the batch
   (`hash` UInt64, `docs` UInt32; a line counts once per document).
2. `DocFrequency`, in `annotated`'s driver: the batches' counts merged, stored as its `line_counts` side table.
   Memory: a bitmap of the hashes seen once (8 bits per possible counted line, i.e. about text bytes / `min_chars`
   bytes rounded up to a power of two: 4 MiB for 59 MB of text; at most 2^32 bits = 512 MiB) plus an exact table of
   the hashes seen in two or more documents only (12 bytes each; 7,894 for the shared corpus's web), never one row
   per distinct line. A bitmap collision counts a line's first document twice (a line in exactly `min_docs - 1`
   documents is then removed too): the bitmap is at most 1/8 full, so at worst 1 in 8 new lines collide (every line
   exactly `min_chars` long), far fewer in practice. `frequent_lines(counts, min_docs)` returns the hashes in at
   least `min_docs` documents.
3. `remove_lines(docs, frequent, min_chars)`, per kept batch: the documents without those lines, + `boilerplate_lines`
   and `boilerplate_bytes` (what was removed, UTF-8 bytes including the newlines); `strip_kept` drops a document
   left without text (`boilerplate_only`) and `settle_ledger` writes both into filtered's decision ledger.

A line is normalised as CCNet's `normalize_for_dedup` does, a little more broadly: lower-cased, every digit -> 0,
Unicode punctuation and control/format characters removed, and also accents stripped (NFKD, combining marks
dropped; Turkish dotless i folded to i) and whitespace runs collapsed, so a line that differs only in case keeps one
hash (a Turkish man page in upper case turns `ı` into `I` and back into `i`: measured, that lost a planted pair).
Its hash is the project's `seeded_hash` (the first 64 bits of sha256), stable across machines and library versions.
Lines shorter than `min_chars` after normalisation (blank lines, `}`, `else:`, a lone heading number) are never
counted or removed.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from curation_assets.core.frames import DROP_REASON, seeded_hash_expr, split_kept

COUNT_SCHEMA = {"hash": pl.UInt64, "docs": pl.UInt32}
REMOVED_SCHEMA = {"boilerplate_lines": pl.UInt32, "boilerplate_bytes": pl.Int64, DROP_REASON: pl.String}
BOILERPLATE_ONLY = "boilerplate_only"
_MAX_BITS = 32


def normalized_line(line: pl.Expr) -> pl.Expr:
    """CCNet's `normalize_for_dedup` (lower case, digits -> 0, no punctuation or control characters), + no accents
    (NFKD without combining marks, `ı` -> `i`) and whitespace runs collapsed (CCNet strips the ends only)."""
    return (
        line.str.to_lowercase()
        .str.normalize("NFKD")
        .str.replace_all(r"\p{Mn}", "")
        .str.replace_all("ı", "i", literal=True)
        .str.replace_all(r"\d", "0")
        .str.replace_all(r"[\p{P}\p{Cc}\p{Cf}]", "")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def _lines(texts: pl.Series) -> pl.DataFrame:
    """One row per line of every text: `doc` (row index), `line` (the line as stored), `norm`."""
    return (
        pl.DataFrame({"text": texts.cast(pl.String).fill_null("")})
        .with_row_index("doc")
        .select("doc", pl.col("text").str.split("\n").alias("line"))
        .explode("line")
        .with_columns(normalized_line(pl.col("line")).alias("norm"))
    )


def _hashed(lines: pl.DataFrame, min_chars: int) -> pl.DataFrame:
    """`lines` + `hash` (null for a line too short to count); each distinct normalised line is hashed once."""
    counted = pl.col("norm").str.len_chars() >= min_chars
    distinct = lines.filter(counted).select(pl.col("norm").unique())
    hashes = distinct.with_columns(seeded_hash_expr(pl.col("norm")).alias("hash"))
    return lines.join(hashes, on="norm", how="left", maintain_order="left")


def line_doc_counts(texts: pl.Series, min_chars: int) -> pl.DataFrame:
    """`hash`, `docs`: in how many of `texts` each counted line hash occurs (once per text), sorted by hash."""
    lines = _hashed(_lines(texts), min_chars).filter(pl.col("hash").is_not_null())
    return (
        lines.select("doc", "hash")
        .unique()
        .group_by("hash")
        .agg(pl.len().cast(pl.UInt32).alias("docs"))
        .sort("hash")
        .cast(COUNT_SCHEMA)
    )


class DocFrequency:
    """The document frequency of every line hash of a source, merged batch by batch (see the module docstring for
    the memory bound). `text_bytes` (the source's text, known before the first batch) sizes the bitmap."""

    def __init__(self, text_bytes: int, min_chars: int):
        lines = max(text_bytes // max(min_chars, 1), 1)  # at most this many distinct counted lines
        self._bits = min(max(int(8 * lines - 1).bit_length(), 16), _MAX_BITS)
        self._seen = np.zeros(1 << (self._bits - 3), np.uint8)
        self._repeats = pl.DataFrame(schema=COUNT_SCHEMA)  # hash -> documents beyond the first
        self._pending: list[pl.DataFrame] = []

    def add(self, counts: pl.DataFrame) -> None:
        """Merge one batch's `line_doc_counts`."""
        h = counts["hash"].to_numpy()
        docs = counts["docs"].to_numpy().astype(np.int64)
        slot = h >> np.uint64(64 - self._bits)
        byte, bit = (slot >> np.uint64(3)).astype(np.int64), (1 << (slot & np.uint64(7))).astype(np.uint8)
        seen = (self._seen[byte] & bit) != 0
        np.bitwise_or.at(self._seen, byte, bit)
        extra = docs - ~seen  # documents beyond the line's first ever
        repeated = extra > 0
        if repeated.any():
            self._pending.append(pl.DataFrame({"hash": h[repeated], "docs": extra[repeated]}, schema=COUNT_SCHEMA))
        if len(self._pending) >= 64:
            self._merge()

    def _merge(self) -> None:
        if self._pending:
            merged = pl.concat([self._repeats, *self._pending]).group_by("hash").agg(pl.col("docs").sum())
            self._repeats, self._pending = merged.cast(COUNT_SCHEMA), []

    def counts(self) -> pl.DataFrame:
        """`hash`, `docs` of every line hash seen in two or more documents, sorted by hash."""
        self._merge()
        return self._repeats.select("hash", pl.col("docs") + 1).sort("hash")


def frequent_lines(counts: pl.DataFrame, min_docs: int) -> pl.Series:
    """The line hashes of `DocFrequency.counts` in at least `min_docs` documents (`min_docs` >= 2)."""
    return counts.filter(pl.col("docs") >= min_docs)["hash"]


def remove_lines(docs: pl.DataFrame, frequent: pl.Series, min_chars: int) -> pl.DataFrame:
    """`docs` with every line whose hash is in `frequent` removed from `text` (with its newline), + `boilerplate_lines`
    (UInt32) and `boilerplate_bytes` (Int64, UTF-8) removed per document. A document with nothing to remove keeps its
    text byte for byte."""
    lines = _hashed(_lines(docs["text"]), min_chars)
    lines = lines.with_columns(pl.col("hash").is_in(frequent.implode()).fill_null(False).alias("gone"))
    per_doc = (
        lines.group_by("doc")
        .agg(
            pl.col("line").filter(~pl.col("gone")).str.join("\n").alias("kept"),
            pl.col("gone").sum().cast(pl.UInt32).alias("boilerplate_lines"),
        )
        .sort("doc")
    )
    removed = per_doc["boilerplate_lines"]
    text = pl.select(pl.when(removed > 0).then(per_doc["kept"]).otherwise(docs["text"])).to_series()
    lost = docs["text"].fill_null("").str.len_bytes().cast(pl.Int64) - text.fill_null("").str.len_bytes()
    return docs.with_columns(text.alias("text"), removed, lost.alias("boilerplate_bytes"))


def strip_kept(
    kept: pl.DataFrame, frequent: pl.Series, min_chars: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """`remove_lines` on a batch's kept documents -> (the documents that still have text, stripped of boilerplate;
    the documents left with nothing but whitespace, with `drop_reason` `boilerplate_only`; the removal per input
    row: `boilerplate_lines`, `boilerplate_bytes`, `drop_reason`)."""
    stripped = remove_lines(kept, frequent, min_chars)
    changed = stripped["boilerplate_lines"] > 0
    empty = changed & (stripped["text"].fill_null("").str.strip_chars() == "")
    stripped = stripped.with_columns(pl.when(empty).then(pl.lit(BOILERPLATE_ONLY)).alias(DROP_REASON))
    keep, gone = split_kept(stripped.drop("boilerplate_lines", "boilerplate_bytes"))
    return keep, gone, stripped.select(list(REMOVED_SCHEMA)).cast(REMOVED_SCHEMA)


def settle_ledger(ledger: pl.DataFrame, removals: list[pl.DataFrame] | None) -> pl.DataFrame:
    """Filtered's ledger + `boilerplate_lines`, `boilerplate_bytes` from `removals` (`strip_kept`'s per-row removals of
    the documents the ledger keeps, batch by batch in ledger order; null for the documents a rule dropped), and
    `kept`, `drop_reason` and `drop_value` (the lines removed) updated for the documents left with no text
    (`boilerplate_only`). `removals` None (removal off): the two columns, null, so every source's ledger has them."""
    if removals is None:
        return ledger.with_columns(
            pl.lit(None, REMOVED_SCHEMA[c]).alias(c) for c in ("boilerplate_lines", "boilerplate_bytes")
        )
    removed = pl.concat([pl.DataFrame(schema=REMOVED_SCHEMA), *(r.cast(REMOVED_SCHEMA) for r in removals)])
    alive = ledger["kept"].arg_true()
    if alive.len() != removed.height:
        raise ValueError(f"{removed.height} removal rows for {alive.len()} kept documents")
    cols = {c: pl.Series(c, [None] * ledger.height, t).scatter(alive, removed[c]) for c, t in REMOVED_SCHEMA.items()}
    reason = ledger[DROP_REASON].zip_with(ledger["kept"].not_(), cols[DROP_REASON])
    emptied = cols[DROP_REASON].is_not_null()
    value = ledger["drop_value"].zip_with(~emptied, cols["boilerplate_lines"].cast(pl.Float64))
    return ledger.with_columns(
        reason.alias(DROP_REASON),
        value.alias("drop_value"),
        reason.is_null().alias("kept"),
        cols["boilerplate_lines"],
        cols["boilerplate_bytes"],
    )
