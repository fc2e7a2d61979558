"""WARC records -> documents, for `readers.read_shard`.

Framing is done here, not by warcio: a record is its header block plus exactly `Content-Length` bytes plus CRLFCRLF.
A record whose declared length does not land on that terminator, or that a gzip member / the input ends inside,
is quarantined and reading resumes at the next `WARC/1.x` line (after a gzip member ends, at the next member),
where warcio alone would read into the next record or give up. Each well-framed record is then parsed by warcio.
Only `response` records are documents, numbered 1-based (`record:N`); a broken record whose type cannot be read
counts as one. A `metadata` record concurrent to the previous response adds its `meta` object to that document.
"""

from __future__ import annotations

import io
import json
import re
from typing import Protocol

from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from warcio.archiveiterator import ArchiveIterator


class Collector(Protocol):
    """What a WARC sink writes into (`readers._Collector`): documents, quarantine rows and rollback marks."""

    def bad(
        self,
        location: str,
        reason: str,
        detail: str,
        record_id: str | None = None,
        *,
        records: int | None = 1,
        nbytes: int = 0,
    ) -> None: ...

    def add_doc(
        self, position: str, record_id: str, text: str, url: str | None, meta: dict, html: bool
    ) -> int | None: ...

    def merge_meta(self, index: int, extra: dict) -> None: ...

    def mark(self) -> tuple[int, int]: ...

    def rollback(self, mark: tuple[int, int]) -> None: ...


_RECORD_START = re.compile(rb"(?:^|\n)(WARC/1\.[01]\r\n)")
_MAX_HEADER = 1 << 20  # a header block that has not ended by then is debris
_TERMINATOR = b"\r\n\r\n"
# What ends a header block: its blank line, or (broken) the next version line. One scan finds whichever comes first,
# so a run of bare version lines is skipped line by line in linear time, never rescanned up to a distant blank line.
_HEADER_STOP = re.compile(rb"\r\n\r\n|\nWARC/1\.[01]\r\n")
_VERSION_RUN = re.compile(rb"(?:WARC/1\.[01]\r\n)+")


def _fields(header: bytes) -> dict[str, str]:
    lines = header.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    """(`type/subtype` lower-cased, charset or None) of a Content-Type header."""
    if not content_type:
        return "", None
    mime, *params = content_type.split(";")
    charset = next((p.split("=", 1)[1].strip(" \"'") for p in params if p.strip().lower().startswith("charset=")), None)
    return mime.strip().lower(), charset or None


def _decode(payload: bytes, charset: str | None) -> str:
    """HTTP charset, else Resiliparse's detection (HTML meta tag, then uchardet); then UTF-8 / cp1252 fallbacks and
    replacement, so the result always re-encodes as UTF-8."""
    try:
        return bytes_to_str(payload, charset or detect_encoding(payload, from_html_meta=True), errors="replace")
    except LookupError:  # an unknown charset label in the header
        return bytes_to_str(payload, detect_encoding(payload, from_html_meta=True), errors="replace")


class WarcSink:
    """Consumes decoded WARC bytes (events of `readers._framed` / `readers._plain`) and fills a `Collector`."""

    def __init__(self, col: Collector, max_doc_bytes: int):
        self.col, self.max_doc_bytes = col, max_doc_bytes
        self.buf = bytearray()
        self.skip = 0  # bytes still to drop of an oversized record
        self.responses = 0
        self.last: tuple[str | None, int] | None = None  # (WARC-Record-ID, doc index) of the last response document
        self.commit = (col.mark(), 0)

    def feed(self, data: bytes) -> None:
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = memoryview(data)[dropped:]
        self.buf += data
        self._drain()

    def _drain(self, unfinished: tuple[str, str] | None = None) -> int:
        """Handle every framed record in the buffer; returns the quarantine rows written.

        With `unfinished` = (reason, detail) no more input will come for this buffer (a gzip member or the input
        ended): a record still incomplete is quarantined with that reason and parsing resumes after its start.
        """
        before = self.col.mark()[1]
        while self._next_record(unfinished):
            pass
        if unfinished is not None:
            self.buf.clear()
            self.skip = 0
        return self.col.mark()[1] - before

    def _position(self, fields: dict[str, str] | None) -> str | None:
        """`record:N` if the record is (or may be) a response, else None."""
        if fields is not None and fields.get("warc-type", "response") != "response":
            return None
        self.responses += 1
        return f"record:{self.responses}"

    def _next_record(self, unfinished: tuple[str, str] | None) -> bool:
        """Frame and handle one record from the buffer; False when it needs more input (or holds no record)."""
        buf = self.buf
        match = _RECORD_START.search(buf)
        if match is None:  # debris of a broken record: keep only what could begin a version line
            del buf[: max(0, len(buf) - 16)]
            return False
        del buf[: match.start(1)]
        stop = _HEADER_STOP.search(buf, 1, _MAX_HEADER + len(_TERMINATOR))
        if stop is not None and stop.group() != _TERMINATOR:  # the header block never ended
            header = bytes(buf[: stop.start()])
            if b":" in header:  # a header with fields is a broken record; version lines without fields are debris
                self._bad(_fields(header), "invalid_record", "header block interrupted by the next WARC/1.x line")
                del buf[: stop.start() + 1]
            else:  # skip the whole run of bare version lines at once, up to the last one
                del buf[: _VERSION_RUN.match(buf).end() - len(match.group(1))]
            return True
        header_end = -1 if stop is None else stop.start()
        if header_end < 0:
            if len(buf) <= _MAX_HEADER:  # else: a header block that never ends is debris
                if unfinished is None:
                    return False  # wait for the rest of the header
                self._bad(None, *unfinished)
        else:
            fields = _fields(bytes(buf[:header_end]))
            length = fields.get("content-length", "")
            end = header_end + len(_TERMINATOR) + int(length) if length.isdigit() else -1
            if end < 0:
                self._bad(fields, "invalid_record", "missing or invalid Content-Length")
            elif int(length) > self.max_doc_bytes:  # counted off as it streams by, never buffered
                self._bad(fields, "document_too_large", f"Content-Length {length} exceeds max_doc_bytes")
                self.skip = max(0, end + len(_TERMINATOR) - len(buf))
                del buf[: end + len(_TERMINATOR)]
                return True
            elif len(buf) < end + len(_TERMINATOR):
                if unfinished is None:
                    return False  # wait for the rest of the record
                self._bad(fields, *unfinished)
            elif buf[end : end + len(_TERMINATOR)] != _TERMINATOR:
                detail = f"Content-Length {length} does not end at the record end"
                self._bad(fields, "content_length_mismatch", detail)
            else:
                record = bytes(buf[:end]) + _TERMINATOR
                del buf[: end + len(_TERMINATOR)]
                self._record(record, fields)
                return True
        del buf[:1]  # resync on the next version line
        return True

    def _bad(self, fields: dict[str, str] | None, reason: str, detail: str) -> None:
        position = self._position(fields)
        if position is not None:
            fields = fields or {}
            self.col.bad(position, reason, detail, fields.get("x-corpus-doc-id") or fields.get("warc-record-id"))

    def _record(self, record: bytes, fields: dict[str, str]) -> None:
        position = self._position(fields)
        if position is None:
            if fields.get("warc-type") == "metadata" and self.last and fields.get("warc-concurrent-to") == self.last[0]:
                self._merge_metadata(record)
            return
        record_id = fields.get("x-corpus-doc-id") or fields.get("warc-record-id")
        if not record_id:
            return self.col.bad(position, "missing_id", "no X-Corpus-Doc-Id or WARC-Record-ID header")
        try:
            parsed = next(ArchiveIterator(io.BytesIO(record)))
            payload = parsed.content_stream().read()
        except Exception as exc:  # warcio raises its own and stdlib errors on malformed HTTP blocks
            return self.col.bad(position, "invalid_record", f"{type(exc).__name__}: {exc}", record_id)
        http = parsed.http_headers
        mime, charset = _media_type(http.get_header("Content-Type") if http else fields.get("content-type"))
        html = "html" in mime
        if mime and not (html or mime.startswith("text/") or "xml" in mime or "json" in mime):
            return self.col.bad(position, "unsupported_content_type", f"payload is {mime}", record_id)
        url = fields.get("x-corpus-url") or fields.get("warc-target-uri")
        meta = {"id": record_id, **({"content_type": mime} if mime else {})}
        index = self.col.add_doc(position, record_id, _decode(payload, charset), url, meta, html)
        self.last = None if index is None else (fields.get("warc-record-id"), index)

    def _merge_metadata(self, record: bytes) -> None:
        # Optional enrichment (licence, package, ...): a metadata record that does not parse is just not merged.
        try:
            obj = json.loads(next(ArchiveIterator(io.BytesIO(record))).content_stream().read().decode("utf-8"))
        except Exception:
            return
        if isinstance(obj, dict) and isinstance(obj.get("meta"), dict):
            self.col.merge_meta(self.last[1], obj["meta"])

    def end(self, frame: int) -> None:
        # Each gzip member is complete and verified here, so a record it leaves unfinished declared too much.
        self._drain(("content_length_mismatch", f"gzip member {frame} ends before the declared Content-Length"))
        self.commit = (self.col.mark(), self.responses)

    def corrupt(self, frame: int, detail: str, nbytes: int) -> None:
        mark, self.responses = self.commit
        self.col.rollback(mark)
        self.buf.clear()
        self.skip, self.last = 0, None
        detail = f"{detail}; records decoded from this member are discarded"
        self.col.bad(f"frame:{frame}", "corrupt_frame", detail, records=None, nbytes=nbytes)
        self.commit = (self.col.mark(), self.responses)

    def finish(self, truncated: tuple[int, str, int] | None) -> None:
        detail = "input ends inside the record" if truncated is None else truncated[1]
        if not self._drain(("truncated_record", detail)) and truncated is not None:
            nbytes = truncated[2]
            self.col.bad(
                f"frame:{truncated[0]}", "truncated_stream", detail, records=None if nbytes else 1, nbytes=nbytes
            )
