"""Read ONE raw shard (JSONL, JSONL.gz, JSONL.zst, Parquet, WARC) into a document frame and a quarantine frame.

Pure reading core (no Dagster). Contract of `read_shard`:

- `docs` has exactly `DOC_SCHEMA`, in record order: `doc_id = stable_id(source, shard, position)`, `source` and
  `shard` = the arguments, `text` (HTML already extracted; never empty, never a NUL, always valid UTF-8), `url`
  (string or null), `meta` = `meta_json` of the record's meta object plus `id` (the original record id) and, when
  known, `content_type`.
- `quarantine` has exactly `QUARANTINE_SCHEMA`: one row per bad line / row / WARC response record / frame / file,
  with a snake_case `drop_reason`, a human `detail` and `record_id` when known.
- `position` / `location` is `line:N` (1-based physical line), `row:N` (0-based), `record:N` (1-based WARC
  *response* record), `frame:N` (1-based zstd frame or gzip member) or `file`.
- `records_seen == docs.height + quarantine["records_lost"].sum()`: a corrupt frame, row group or file counts the
  records it held (the container's own count, else the shard's records per byte times its `bytes_lost`; null when
  the shard has no readable byte to estimate from, for the caller to estimate). Blank and whitespace-only lines are
  skipped and not counted. An empty (0-byte) file yields no rows at all (`bytes_read == 0` tells the caller), like a
  valid empty frame.

Bad input never raises and never costs a good record. In the streamed formats (JSONL in any container, WARC) memory
does not grow with a record's length or the compression ratio: a decoder hands over at most MAX_PIECE decoded bytes
at a time, so a decompression bomb is read piece by piece, and a record longer than `max_doc_bytes` is counted, not
held. The container is chosen by its magic bytes, so a plain JSONL file named `.zst` is read as JSONL; a compressed
name whose content is neither compressed nor JSON text is quarantined as `bad_magic`.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from pydantic import BaseModel, ConfigDict, Field
from resiliparse.extract.html2text import extract_plain_text

from curation_assets.core.frames import DOC_SCHEMA, QUARANTINE_SCHEMA, meta_json
from curation_assets.core.warc import WarcSink

CHUNK = 1 << 18  # compressed bytes per read
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 + deflate: also the resync pattern for a corrupt gzip member
_BOM = b"\xef\xbb\xbf"
_HEAD = 4096  # bytes of a broken line kept to name its id
MAX_PIECE = 1 << 22  # decoded bytes one decoder call may return: a bomb inflates piece by piece, never at once
_ZSTD_BLOCK = 1 << 17  # the most a zstd block decodes to (RFC 8878 Block_Maximum_Size)
_ZSTD_SKIPPABLE = 0x184D2A50  # skippable frame magic (little-endian), low 4 bits free
_PARQUET_BATCH = 512

# ("data", bytes) | ("end", frame) | ("corrupt", frame, detail, bytes lost) | ("truncated", frame, detail, bytes lost)
Event = tuple


SUFFIXES = (
    (".jsonl", "jsonl"),
    (".jsonl.gz", "jsonl.gz"),
    (".jsonl.zst", "jsonl.zst"),
    (".jsonl.zstd", "jsonl.zst"),
    (".parquet", "parquet"),
    (".warc", "warc"),
    (".warc.gz", "warc"),
)
SUPPORTED_FORMATS = "file names end in " + ", ".join(suffix for suffix, _ in SUFFIXES)


def detect_format(name: str) -> str:
    """`jsonl` | `jsonl.gz` | `jsonl.zst` | `parquet` | `warc` (`.warc` and `.warc.gz`), from the file name."""
    lower = name.lower()
    for suffix, fmt in SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    raise ValueError(f"unsupported shard format: {name!r} ({SUPPORTED_FORMATS})")


@dataclass(frozen=True)
class ShardResult:
    docs: pl.DataFrame  # exactly DOC_SCHEMA, in record order
    quarantine: pl.DataFrame  # exactly QUARANTINE_SCHEMA
    records_seen: int  # == docs.height + quarantine["records_lost"].sum()
    bytes_read: int  # compressed bytes consumed from the stream


def html_to_text(html: str) -> str:
    """Visible main-content text of an HTML page; block structure kept as line breaks, runs of spaces collapsed.

    Every Resiliparse 2.0.1 option is explicit, so output does not drift with library defaults:
    `main_content` drops navigation, sidebars, headers and footers, which repeat on every page of a site and would
    otherwise dominate dedup and quality signals (pure index pages shrink to their heading and are left to the
    quality filters); `preserve_formatting` + `list_bullets` keep paragraph and list structure for line-level
    filters; alt texts, link targets, form fields, noscript, comment sections and post metadata are not body text;
    `hidden_elements=False` drops elements with hidden class names. A page that main-content extraction empties (a
    licence or copyright page is all "footer") falls back to its full visible text: short is not broken.
    """
    options = dict(
        preserve_formatting=True,
        list_bullets=True,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
        comments=False,
        post_meta=False,
        hidden_elements=False,
        skip_elements=None,
    )
    return (
        extract_plain_text(html, main_content=True, **options).strip()
        or extract_plain_text(html, main_content=False, **options).strip()
    )


class ReaderParams(BaseModel):
    """`raw`'s per-source reader settings (thresholds.yaml `raw`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 64 MiB: a longer line or record is quarantined as document_too_large, counted but never held in memory
    max_doc_bytes: int = Field(default=64 * 2**20, gt=0)


@dataclass(frozen=True)
class _Options:
    text_field: str
    id_field: str
    url_field: str
    html: bool
    max_doc_bytes: int


def _utf8(text: str) -> bytes | None:
    """`text` in UTF-8, or None if it holds a lone surrogate."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


def _valid_unicode(*texts: str | None) -> bool:
    """False if a string holds a lone surrogate (valid JSON escape, but it cannot be written as UTF-8)."""
    try:
        for text in texts:
            if text is not None and not text.isascii():
                text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MAX_META_DEPTH = 100
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _nested_deeper(value: object, limit: int) -> bool:
    """Whether lists/dicts nest deeper than `limit` levels (iterative: no recursion on hostile input)."""
    if limit > 0 and type(value) is dict and _SCALARS.issuperset(map(type, value.values())):
        return False  # the usual flat meta, without a Python step per value
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def estimate_records_lost(quarantine: pl.DataFrame, docs: int, nbytes: int) -> pl.DataFrame:
    """Fill the null `records_lost` of quarantine rows (a frame or file whose records could not be counted) from
    the records per stored byte over the readable bytes (`nbytes` minus the rows' `bytes_lost`; `docs` documents
    plus the counted records), at least 1 a row; left null when no byte was readable. Used per shard here, and by
    `raw` over a whole source for the rows of shards that had no readable byte."""
    readable = nbytes - quarantine["bytes_lost"].sum()
    if readable <= 0:
        return quarantine
    per_byte = (docs + quarantine["records_lost"].sum()) / readable
    estimate = (pl.col("bytes_lost") * per_byte).round().cast(pl.Int64).clip(lower_bound=1)
    return quarantine.with_columns(pl.col("records_lost").fill_null(estimate))


class _Collector:
    """Accumulates documents and quarantine rows column-wise; `mark`/`rollback` undo the rows of a corrupt frame.

    Documents come one by one (`add_doc`, into lists) or as frames of doc_id, text, url, meta read in bulk
    (`add_frame`); `frames` then `docs` hold them in record order.
    """

    def __init__(self, source: str, shard: str, max_doc_bytes: int):
        self.source, self.shard, self.max_doc_bytes = source, shard, max_doc_bytes
        self.id_prefix = "\x1f".join(map(str, (source, shard, "")))  # frames.stable_id's text before the position
        self.docs: dict[str, list] = {"doc_id": [], "text": [], "url": [], "meta": []}  # text as UTF-8 bytes
        self.frames: list[pl.DataFrame] = []
        self.in_frames = 0  # documents in `frames`
        self.metas: dict[tuple, tuple[str, str] | None] = {}  # `_known_meta`'s cache
        self.bad_rows: dict[str, list] = {
            "location": [],
            "drop_reason": [],
            "detail": [],
            "record_id": [],
            "records_lost": [],
            "bytes_lost": [],
        }

    def bad(
        self,
        location: str,
        reason: str,
        detail: str,
        record_id: str | None = None,
        *,
        records: int | None = 1,
        nbytes: int = 0,
    ) -> None:
        """One quarantine row; a frame, row group or file passes the `records` it held (None: estimate them from
        the shard's records per byte, at least 1) and its stored `nbytes`."""
        for key, value in zip(self.bad_rows, (location, reason, detail, record_id, records, nbytes)):
            self.bad_rows[key].append(value)

    def add_doc(
        self,
        position: str,
        record_id: str,
        text: str,
        url: str | None,
        meta: dict,
        html: bool,
        meta_s: str | None = None,
    ) -> int | None:
        """Final checks shared by every format; returns the document's index, or None if it was quarantined.
        `meta_s`, when known: `meta_json(meta)`, which nests within MAX_META_DEPTH and holds no lone surrogate."""
        raw = _utf8(text)  # kept for the frame; None (a lone surrogate) is reported below, in its turn
        if (b"\x00" in raw) if raw is not None else ("\x00" in text):
            # a NUL stops C tokenizers / regex engines: strip it, and say so in meta
            meta["nul_stripped"] = text.count("\x00")
            text = text.replace("\x00", "")
            raw, meta_s = _utf8(text), None
        if not text or text.isspace():
            return self.bad(
                position, "empty_text", "text is empty" if not text else "text is whitespace-only", record_id
            )
        size = len(raw) if raw is not None else len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_doc_bytes:
            return self.bad(
                position, "document_too_large", f"text exceeds max_doc_bytes={self.max_doc_bytes}", record_id
            )
        if meta_s is None:
            # A meta that parsed (up to ~990 levels) may not re-encode in a deeper stack (RecursionError): this
            # record only is quarantined, at a depth no real metadata reaches, whatever the caller's stack.
            if _nested_deeper(meta, MAX_META_DEPTH):
                return self.bad(position, "meta_too_deep", f"meta nests deeper than {MAX_META_DEPTH} levels", record_id)
            meta_s = meta_json(meta)
        plain = meta_s.isascii() and (url is None or url.isascii())  # the usual case, in O(1)
        if raw is None or not plain and not _valid_unicode(url, meta_s):
            return self.bad(position, "invalid_utf8", "lone surrogate in a string (not encodable as UTF-8)", record_id)
        if html:
            try:
                text = html_to_text(text)
            except Exception as exc:  # resiliparse parser errors have no common public base class
                return self.bad(position, "html_parse_error", f"{type(exc).__name__}: {exc}", record_id)
            if not text:
                return self.bad(position, "empty_after_extraction", "no visible text in the HTML", record_id)
            raw = text.encode()
        docs = self.docs
        docs["doc_id"].append(self.doc_id(position))
        docs["text"].append(raw)
        docs["url"].append(url)
        docs["meta"].append(meta_s)
        return self.in_frames + len(docs["doc_id"]) - 1

    def doc_id(self, position: str) -> str:
        """`frames.stable_id(source, shard, position)`, the prefix joined once per shard."""
        return hashlib.blake2b((self.id_prefix + position).encode(), digest_size=16).hexdigest()

    def add_frame(self, frame: pl.DataFrame) -> None:
        """Documents checked in bulk: doc_id, text, url, meta (String), as `add_doc` would have made them."""
        self._seal()
        self.frames.append(frame)
        self.in_frames += frame.height

    def _seal(self) -> None:
        """Move the documents added one by one into `frames`, keeping record order."""
        if self.docs["doc_id"]:
            frame = pl.DataFrame(self.docs, schema={**{c: pl.String for c in self.docs}, "text": pl.Binary})
            self.frames.append(frame.with_columns(pl.col("text").cast(pl.String)))
            self.in_frames += self.frames[-1].height
            self.docs = {column: [] for column in self.docs}

    def merge_meta(self, index: int, extra: dict) -> None:
        """Add keys of a later record (a WARC metadata record) under the document's own keys."""
        index -= self.in_frames  # WARC documents come one by one: never sealed into `frames`
        merged = meta_json({**extra, **json.loads(self.docs["meta"][index])})
        if _valid_unicode(merged):
            self.docs["meta"][index] = merged

    def mark(self) -> tuple[int, int]:
        return self.in_frames + len(self.docs["doc_id"]), len(self.bad_rows["location"])

    def rollback(self, mark: tuple[int, int]) -> None:
        if mark[0] < self.in_frames:
            self._seal()
            kept = pl.concat(self.frames).head(mark[0])
            self.frames, self.in_frames = [kept], kept.height
        for column in self.docs.values():
            del column[mark[0] - self.in_frames :]
        for column in self.bad_rows.values():
            del column[mark[1] :]

    def result(self, bytes_read: int) -> ShardResult:
        n_docs, n_bad = self.mark()
        self._seal()
        frames = self.frames or [pl.DataFrame(schema={c: pl.String for c in self.docs})]
        docs = (
            pl.concat(frames)
            .with_columns(
                source=pl.Series([self.source] * n_docs, dtype=pl.String),
                shard=pl.Series([self.shard] * n_docs, dtype=pl.String),
            )
            .select(list(DOC_SCHEMA))
        )
        bad = pl.DataFrame(
            {**self.bad_rows, "source": [self.source] * n_bad, "shard": [self.shard] * n_bad}, schema=QUARANTINE_SCHEMA
        )
        bad = estimate_records_lost(bad, n_docs, bytes_read)  # the shard's own records per stored byte
        records = n_docs + bad["records_lost"].sum()
        return ShardResult(docs=docs, quarantine=bad, records_seen=records, bytes_read=bytes_read)


def _parse_meta(raw: object) -> dict:
    """The record's meta object: a dict, a JSON string holding one, or anything else kept under `meta_raw`."""
    if isinstance(raw, str):
        try:
            parsed = _loads(raw)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    if raw is None:
        return {}
    return raw if isinstance(raw, dict) else {"meta_raw": raw}


def _record(col: _Collector, rec: dict, position: str, o: _Options) -> None:
    """Validate one JSONL object or Parquet row: `id` must be a non-empty string, `text` a string."""
    rid = rec.get(o.id_field)
    if rid is None:
        return col.bad(position, "missing_id", f"'{o.id_field}' is {'null' if o.id_field in rec else 'missing'}")
    if not isinstance(rid, str):  # a numeric id is not coerced: the schema requires a string, and it may collide
        return col.bad(position, "id_wrong_type", f"'{o.id_field}' is {type(rid).__name__}, expected string")
    if not rid.isascii() and not _valid_unicode(rid):
        return col.bad(position, "invalid_utf8", f"lone surrogate in '{o.id_field}'")
    if not rid.strip():
        return col.bad(position, "empty_id", f"'{o.id_field}' is empty")
    text = rec.get(o.text_field)
    if text is None:
        detail = f"'{o.text_field}' is {'null' if o.text_field in rec else 'missing'}"
        return col.bad(position, "missing_text", detail, rid)
    if not isinstance(text, str):
        detail = f"'{o.text_field}' is {type(text).__name__}, expected string"
        return col.bad(position, "text_wrong_type", detail, rid)
    meta = rec.get("meta")
    meta = meta if type(meta) is dict else _parse_meta(meta)  # the usual JSONL meta, without a call
    url = rec.get(o.url_field)
    if not isinstance(url, str):  # optional field of the wrong type: keep the document, keep scalars as text
        url = str(url) if isinstance(url, int | float) and not isinstance(url, bool) else None
    col.add_doc(position, rid, text, url, {**meta, "id": rid}, _is_html(meta, o), _known_meta(col, meta, rid, o))


def _is_html(meta: dict, o: _Options) -> bool:
    return o.html or str(meta.get("content_type", "")).lower().startswith(("text/html", "application/xhtml"))


_SENTINEL = "\x00id\x00"  # stands for the record id in a meta built once for many records
_SENTINEL_JSON = json.dumps(_SENTINEL)


def _meta_around_id(meta: dict, o: _Options) -> tuple[str, str] | None:
    """The document meta `_record` makes of a record with meta `meta` (parsed) and any id without characters JSON
    escapes, as (text before the id's JSON string, text after); None when such records need every check (HTML, meta
    nested too deep, a lone surrogate)."""
    full = {**meta, "id": _SENTINEL}
    if _is_html(meta, o) or _nested_deeper(full, MAX_META_DEPTH):
        return None
    text = meta_json(full)
    if text.count(_SENTINEL_JSON) != 1 or not _valid_unicode(text):
        return None
    before, after = text.split(_SENTINEL_JSON)
    return before, after


_JSON_ESCAPED = re.compile(r'[\x00-\x1f"\\]')  # what json.dumps escapes (ensure_ascii=False)
_HASHED_EXACTLY = frozenset((str, int, bool, type(None)))  # equal values print alike (not so -0.0 and 0.0)
_MAX_METAS = 4096  # metas `_known_meta` keeps per shard


def _known_meta(col: _Collector, meta: dict, rid: str, o: _Options) -> str | None:
    """`meta_json({**meta, "id": rid})` for a meta of scalar values seen before in the shard (records of a shard
    share few metas), from `_meta_around_id` cached by the meta's items and their types; None: build it in full."""
    types = tuple(map(type, meta.values()))
    if not _HASHED_EXACTLY.issuperset(types) or _JSON_ESCAPED.search(rid):
        return None
    key = (tuple(meta.items()), types)
    if key not in col.metas:
        if len(col.metas) >= _MAX_METAS:
            col.metas.clear()
        col.metas[key] = _meta_around_id(meta, o)
    parts = col.metas[key]
    return None if parts is None else f'{parts[0]}"{rid}"{parts[1]}'


# Not whitespace for Python's str.isspace (Unicode White_Space, as in the regex crate's \s, plus \x1c-\x1f)
_NOT_SPACE = r"[^\s\x1c-\x1f]"


def _bulk_rows(
    table: pa.Table, first_row: int, col: _Collector, o: _Options, metas: dict[str | None, tuple | None]
) -> tuple[pl.DataFrame, pl.Series]:
    """The rows of a Parquet row group that `_record` would make documents of without a question (string id with
    no character JSON escapes, text with a visible character, no NUL, within max_doc_bytes, meta as
    `_meta_around_id` allows), as documents (doc_id, text, url, meta), and the mask of those rows. `metas` caches
    `_meta_around_id` over the file's row groups. Raises if a string is not valid UTF-8 (neither pyarrow nor polars
    checks on read, and `_record` would fail on it)."""
    if any(pa.types.is_dictionary(field.type) for field in table.schema):
        table.validate(full=True)  # dictionary columns arrive in polars as Categorical
        df = pl.from_arrow(table).select(pl.all().cast(pl.String))
    else:  # a strict cast to String checks UTF-8, faster than pyarrow's validate
        df = pl.from_arrow(table).select(pl.all().cast(pl.Binary).cast(pl.String))
    url = pl.col(o.url_field) if o.url_field in df.columns else pl.lit(None, pl.String)
    meta = pl.col("meta") if "meta" in df.columns else pl.lit(None, pl.String)
    rows = df.select(
        pl.col(o.id_field).alias("id"), pl.col(o.text_field).alias("text"), url.alias("url"), meta.alias("meta")
    )
    keys = rows["meta"].unique(maintain_order=True).to_list()  # few per file: each is built once
    parts = [metas[k] if k in metas else metas.setdefault(k, _meta_around_id(_parse_meta(k), o)) for k in keys]
    parts = [part or (None, None) for part in parts]
    lookup = pl.DataFrame(
        {"meta": keys, "before": [p[0] for p in parts], "after": [p[1] for p in parts]},
        schema={"meta": pl.String, "before": pl.String, "after": pl.String},
    )
    rows = rows.join(lookup, on="meta", how="left", nulls_equal=True, maintain_order="left")
    good = (
        pl.col("id").str.contains(_NOT_SPACE)
        & ~pl.col("id").str.contains(r'[\x00-\x1f"\\]')
        & pl.col("text").str.contains(_NOT_SPACE)
        & ~pl.col("text").str.contains("\x00", literal=True)
        & (pl.col("text").str.len_bytes() <= o.max_doc_bytes)
        & pl.col("before").is_not_null()
    ).fill_null(False)
    mask = rows.select(good).to_series()
    doc_ids = [col.doc_id(f"row:{row}") for row in (mask.arg_true() + first_row).to_list()]
    docs = rows.filter(mask).select(
        pl.Series("doc_id", doc_ids, pl.String),
        "text",
        "url",
        pl.concat_str(pl.col("before"), pl.lit('"'), pl.col("id"), pl.lit('"'), pl.col("after")).alias("meta"),
    )
    return docs, mask


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")  # Python's json accepts NaN / Infinity by default


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> object:
    """`json.loads(text, parse_constant=_reject_constant)` without building a decoder per call."""
    if text.startswith("\ufeff"):
        return json.loads(text)  # raises json.loads' own "Unexpected UTF-8 BOM" error
    return _DECODER.decode(text)


def _sniff_id(head: bytes | bytearray, id_field: str) -> str | None:
    """Best-effort id of a line that cannot be parsed: only when the id is its first key and a plain token."""
    pattern = rb'^\s*\{\s*"' + re.escape(id_field.encode()) + rb'"\s*:\s*"([0-9A-Za-z_.:/-]{1,200})"'
    match = re.match(pattern, bytes(head[:_HEAD]).removeprefix(_BOM))
    return match.group(1).decode("ascii") if match else None


class _JsonlSink:
    """Splits decoded bytes into lines and turns each non-blank line into a document or a quarantine row.

    Linear in line length; a line longer than `max_doc_bytes` is counted but not kept (nor parsed).
    """

    def __init__(self, col: _Collector, o: _Options):
        self.col, self.o = col, o
        self.line_no = 0
        self.pending = bytearray()
        self.oversize = 0  # > 0: bytes of the current line once it outgrew max_doc_bytes (then only counted)
        self.head = b""  # start of an oversized line, to name its id
        self.commit = (col.mark(), 0)  # state after the last verified frame

    def feed(self, data: bytes) -> None:
        view, start, find = memoryview(data), 0, data.find
        nul_free = b"\x00" not in data  # then so is every line that lies in this piece
        while (nl := find(b"\n", start)) >= 0:
            if self.pending or self.oversize:  # the line begun in an earlier piece ends here
                self._extend(view[start:nl])
                line, self.pending = self.pending, bytearray()
                self._line(line, False)
            else:
                self._line(view[start:nl], nul_free)  # a view: decoded without a copy
            start = nl + 1
        self._extend(view[start:])

    def _extend(self, piece: memoryview) -> None:
        if self.oversize:
            self.oversize += len(piece)
            return
        self.pending += piece
        if len(self.pending) > self.o.max_doc_bytes:
            self.head, self.oversize, self.pending = bytes(self.pending[:_HEAD]), len(self.pending), bytearray()

    def _line(self, line: memoryview | bytearray, nul_free: bool) -> None:
        """One complete line (without its newline); `oversize` > 0 if it outgrew max_doc_bytes while pending.
        `nul_free`: the line has no NUL byte."""
        self.line_no += 1
        position, bad = f"line:{self.line_no}", self.col.bad
        if self.oversize or len(line) > self.o.max_doc_bytes:  # the latter came whole within one piece
            size, head, self.oversize = (self.oversize, self.head, 0) if self.oversize else (len(line), line, 0)
            detail = f"line of {size} bytes exceeds max_doc_bytes={self.o.max_doc_bytes}"
            return bad(position, "document_too_large", detail, _sniff_id(head, self.o.id_field))
        if not (nul_free and line[:1] == b"{"):  # an object's line needs none of these checks (nor a BOM)
            line = bytes(line)
            if self.line_no == 1 and line.startswith(_BOM):  # a BOM is legal only at the start of the file
                line = line[3:]
            if not line or line.isspace():
                return None
            if b"\x00" in line:
                return bad(position, "nul_bytes", "raw NUL byte in the line", _sniff_id(line, self.o.id_field))
        try:  # decode per line, strictly: one bad byte costs one record, never the shard
            text = codecs.utf_8_decode(line, "strict", True)[0]
            rec, end = _DECODER.raw_decode(text) if text[:1] == "{" else (None, -1)
            if end != len(text):  # blanks around the object, or more after it: json.loads' own handling
                rec = _loads(text)
        except UnicodeDecodeError as exc:
            return bad(position, "invalid_utf8", str(exc), _sniff_id(line, self.o.id_field))
        except (ValueError, RecursionError) as exc:  # strict JSON: control characters, NaN, trailing data...
            return bad(position, "invalid_json", str(exc)[:300], _sniff_id(line, self.o.id_field))
        if not isinstance(rec, dict):
            return bad(position, "not_an_object", f"top-level JSON {type(rec).__name__}, expected object")
        return _record(self.col, rec, position, self.o)

    def end(self, frame: int) -> None:
        self.commit = (self.col.mark(), self.line_no)

    def corrupt(self, frame: int, detail: str, nbytes: int) -> None:
        # Lines of a frame whose data/checksum failed may be garbled: drop them all, the frame row stands for them.
        mark, self.line_no = self.commit
        self.col.rollback(mark)
        self.pending, self.oversize = bytearray(), 0
        detail = f"{detail}; records decoded from this frame are discarded"
        self.col.bad(f"frame:{frame}", "corrupt_frame", detail, records=None, nbytes=nbytes)
        self.commit = (self.col.mark(), self.line_no)

    def finish(self, truncated: tuple[int, str, int] | None) -> None:
        has_partial = self.oversize or (self.pending and not self.pending.isspace())
        if truncated is None:
            if has_partial:
                line, self.pending = self.pending, bytearray()
                self._line(line, False)  # last line without a newline
        elif has_partial:
            self.line_no += 1
            head = self.head if self.oversize else self.pending
            detail = f"partial last line: {truncated[1]}"
            self.col.bad(f"line:{self.line_no}", "truncated_stream", detail, _sniff_id(head, self.o.id_field))
        else:
            frame, detail, nbytes = truncated
            self.col.bad(f"frame:{frame}", "truncated_stream", detail, records=None if nbytes else 1, nbytes=nbytes)


class _Gunzip:
    """One gzip member, decoded in pieces of at most MAX_PIECE bytes (deflate inflates up to ~1000x)."""

    def __init__(self) -> None:
        self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def pieces(self, data: bytes) -> Iterator[bytes]:
        while True:
            out = self.decoder.decompress(data, MAX_PIECE)
            if out:
                yield out
            data = self.decoder.unconsumed_tail
            # a full piece may leave output inside zlib even when all input was taken: ask again until it is short
            if self.decoder.eof or not (data or len(out) == MAX_PIECE):
                return

    @property
    def eof(self) -> bool:
        return self.decoder.eof

    @property
    def unused_data(self) -> bytes:
        return self.decoder.unused_data


class _Unzstd:
    """One zstd frame, decoded in pieces of at most MAX_PIECE + one block.

    The decoder has no output limit, and a 4-byte RLE block decodes to 128 KiB, so a 256 KiB read could inflate to
    8 GiB in one call. The frame's headers (RFC 8878) are followed instead: each call gets at most MAX_PIECE worth
    of blocks. An incomplete header is held back until the next read completes it.
    """

    def __init__(self) -> None:
        self.decoder = zstandard.ZstdDecompressor().decompressobj()
        self.held = b""  # received, not yet decoded: an incomplete header
        self.fed = 0  # frame bytes given to the decoder
        self.next = 0  # frame offset of the next header to read
        self.kind = "frame"  # what is at `next`: "frame" header, "block" header, or "end" (past the last block)
        self.checksum = 0  # bytes of content checksum after the last block

    def pieces(self, data: bytes) -> Iterator[bytes]:
        buf = memoryview(self.held + data if self.held else data)
        base, start, stop, budget = self.fed, 0, len(buf), 0
        if self.kind == "end" and self.next <= base:  # fail safe: the decoder must end where the headers say
            raise zstandard.ZstdError("frame continues past its last block")
        while self.kind != "end" and (at := self.next - base) < len(buf):
            head = bytes(buf[at : at + 8])
            if self.kind == "block":
                if len(head) < 3:
                    stop = at  # hold the incomplete header back until the next read
                    break
                header = int.from_bytes(head[:3], "little")
                kind, size = (header >> 1) & 3, header >> 3  # raw, RLE (1 byte repeated `size` times), compressed
                out = size if kind < 2 else _ZSTD_BLOCK
                if budget and budget + out > MAX_PIECE:
                    yield from self._decode(buf[start:at])
                    start, budget = at, 0
                budget += out
                self.next += 3 + (1 if kind == 1 else size)
                if header & 1:  # the last block
                    self.next += self.checksum
                    self.kind = "end"
                continue
            skippable = len(head) >= 4 and int.from_bytes(head[:4], "little") & ~0xF == _ZSTD_SKIPPABLE
            if len(head) >= 4 and not skippable and head[:4] != ZSTD_MAGIC:
                raise zstandard.ZstdError(f"unknown frame magic {head[:4].hex(' ')}")
            if len(head) < (8 if skippable else 5):
                stop = at
                break
            if skippable:  # no output: its declared length is skipped
                self.next += 8 + int.from_bytes(head[4:8], "little")
                self.kind = "end"
            else:
                self.next += zstandard.frame_header_size(head[:5])
                self.checksum, self.kind = (4 if head[4] & 4 else 0), "block"
        self.held = bytes(buf[stop:])
        yield from self._decode(buf[start:stop])

    def _decode(self, data: memoryview) -> Iterator[bytes]:
        self.fed += len(data)
        if data and (out := self.decoder.decompress(data)):
            yield out

    @property
    def eof(self) -> bool:
        return self.decoder.eof

    @property
    def unused_data(self) -> bytes:
        return self.decoder.unused_data


def _framed(data: bytes, read: Callable[[], bytes], magic: bytes, new_decoder: Callable) -> Iterator[Event]:
    """Decode concatenated frames (zstd frames or gzip members) with one decoder each.

    A frame whose decoder fails is reported and decoding resumes at the next `magic` after its start; the
    compressed bytes of the current frame are kept for that search (compressed, so far smaller than its output).
    Input that ends inside a frame is reported as truncated after everything decoded before the cut.
    """
    frame_no = 0
    while data:
        frame_no += 1
        decoder, frame, produced = new_decoder(), bytearray(), False
        while True:
            frame += data
            try:
                for out in decoder.pieces(data):
                    produced = True
                    yield ("data", out)
            except (zstandard.ZstdError, zlib.error) as exc:
                data, skipped = _resync(frame, read, magic)
                yield ("corrupt", frame_no, str(exc), skipped)
                break
            if decoder.eof:
                yield ("end", frame_no)
                data = decoder.unused_data or read()
                break
            data = read()
            if not data:
                # a cut frame keeps what it decoded; one that decoded nothing (say, zero-filled) is lost whole
                detail = f"compressed input ends inside frame {frame_no}"
                yield ("truncated", frame_no, detail, 0 if produced else len(frame))
                return


def _resync(frame: bytearray, read: Callable[[], bytes], magic: bytes) -> tuple[bytes, int]:
    """(the input from the next `magic` after the start of a corrupt frame, or b"" if there is none; the bytes
    skipped from the frame's start to there)."""
    buf, seen = bytes(frame[1:]), len(frame)
    while (at := buf.find(magic)) < 0:
        more = read()
        if not more:
            return b"", seen
        seen += len(more)
        buf = buf[1 - len(magic) :] + more
    return buf[at:], seen - (len(buf) - at)


def _plain(data: bytes, read: Callable[[], bytes]) -> Iterator[Event]:
    while data:
        yield ("data", data)
        data = read()


def _events(first: bytes, read: Callable[[], bytes], fmt: str, col: _Collector) -> Iterator[Event] | None:
    """Pick the container by magic bytes, whatever the name says; uncompressed content must look like its format."""
    if first.startswith(ZSTD_MAGIC):
        return _framed(first, read, ZSTD_MAGIC, _Unzstd)
    if first.startswith(GZIP_MAGIC[:2]):
        return _framed(first, read, GZIP_MAGIC, _Gunzip)
    if fmt == "jsonl" or first.removeprefix(_BOM).lstrip().startswith(b"WARC/" if fmt == "warc" else b"{"):
        return _plain(first, read)
    return None


def _read_stream(stream: BinaryIO, fmt: str, col: _Collector, o: _Options) -> int:
    """JSONL in any container, and WARC: returns the compressed bytes consumed."""
    total = 0

    def read() -> bytes:
        nonlocal total
        chunk = stream.read(CHUNK)
        total += len(chunk)
        return chunk

    first = read()
    events = _events(first, read, fmt, col) if first else None
    if first and events is None:
        while read():  # counted, not decoded: the whole file is lost
            pass
        detail = f"not a {fmt} stream: starts with bytes {first[:4].hex(' ')}"
        col.bad("file", "bad_magic", detail, records=None, nbytes=total)
    elif events is not None:
        sink = WarcSink(col, o.max_doc_bytes) if fmt == "warc" else _JsonlSink(col, o)
        truncated = None
        for kind, *args in events:
            if kind == "data":
                sink.feed(args[0])
            elif kind == "end":
                sink.end(args[0])
            elif kind == "corrupt":
                sink.corrupt(*args)
            else:
                truncated = tuple(args)
        sink.finish(truncated)
    return total


def _is_string(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)


def _read_group(
    pf: pq.ParquetFile, group: int, columns: list[str], first_row: int, col: _Collector, o: _Options, metas: dict
) -> tuple[pa.Table, pl.DataFrame, pl.Series] | None:
    """A row group read whole and checked in bulk: (its rows, `_bulk_rows`), or None if it does not read (a corrupt
    page, invalid UTF-8): the per-batch path then reads it and reports the fault where it is, as it always has."""
    try:
        table = pf.read_row_group(group, columns=columns, use_threads=False)  # one core, as one Ray task
        if table.num_rows != pf.metadata.row_group(group).num_rows:
            return None
        return table, *_bulk_rows(table, first_row, col, o, metas)
    except Exception:  # pyarrow raises ArrowInvalid / OSError subclasses for corrupt data
        return None


def _read_parquet(stream: BinaryIO, col: _Collector, o: _Options) -> int:
    """Parquet, row group by row group: returns the file size.

    A row group is read whole and checked as expressions (`_bulk_rows`) when its columns allow; the rows that do not
    pass, and every row of a group that does not read whole, go through `_record` one by one."""
    if not getattr(stream, "seekable", lambda: False)():  # e.g. an object-store body: Parquet needs random access
        stream = io.BytesIO(stream.read())
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    if not size:
        return 0
    try:
        # CRCs are checked wherever the writer stored them (ours always does): a flipped bit in a page is a corrupt
        # row group, never altered text passed as good. A file without page CRCs cannot be checked this way.
        pf = pq.ParquetFile(stream, page_checksum_verification=True)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses for a broken footer
        col.bad("file", "corrupt_file", f"{type(exc).__name__}: {exc}", records=None, nbytes=size)
        return size
    whole = {"records": pf.metadata.num_rows, "nbytes": size}  # a file-level row loses every row of the file
    schema = pf.schema_arrow
    missing = [c for c in (o.id_field, o.text_field) if c not in schema.names]
    if missing:
        detail = f"missing columns {', '.join(missing)} (has {', '.join(schema.names)})"
        col.bad("file", "schema_mismatch", detail, **whole)
        return size
    if not _is_string(schema.field(o.text_field).type):
        detail = f"text column has type {schema.field(o.text_field).type}, expected string"
        col.bad("file", "text_column_wrong_type", detail, **whole)
        return size
    if not _is_string(schema.field(o.id_field).type):
        detail = f"id column has type {schema.field(o.id_field).type}, expected string"
        col.bad("file", "schema_mismatch", detail, **whole)
        return size
    columns = [c for c in dict.fromkeys((o.id_field, o.text_field, o.url_field, "meta")) if c in schema.names]
    # url and meta of another type keep their Python conversions (`_record`); no HTML extraction in bulk
    bulk = (
        not o.html
        and len({o.id_field, o.text_field, o.url_field, "meta"}) == 4
        and len(set(schema.names)) == len(schema.names)
        and all(_is_string(schema.field(c).type) for c in columns)
    )
    first_row, metas = 0, {}
    for group in range(pf.num_row_groups):
        row, meta = first_row, pf.metadata.row_group(group)
        whole = _read_group(pf, group, columns, first_row, col, o, metas) if bulk else None
        try:
            if whole is not None:
                table, docs, mask = whole
                done = 0  # documents of `docs` added
                for run in mask.rle().struct.unnest().iter_rows(named=True):
                    if run["value"]:
                        col.add_frame(docs.slice(done, run["len"]))
                        done, row = done + run["len"], row + run["len"]
                        continue
                    for rec in table.slice(row - first_row, run["len"]).to_pylist():
                        _record(col, rec, f"row:{row}", o)
                        row += 1
            else:
                for batch in pf.iter_batches(batch_size=_PARQUET_BATCH, row_groups=[group], columns=columns):
                    for rec in batch.to_pylist():
                        _record(col, rec, f"row:{row}", o)
                        row += 1
        except Exception as exc:  # a corrupt page costs the rest of its row group, not the file
            lost = max(1, meta.num_rows - (row - first_row))  # the footer counts the group's rows
            detail = f"row group {group}: {type(exc).__name__}: {exc}"
            stored = sum(meta.column(c).total_compressed_size for c in range(meta.num_columns))
            nbytes = round(stored * lost / max(1, meta.num_rows))
            col.bad(f"row:{row}", "corrupt_row_group", detail, records=lost, nbytes=nbytes)
        first_row += meta.num_rows
    return size


def read_shard(
    stream: BinaryIO,
    *,
    fmt: str,
    source: str,
    shard: str,
    text_field: str = "text",
    id_field: str = "id",
    url_field: str = "url",
    html: bool = False,
    max_doc_bytes: int = 64 * 2**20,
) -> ShardResult:
    """Read one shard of format `fmt` (see `detect_format`) from a binary stream; see the module docstring."""
    if fmt not in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "warc"):
        raise ValueError(f"unknown format {fmt!r}")
    o = _Options(text_field, id_field, url_field, html, max_doc_bytes)
    col = _Collector(source, shard, max_doc_bytes)
    bytes_read = 0
    try:
        bytes_read = _read_parquet(stream, col, o) if fmt == "parquet" else _read_stream(stream, fmt, col, o)
    except (OSError, MemoryError):
        raise  # the storage or the machine failed, not the input: let the run retry
    except Exception as exc:  # last resort: an unforeseen defect in one file must not stop the run
        col.bad("file", "read_error", f"{type(exc).__name__}: {exc}", records=None)
    return col.result(bytes_read)
