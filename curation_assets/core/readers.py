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

from curation_assets.core.frames import DOC_SCHEMA, QUARANTINE_SCHEMA, meta_json, stable_id
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


def _nested_deeper(value: object, limit: int) -> bool:
    """Whether lists/dicts nest deeper than `limit` levels (iterative: no recursion on hostile input)."""
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
    """Accumulates documents and quarantine rows column-wise; `mark`/`rollback` undo the rows of a corrupt frame."""

    def __init__(self, source: str, shard: str, max_doc_bytes: int):
        self.source, self.shard, self.max_doc_bytes = source, shard, max_doc_bytes
        self.docs: dict[str, list] = {"doc_id": [], "text": [], "url": [], "meta": []}
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

    def add_doc(self, position: str, record_id: str, text: str, url: str | None, meta: dict, html: bool) -> int | None:
        """Final checks shared by every format; returns the document's index, or None if it was quarantined."""
        if "\x00" in text:  # a NUL stops C tokenizers / regex engines: strip it, and say so in meta
            meta["nul_stripped"] = text.count("\x00")
            text = text.replace("\x00", "")
        if not text or text.isspace():
            return self.bad(
                position, "empty_text", "text is empty" if not text else "text is whitespace-only", record_id
            )
        # chars * 4 bounds the UTF-8 size, so only long texts pay for measuring it
        if len(text) * 4 > self.max_doc_bytes and len(text.encode("utf-8", "surrogatepass")) > self.max_doc_bytes:
            return self.bad(
                position, "document_too_large", f"text exceeds max_doc_bytes={self.max_doc_bytes}", record_id
            )
        # A meta that parsed (up to ~990 levels) may not re-encode in a deeper stack (RecursionError): this record
        # only is quarantined, at a depth no real metadata reaches, whatever the caller's stack.
        if _nested_deeper(meta, MAX_META_DEPTH):
            return self.bad(position, "meta_too_deep", f"meta nests deeper than {MAX_META_DEPTH} levels", record_id)
        meta_s = meta_json(meta)
        if not _valid_unicode(text, url, meta_s):
            return self.bad(position, "invalid_utf8", "lone surrogate in a string (not encodable as UTF-8)", record_id)
        if html:
            try:
                text = html_to_text(text)
            except Exception as exc:  # resiliparse parser errors have no common public base class
                return self.bad(position, "html_parse_error", f"{type(exc).__name__}: {exc}", record_id)
            if not text:
                return self.bad(position, "empty_after_extraction", "no visible text in the HTML", record_id)
        for key, value in zip(self.docs, (stable_id(self.source, self.shard, position), text, url, meta_s)):
            self.docs[key].append(value)
        return len(self.docs["doc_id"]) - 1

    def merge_meta(self, index: int, extra: dict) -> None:
        """Add keys of a later record (a WARC metadata record) under the document's own keys."""
        merged = meta_json({**extra, **json.loads(self.docs["meta"][index])})
        if _valid_unicode(merged):
            self.docs["meta"][index] = merged

    def mark(self) -> tuple[int, int]:
        return len(self.docs["doc_id"]), len(self.bad_rows["location"])

    def rollback(self, mark: tuple[int, int]) -> None:
        for column in self.docs.values():
            del column[mark[0] :]
        for column in self.bad_rows.values():
            del column[mark[1] :]

    def result(self, bytes_read: int) -> ShardResult:
        n_docs, n_bad = self.mark()
        docs = pl.DataFrame(
            {**self.docs, "source": [self.source] * n_docs, "shard": [self.shard] * n_docs}, schema=DOC_SCHEMA
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
            parsed = json.loads(raw, parse_constant=_reject_constant)
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
    if not _valid_unicode(rid):
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
    meta = _parse_meta(rec.get("meta"))
    url = rec.get(o.url_field)
    if not isinstance(url, str):  # optional field of the wrong type: keep the document, keep scalars as text
        url = str(url) if isinstance(url, int | float) and not isinstance(url, bool) else None
    html = o.html or str(meta.get("content_type", "")).lower().startswith(("text/html", "application/xhtml"))
    col.add_doc(position, rid, text, url, {**meta, "id": rid}, html)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")  # Python's json accepts NaN / Infinity by default


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
        view, start = memoryview(data), 0
        while (nl := data.find(b"\n", start)) >= 0:
            self._extend(view[start:nl])
            self._line()
            start = nl + 1
        self._extend(view[start:])

    def _extend(self, piece: memoryview) -> None:
        if self.oversize:
            self.oversize += len(piece)
            return
        self.pending += piece
        if len(self.pending) > self.o.max_doc_bytes:
            self.head, self.oversize, self.pending = bytes(self.pending[:_HEAD]), len(self.pending), bytearray()

    def _line(self) -> None:
        self.line_no += 1
        line, self.pending = self.pending, bytearray()
        position, bad = f"line:{self.line_no}", self.col.bad
        if self.oversize:
            size, self.oversize = self.oversize, 0
            detail = f"line of {size} bytes exceeds max_doc_bytes={self.o.max_doc_bytes}"
            return bad(position, "document_too_large", detail, _sniff_id(self.head, self.o.id_field))
        if self.line_no == 1 and line.startswith(_BOM):  # a BOM is legal only at the start of the file
            del line[:3]
        if not line or line.isspace():
            return None
        if b"\x00" in line:
            return bad(position, "nul_bytes", "raw NUL byte in the line", _sniff_id(line, self.o.id_field))
        try:  # decode per line, strictly: one bad byte costs one record, never the shard
            rec = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
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
                self._line()  # last line without a newline
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


def _read_parquet(stream: BinaryIO, col: _Collector, o: _Options) -> int:
    """Parquet, batch by batch within each row group: returns the file size."""
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
    first_row = 0
    for group in range(pf.num_row_groups):
        row, meta = first_row, pf.metadata.row_group(group)
        try:
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
