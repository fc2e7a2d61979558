"""core/warc.py: WARC framing (records, Content-Length, resync after a broken record), through read_shard. The torture
set's WARC files and a real WARC shard against its JSONL twin: test_readers.py."""

import io

from curation_assets.core.readers import read_shard
from tests.core.reading import check_contract, ids


def test_plain_warc_resyncs_after_a_bad_content_length():
    def record(n: int, body: bytes, declared: int | None = None) -> bytes:
        http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n" + body
        head = (
            f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{n}>\r\n"
            f"WARC-Target-URI: http://example.invalid/{n}\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {declared or len(http)}\r\n\r\n"
        )
        return head.encode() + http + b"\r\n\r\n"

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
