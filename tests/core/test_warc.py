"""core/warc.py: WARC framing (records, Content-Length, resync after a broken record), through read_shard. The torture
set's WARC files and a real WARC shard against its JSONL twin: test_readers.py."""

import gzip
import io

from curation_assets.core.readers import read_shard
from curation_assets.core.warc import WarcSink
from tests.core.reading import check_contract, ids


def record(n: int, body: bytes, declared: int | None = None) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n" + body
    head = (
        f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{n}>\r\n"
        f"WARC-Target-URI: http://example.invalid/{n}\r\nContent-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {declared or len(http)}\r\n\r\n"
    )
    return head.encode() + http + b"\r\n\r\n"


def test_plain_warc_resyncs_after_a_bad_content_length():
    data = (
        record(1, b"<html><body><p>caf\xe9 one</p></body></html>")
        + record(2, b"<p>two</p>", declared=400)
        + record(3, b"<html><body><p>three</p></body></html>")
        + record(4, b"<p>four</p>")
    )
    result = read_shard(io.BytesIO(data), fmt="warc", source="s", shard="s")
    check_contract(result)
    assert result.docs.select("text", "url").rows() == [
        ("café one", "http://example.invalid/1"),
        ("three", "http://example.invalid/3"),
        ("four", "http://example.invalid/4"),
    ]
    assert ids(result) == ["<urn:uuid:1>", "<urn:uuid:3>", "<urn:uuid:4>"]
    assert result.quarantine.select("location", "drop_reason").rows() == [("record:2", "content_length_mismatch")]


def test_megabytes_of_bare_version_lines_are_skipped_in_a_bounded_number_of_framing_steps(monkeypatch):
    """Issue 20 item 5: 5 MB of `WARC/1.0` lines between two records once took > 400 s (each line rescanned the
    buffer for a blank line megabytes away). Work is counted, not timed: framing steps per record stay bounded."""
    steps = 0
    frame = WarcSink._next_record

    def counted(self, unfinished):
        nonlocal steps
        steps += 1
        assert steps < 1000, "recovery is not linear: more than 1000 framing steps for 2 records"
        return frame(self, unfinished)

    monkeypatch.setattr(WarcSink, "_next_record", counted)
    filler = b"WARC/1.0\r\n" * 500_000
    for data in (record(1, b"<p>one</p>") + filler + record(2, b"<p>two</p>"),):
        for container in (data, gzip.compress(data)):
            steps = 0
            result = read_shard(io.BytesIO(container), fmt="warc", source="s", shard="s")
            check_contract(result)
            assert result.docs["text"].to_list() == ["one", "two"]
            assert result.quarantine.height == 0  # bare version lines start no record: debris, not a record


def test_a_header_interrupted_by_the_next_record_is_quarantined_alone():
    broken = b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:2>\r\nContent-Le"
    data = record(1, b"<p>one</p>") + broken + b"\n" + record(3, b"<p>three</p>")
    result = read_shard(io.BytesIO(data), fmt="warc", source="s", shard="s")
    check_contract(result)
    assert ids(result) == ["<urn:uuid:1>", "<urn:uuid:3>"]
    assert result.quarantine.select("location", "drop_reason", "record_id").rows() == [
        ("record:2", "invalid_record", "<urn:uuid:2>")
    ]
