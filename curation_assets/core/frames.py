"""Column contracts shared by every step, the one place that marks, splits and counts dropped rows, and the one
Parquet encoding of every output (page checksums written and verified).

Pure polars/pyarrow over in-memory buffers: no Dagster, no I/O.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import polars as pl
import pyarrow.parquet as pq

# Canonical document row. `meta` is a JSON object serialised as a string, so heterogeneous per-source keys
# never force a schema union across shards.
DOC_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String(),
    "source": pl.String(),
    "text": pl.String(),
    "url": pl.String(),
    "shard": pl.String(),
    "meta": pl.String(),
}

# A record or file that could not become a document. `location` is `line:N` (1-based), `row:N` (0-based,
# Parquet), `record:N` (1-based WARC response record), `frame:N` or `file`. `records_lost`: the records the row
# stands for (1 for a record; for a frame, row group or file the records it held, counted where the container says,
# else estimated from the shard's or source's records per byte; null only before raw's estimate). `bytes_lost`: the
# stored input bytes the row stands for when it is a frame, row group or file (0 for a single record, whose bytes
# are inside a readable stream): a corrupt frame that held half a source is half its bytes, not one record.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "shard": pl.String(),
    "location": pl.String(),
    "drop_reason": pl.String(),
    "detail": pl.String(),
    "record_id": pl.String(),
    "records_lost": pl.Int64(),
    "bytes_lost": pl.Int64(),
}

DROP_REASON = "drop_reason"


def empty_frame(schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))


def stable_id(*parts: object) -> str:
    """A 32-hex-digit id that depends only on `parts` (blake2b-128 over their unit-separated text)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def seeded_hash(key: str) -> int:
    """The first 64 bits of sha256(`key`), big-endian: the one hash behind every seeded sample and order (the seed is
    part of `key`). sha256 rather than polars' or Python's `hash`, whose values change across versions and processes,
    so a sample is the same on every machine and library version."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def seeded_hash_expr(key: pl.Expr) -> pl.Expr:
    """`seeded_hash` of every string of `key`, as UInt64 (usable lazily, e.g. in a filter of a scan)."""
    return key.map_batches(
        lambda keys: pl.Series([seeded_hash(k) for k in keys], dtype=pl.UInt64), return_dtype=pl.UInt64
    )


def mark_dropped(df: pl.DataFrame, rules: Mapping[str, pl.Expr]) -> pl.DataFrame:
    """Add `drop_reason` (null = kept): the name of the first rule, in order, whose expression is true.

    This is the polars form of datatrove's `(False, reason)`: rules are evaluated column-wise, the first failure wins.
    """
    if not rules:
        return df.with_columns(pl.lit(None, pl.String).alias(DROP_REASON))
    reason = pl.coalesce([pl.when(cond.fill_null(False)).then(pl.lit(name)) for name, cond in rules.items()]).cast(
        pl.String
    )
    return df.with_columns(reason.alias(DROP_REASON))


def split_kept(marked: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a frame with `drop_reason` into (kept rows without the column, dropped rows with it)."""
    dropped = marked.filter(pl.col(DROP_REASON).is_not_null())
    kept = marked.filter(pl.col(DROP_REASON).is_null()).drop(DROP_REASON)
    return kept, dropped


def recount_tokens(
    docs: pl.DataFrame, changed: pl.Series, count_tokens: Callable[[list[str]], list[int]] | None
) -> pl.DataFrame:
    """`docs` with `n_tokens` recounted by `count_tokens` (the recipe tokenizer's) in the rows where `changed`: a step
    that edits text (PII redaction, C4 line removal, boilerplate lines) keeps the counts `mixed` weighs by and
    `tokenized` verifies true. Without `count_tokens` or `n_tokens`, `docs` as it is."""
    rows = changed.fill_null(False).arg_true()
    if count_tokens is None or "n_tokens" not in docs.columns or rows.is_empty():
        return docs
    counts = pl.Series(count_tokens(docs["text"].gather(rows).to_list()), dtype=docs["n_tokens"].dtype)
    return docs.with_columns(docs["n_tokens"].clone().scatter(rows, counts))


def drop_counts(dropped: pl.DataFrame) -> dict[str, int]:
    """Rows dropped per reason; a quarantine row counts the `records_lost` it stands for."""
    if dropped.is_empty():
        return {}
    weight = pl.col("records_lost").sum() if "records_lost" in dropped.columns else pl.len()
    counts = dropped.group_by(DROP_REASON).agg(weight).sort(DROP_REASON)
    return {str(r): int(n) for r, n in counts.iter_rows()}


def drop_tokens(dropped: pl.DataFrame) -> dict[str, int]:
    """Tokens dropped per reason (rows without `n_tokens`, e.g. raw's quarantine, count none)."""
    if dropped.is_empty() or "n_tokens" not in dropped.columns:
        return {}
    sums = dropped.group_by(DROP_REASON).agg(pl.col("n_tokens").sum()).sort(DROP_REASON)
    return {str(r): int(n or 0) for r, n in sums.iter_rows()}


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """One Parquet file of `df`: zstd, statistics, and a CRC-32 per page. zstd without checksums can decode a flipped
    bit into other text; with page CRCs a reader that verifies them (`read_parquet_bytes`, raw's reader, DuckDB
    and Spark when asked) raises instead. What CRCs cannot catch: a page rewritten whole with a matching CRC, a
    file truncated at a row-group boundary with a valid footer, or a wrong but well-formed file (the manifests'
    file hashes and row counts cover those)."""
    buf = io.BytesIO()
    pq.write_table(df.to_arrow(), buf, compression="zstd", write_statistics=True, write_page_checksum=True)
    return buf.getvalue()


def verify_page_checksums(stream: BinaryIO) -> None:
    """Decode every page of a Parquet file with its CRC verified, one row group at a time (`OSError` on a mismatch):
    what polars' scans do not check."""
    if not getattr(stream, "seekable", lambda: False)():  # an object-store body: Parquet needs random access
        stream = io.BytesIO(stream.read())
    pf = pq.ParquetFile(stream, page_checksum_verification=True)
    for group in range(pf.num_row_groups):
        pf.read_row_group(group)


def read_parquet_bytes(data: bytes, columns: list[str] | None = None) -> pl.DataFrame:
    """A Parquet file from memory, every page's CRC verified (a mismatch raises `OSError`)."""
    table = pq.read_table(io.BytesIO(data), columns=columns, page_checksum_verification=True)
    return pl.from_arrow(table)


def meta_json(meta: Mapping[str, object]) -> str:
    """Serialise a meta mapping deterministically (sorted keys, UTF-8 kept)."""
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Added:
    """Output rows that are no input document kept: a mixture's repeats (epochs past the first), synthetic's
    generated documents. They count neither as kept input nor against the drop rate (which stays in [0, 1])."""

    what: str
    rows: int
    tokens: int


@dataclass
class StepOutput:
    """What a step wrapper returns; the IO manager persists it and reports it through `step_metadata`.

    `kept` is one frame or an iterator of frames (one Parquet part each, so a step can stream shard by shard).
    `dropped` is produced after `kept` is exhausted (a callable, so a streaming step can fill it while it runs); its
    rows carry `drop_reason`. `rows_in` / `bytes_in` may likewise be callables read after streaming.
    `extra` (more metadata) may be a callable too, read after streaming (e.g. the tasks' progress).
    `side` holds named tables persisted next to the output (e.g. filtered's per-document decision ledger).
    The IO manager persists it and reports what it wrote in the materialization's metadata (`step_metadata`); the
    checks read that record, never this object.
    """

    kept: pl.DataFrame | Iterable[pl.DataFrame]
    dropped: pl.DataFrame | Callable[[], pl.DataFrame]
    rows_in: int | Callable[[], int]
    bytes_in: int | Callable[[], int]
    config_version: str
    extra: dict[str, object] | Callable[[], dict[str, object]] = field(default_factory=dict)
    side: dict[str, pl.DataFrame] = field(default_factory=dict)
    added: Added | None = None
    trace: object = None  # a running VizTracer (run tag curation/trace): stopped and saved beside the output

    def kept_parts(self) -> Iterator[pl.DataFrame]:
        yield from ([self.kept] if isinstance(self.kept, pl.DataFrame) else self.kept)

    def dropped_frame(self) -> pl.DataFrame:
        return self.dropped() if callable(self.dropped) else self.dropped

    def resolve(self, value: int | Callable[[], int]) -> int:
        return int(value() if callable(value) else value)

    def metadata(self) -> dict[str, object]:
        """`extra`, resolved (call after the parts were consumed)."""
        return self.extra() if callable(self.extra) else self.extra


@dataclass
class FileSetOutput:
    """Named files written into one version directory (e.g. a token format's data and index shards).

    `files` yields (name, bytes) one at a time, so a writer streams shard by shard; the IO manager publishes the
    manifest (name -> URI) after the last file and records `files`, `bytes_out` and `uri` in the metadata.
    """

    files: Iterable[tuple[str, bytes]]
    trace: object = None  # a running VizTracer (run tag curation/trace): stopped and saved beside the output


def funnel_markdown(
    rows_in: int,
    rows_out: int,
    drops: Mapping[str, int],
    tokens_out: int | None,
    tokens_dropped: Mapping[str, int],
    added: Added | None = None,
) -> str:
    """What a step kept and why it dropped the rest: documents and tokens per row, with each row's share of the
    input documents and a bar of it in one cell (Dagster renders Markdown; the bar is the chart; four columns fit
    the asset page's metadata panel). Rows the step `added` (see `Added`) are not input kept: kept counts input
    documents only, so no share exceeds 100 %, and the added rows and the rows written follow as rows of their
    own."""
    n, width = max(rows_in, 1), 10

    def row(label: str, docs: int, tokens: object, share: bool = True) -> str:
        if not share:
            return f"| {label} | {docs:,} | {tokens} | |"
        bar = "█" * min(width, max(round(docs / n * width), docs > 0))
        return f"| {label} | {docs:,} | {tokens} | {docs / n:.1%} `{bar:<{width}}` |"

    def tok(v: int | None) -> str:
        return "" if v is None else f"{v:,}"

    extra = added or Added("", 0, 0)
    kept, kept_tokens = rows_out - extra.rows, None if tokens_out is None else tokens_out - extra.tokens
    known = kept_tokens is not None and (tokens_dropped or not drops)
    lines = [
        "| stage | documents | tokens | share of input |",
        "|---|---:|---:|---|",
        row("in", rows_in, tok(kept_tokens + sum(tokens_dropped.values())) if known and kept <= rows_in else ""),
        *[row(f"dropped: {r}", k, tok(tokens_dropped.get(r))) for r, k in sorted(drops.items(), key=lambda x: -x[1])],
        row("**kept**", kept, tok(kept_tokens)),
    ]
    if extra.rows:
        lines += [
            row(f"added: {extra.what}", extra.rows, tok(extra.tokens), share=False),
            row("**written**", rows_out, tok(tokens_out), share=False),
        ]
    return "\n".join(lines)
