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


def row_ranges(sizes: pl.Series, max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of consecutive row ranges covering every row of `sizes` (each row's bytes, e.g. its text's),
    in order: the rows whose preceding bytes fall in one `max_bytes` window, cut every `max_rows` rows. A range holds
    at most `max_rows` rows and less than `max_bytes` plus its last row's bytes, so a task over it is bounded by
    bytes, whatever the documents' sizes (4,096 books pages or 4,096 long manuals)."""
    before = sizes.cast(pl.Int64).fill_null(0)
    window = (before.cum_sum() - before) // max(1, max_bytes)
    rows = pl.DataFrame({"window": window}).with_row_index("row")
    first = pl.col("row").first().over("window")
    ranges = (
        rows.with_columns(((pl.col("row") - first) // max(1, max_rows)).alias("cut"))
        .group_by("window", "cut", maintain_order=True)
        .agg(pl.col("row").first().alias("offset"), pl.len().alias("length"))
    )
    return list(zip(ranges["offset"].to_list(), ranges["length"].to_list(), strict=True))


def range_frames(frames: Iterable[pl.DataFrame], ranges: Iterable[tuple[int, int]]) -> Iterator[pl.DataFrame]:
    """The rows of each (offset, length) of `ranges` (consecutive from row 0, as `row_ranges` makes them), cut in
    order from `frames`, a stream of one table's rows in order (`LazyFrame.collect_batches()`): every row is decoded
    once. A `slice(offset, length)` of a Parquet scan per range decodes each row group it touches again: a 1-row-group
    mixture of 25 tasks was decoded 25 times (0.42 s of the driver's CPU, 0.04 s streamed)."""
    stream = iter(frames)
    held: list[pl.DataFrame] = []
    rows = position = 0
    for offset, length in ranges:
        if offset != position:
            raise ValueError(f"range ({offset}, {length}) does not start where the one before ended ({position})")
        while rows < length:
            frame = next(stream, None)
            if frame is None:
                raise ValueError(f"the frames end {length - rows} rows short of range ({offset}, {length})")
            held.append(frame)
            rows += frame.height
        joined = pl.concat(held, rechunk=False)
        yield joined.slice(0, length)
        held, rows, position = [joined.slice(length)], rows - length, position + length


def empty_frame(schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))


def conform(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with exactly `schema`'s columns in its order (a missing one as typed nulls), so parts that tasks write
    apart read as one table; `schema` is what `pl.concat(..., how="diagonal_relaxed")` of the parts would give."""
    extra = [c for c in frame.columns if c not in schema]
    if extra:
        raise ValueError(f"columns {extra} are not in the table's schema {list(schema)}")
    return pl.concat([empty_frame(schema), frame], how="diagonal_relaxed")


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


def drop_bytes(dropped: pl.DataFrame) -> dict[str, int]:
    """The volume dropped per reason in bytes: the UTF-8 bytes of the dropped documents' `text`, or for raw's
    quarantine (no text) its `bytes_lost` (the stored bytes of the frames, row groups and files lost; 0 for a single
    record)."""
    column = next((c for c in ("text", "bytes_lost") if c in dropped.columns), None)
    if dropped.is_empty() or column is None:
        return {}
    volume = pl.col("text").str.len_bytes() if column == "text" else pl.col(column)
    sums = dropped.group_by(DROP_REASON).agg(volume.sum()).sort(DROP_REASON)
    return {str(r): int(n or 0) for r, n in sums.iter_rows()}


# Tokens the pipeline does not count (raw's documents, the documents filtered drops) are estimated from their bytes
# and the tokens per byte of a seeded sample of them: one document in TOKEN_SAMPLE_RATE (the seeded hash of its
# doc_id), so the sample of a source is the same documents whichever shard or batch they are in. Measured on the
# shared corpus (20 seeds, rms error of a source's estimate): raw at 1/32 (3 % of the bytes tokenized) 2.5 % (books)
# to 8.3 % (code, whose tokens per byte vary most); filtered's drops, fewer documents split over many reasons, at
# 1/32 3.5 % (web) to 27 % (code's 184), at 1/8 (DROPPED_SAMPLE_RATE: 13 % of the dropped bytes) 2.1 % to 13 %.
TOKEN_SAMPLE_RATE = 32
DROPPED_SAMPLE_RATE = 8
SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    DROP_REASON: pl.String(),
    "docs": pl.Int64(),
    "bytes": pl.Int64(),
    "tokens": pl.Int64(),
}


def token_sample(doc_id: pl.Series, rate: int = TOKEN_SAMPLE_RATE) -> pl.Series:
    """The documents of the seeded token sample (a boolean mask): `seeded_hash("tokens:<doc_id>")` below
    2**64 / `rate`, or, when none of `doc_id` is, the one of smallest hash, so a set of documents always has a sample
    (a small shard or batch would otherwise often have none). A lower rate's sample contains a higher one's."""
    hashes = seeded_hash_expr(pl.lit("tokens:") + pl.col("id"))
    h = pl.DataFrame({"id": doc_id}).select(hashes).to_series()
    mask = h < 2**64 // rate
    if h.len() and not mask.any():
        mask = mask.scatter(h.arg_min(), True)
    return mask.alias("sampled")


def sample_tokens(
    docs: pl.DataFrame, count_tokens: Callable[[list[str]], list[int]], rate: int = TOKEN_SAMPLE_RATE
) -> pl.DataFrame:
    """`docs`' seeded token sample (`token_sample` at `rate`) counted by `count_tokens` (the recipe tokenizer's): per
    `drop_reason` (null: kept rows, or `docs` has no such column) the documents sampled, their text's UTF-8 bytes and
    their tokens (SAMPLE_SCHEMA; `TokenEstimate.of` scales them)."""
    picked = docs.filter(token_sample(docs["doc_id"], rate)) if docs.height else docs
    if DROP_REASON not in picked.columns:
        picked = picked.with_columns(pl.lit(None, pl.String).alias(DROP_REASON))
    text = picked["text"].fill_null("")
    counted = picked.select(DROP_REASON).with_columns(
        text.str.len_bytes().cast(pl.Int64).alias("bytes"),
        pl.Series("tokens", count_tokens(text.to_list()), dtype=pl.Int64),
    )
    per = counted.group_by(DROP_REASON).agg(pl.len().cast(pl.Int64).alias("docs"), pl.col("bytes", "tokens").sum())
    return per.select(list(SAMPLE_SCHEMA)).cast(SAMPLE_SCHEMA).sort(DROP_REASON, nulls_last=True)


@dataclass(frozen=True)
class TokenEstimate:
    """Tokens a step did not count, estimated: each group's text bytes x the tokens per byte of its seeded sample
    (the sample of all groups together where a group has none). `kept`: the kept rows' estimate when they carry no
    `n_tokens` (raw), else None; `dropped`: per drop reason whose rows carry no `n_tokens` (filtered's). Shown as
    `~1.2M (est.)` wherever it appears (`approx`)."""

    kept: int | None
    dropped: dict[str, int]
    sample_docs: int
    sample_bytes: int
    sample_tokens: int
    tokenizer: str = ""  # the recipe tokenizer that counted the sample
    rate: int = TOKEN_SAMPLE_RATE  # one document in `rate` sampled

    @classmethod
    def of(
        cls,
        samples: Iterable[pl.DataFrame],
        tokenizer: str,
        kept_bytes: int | None = None,
        dropped_bytes: Mapping[str, int] | None = None,
        rate: int = TOKEN_SAMPLE_RATE,
    ) -> TokenEstimate:
        """The estimate of `kept_bytes` (kept rows' text) and `dropped_bytes` (per reason) from `samples`
        (`sample_tokens` frames at `rate`, e.g. one per shard or batch, counted by `tokenizer`)."""
        sample = pl.concat([empty_frame(SAMPLE_SCHEMA), *samples]).group_by(DROP_REASON).agg(pl.all().sum())
        per = {r: (b, t) for r, _, b, t in sample.select(list(SAMPLE_SCHEMA)).iter_rows()}
        pooled = (int(sample["bytes"].sum()), int(sample["tokens"].sum()))

        def scaled(group: str | None, nbytes: int) -> int | None:
            b, t = per[group] if per.get(group, (0, 0))[0] else pooled
            return round(nbytes * t / b) if b else None

        dropped = {r: scaled(r, n) for r, n in sorted((dropped_bytes or {}).items())}
        return cls(
            kept=None if kept_bytes is None else scaled(None, kept_bytes),
            dropped={r: n for r, n in dropped.items() if n is not None},
            sample_docs=int(sample["docs"].sum()),
            sample_bytes=pooled[0],
            sample_tokens=pooled[1],
            tokenizer=tokenizer,
            rate=rate,
        )

    def details(self) -> dict[str, object]:
        """What `details["tokens_estimated"]` records: the estimates and the sample they scale."""
        return {
            **({"kept": self.kept} if self.kept is not None else {}),
            **({"dropped": self.dropped} if self.dropped else {}),
            "sample": f"1/{self.rate} seeded by doc_id",
            "tokenizer": self.tokenizer,
            "sample_docs": self.sample_docs,
            "sample_bytes": self.sample_bytes,
            "sample_tokens": self.sample_tokens,
            "tokens_per_byte": round(self.sample_tokens / self.sample_bytes, 4) if self.sample_bytes else None,
        }


def approx(n: int) -> str:
    """An estimated token count as it is shown: `~1.2M (est.)` (three significant digits at most), never a bare
    number that reads as a count."""
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= scale * 0.9995:  # 999,700 is ~1.0M, not ~1000k
            v = n / scale
            return f"~{v:.1f}{suffix} (est.)" if v < 10 else f"~{v:.0f}{suffix} (est.)"
    return f"~{n} (est.)"


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


DATA = "data"  # a version's table folder of kept rows
DROPPED = "dropped"  # ... and of dropped rows (with `drop_reason`)


def part_name(index: int, table: str = DATA) -> str:
    """The file of part `index` of a version's table (kept or dropped rows): named by the part's place in the step's
    order (its shard or batch), so the name does not depend on which process wrote it or when."""
    return f"{table}/part-{index:05d}.parquet"


def keeps_part(index: int, frame: pl.DataFrame, table: str = DATA) -> bool:
    """Whether part `index` of `table` is stored: every non-empty one, and kept part 0 even when empty (the output's
    schema; a step that drops nothing has no dropped part)."""
    return frame.height > 0 or (index == 0 and table == DATA)


@dataclass(frozen=True)
class DropTally:
    """Per `drop_reason` of dropped rows: their rows, tokens and bytes (`drop_counts`, `drop_tokens`,
    `drop_bytes`), added up over a step's dropped parts, so the step's report never needs the rows themselves."""

    rows: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, dropped: pl.DataFrame) -> DropTally:
        return cls(drop_counts(dropped), drop_tokens(dropped), drop_bytes(dropped))

    def __add__(self, other: DropTally) -> DropTally:
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {r: a.get(r, 0) + b.get(r, 0) for r in sorted(a.keys() | b.keys())}

        return DropTally(add(self.rows, other.rows), add(self.tokens, other.tokens), add(self.nbytes, other.nbytes))


@dataclass(frozen=True)
class WrittenPart:
    """A part already written into the staging version by the task that made it (the IO manager's part sink,
    `resources.versions.PartSink`): what the manifest and the report record of it, so its rows never travel to the
    step."""

    index: int
    rows: int
    tokens: int | None  # sum of `n_tokens` (document tables); None for a table without it
    nbytes: int
    sha256: str
    table: str = DATA
    drops: DropTally | None = None  # of a dropped part


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

    `kept` is one frame, an iterator of frames (one Parquet part each, so a step can stream shard by shard), or a
    callable given the IO manager's part sink (`resources.versions.PartSink`) that yields, for part 0, 1, 2... in
    order, a frame (written by the IO manager), or what its task returned from `sink.write(index, frame)`: a
    `WrittenPart`, or None for an empty part left out (`keeps_part`). Tasks that write their own parts send no row
    to the step.
    `dropped` is produced after `kept` is exhausted (a callable, so a streaming step can fill it while it runs): one
    frame (dropped part 0), or, in order, what its tasks returned from `sink.write(index, frame, DROPPED)` (a
    `WrittenPart` with its `DropTally`, or None for an empty part); its rows carry `drop_reason`.
    `rows_in` / `bytes_in` may likewise be callables read after streaming.
    `extra` (more metadata) may be a callable too, read after streaming (e.g. the tasks' progress).
    `side` holds named tables persisted next to the output (e.g. filtered's per-document decision ledger).
    The IO manager persists it and reports what it wrote in the materialization's metadata (`step_metadata`); the
    checks read that record, never this object.
    """

    kept: pl.DataFrame | Iterable[pl.DataFrame] | Callable[[object], Iterable[pl.DataFrame | WrittenPart | None]]
    dropped: pl.DataFrame | Callable[[], pl.DataFrame | Iterable[WrittenPart | None]]
    rows_in: int | Callable[[], int]
    bytes_in: int | Callable[[], int]
    config_version: str
    extra: dict[str, object] | Callable[[], dict[str, object]] = field(default_factory=dict)
    side: dict[str, pl.DataFrame] = field(default_factory=dict)
    added: Added | Callable[[], Added] | None = None  # a callable is read after streaming
    estimate: TokenEstimate | Callable[[], TokenEstimate] | None = None  # tokens not counted (read after streaming)
    trace: object = None  # a traced step's `resources.engine.StepTrace`: saved beside the output

    def kept_parts(self, sink: object) -> Iterator[pl.DataFrame | WrittenPart | None]:
        if isinstance(self.kept, pl.DataFrame):
            yield self.kept
        else:
            yield from (self.kept(sink) if callable(self.kept) else self.kept)

    def dropped_parts(self) -> Iterator[pl.DataFrame | WrittenPart | None]:
        dropped = self.dropped() if callable(self.dropped) else self.dropped
        if isinstance(dropped, pl.DataFrame):
            yield dropped
        else:
            yield from dropped

    def resolve(self, value: int | Callable[[], int]) -> int:
        return int(value() if callable(value) else value)

    def metadata(self) -> dict[str, object]:
        """`extra`, resolved (call after the parts were consumed)."""
        return self.extra() if callable(self.extra) else self.extra

    def addition(self) -> Added | None:
        """`added`, resolved (call after the parts were consumed)."""
        return self.added() if callable(self.added) else self.added

    def token_estimate(self) -> TokenEstimate | None:
        """`estimate`, resolved (call after the parts were consumed)."""
        return self.estimate() if callable(self.estimate) else self.estimate


@dataclass
class FileSetOutput:
    """Named files written into one version directory (e.g. a token format's data and index shards).

    `files` yields (name, bytes) one at a time, so a writer streams shard by shard; the IO manager publishes the
    manifest (name -> URI) after the last file and records `files`, `bytes_out` and `uri` in the metadata.
    """

    files: Iterable[tuple[str, bytes]]
    trace: object = None  # a traced step's `resources.engine.StepTrace`: saved beside the output


def funnel_markdown(
    rows_in: int,
    rows_out: int,
    drops: Mapping[str, int],
    tokens_out: int | None,
    tokens_dropped: Mapping[str, int],
    added: Added | None = None,
    estimate: TokenEstimate | None = None,
) -> str:
    """What a step kept and why it dropped the rest: documents and tokens per row, with each row's share of the
    input documents and a bar of it in one cell (Dagster renders Markdown; the bar is the chart; four columns fit
    the asset page's metadata panel). Rows the step `added` (see `Added`) are not input kept: kept counts input
    documents only, so no share exceeds 100 %, and the added rows and the rows written follow as rows of their
    own. Tokens the step did not count are the `estimate`'s, shown as such (`~1.2M (est.)`), and so is an input
    total that adds one; a cell nobody counted or estimated is empty."""
    n, width = max(rows_in, 1), 10

    def row(label: str, docs: int, tokens: str, share: bool = True) -> str:
        if not share:
            return f"| {label} | {docs:,} | {tokens} | |"
        bar = "█" * min(width, max(round(docs / n * width), docs > 0))
        return f"| {label} | {docs:,} | {tokens} | {docs / n:.1%} `{bar:<{width}}` |"

    def tok(cell: tuple[int | None, bool]) -> str:
        value, estimated = cell
        return "" if value is None else approx(value) if estimated else f"{value:,}"

    def counted_or_estimated(counted: int | None, estimated: int | None) -> tuple[int | None, bool]:
        return (counted, False) if counted is not None else (estimated, estimated is not None)

    extra, est = added or Added("", 0, 0), estimate or TokenEstimate(None, {}, 0, 0, 0)
    kept = rows_out - extra.rows
    kept_tokens = counted_or_estimated(None if tokens_out is None else tokens_out - extra.tokens, est.kept)
    dropped = {r: counted_or_estimated(tokens_dropped.get(r), est.dropped.get(r)) for r in drops}
    cells = [kept_tokens, *dropped.values()]
    total = (
        (sum(v for v, _ in cells), any(e for _, e in cells))
        if all(v is not None for v, _ in cells) and kept <= rows_in
        else (None, False)
    )
    lines = [
        "| stage | documents | tokens | share of input |",
        "|---|---:|---:|---|",
        row("in", rows_in, tok(total)),
        *[row(f"dropped: {r}", k, tok(dropped[r])) for r, k in sorted(drops.items(), key=lambda x: -x[1])],
        row("**kept**", kept, tok(kept_tokens)),
    ]
    if extra.rows:
        lines += [
            row(f"added: {extra.what}", extra.rows, tok((extra.tokens, False)), share=False),
            row("**written**", rows_out, tok(counted_or_estimated(tokens_out, None)), share=False),
        ]
    return "\n".join(lines)
