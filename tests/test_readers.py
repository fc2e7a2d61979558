"""readers.read_shard on the torture set, on one real shard per format, and on small literal inputs."""

import gzip
import io
import json
from pathlib import Path

import polars as pl
import pytest

from curation_assets.core.frames import DOC_SCHEMA, QUARANTINE_SCHEMA, stable_id
from curation_assets.core.readers import ShardResult, detect_format, html_to_text, read_shard

from conftest import find_shared_corpus

CORPUS = find_shared_corpus() or Path("/nonexistent/shared/corpus")
TORTURE = CORPUS / "torture"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is absent")

EXPECTED = (
    {f["file"]: f for f in json.loads((TORTURE / "expected.json").read_text())["files"]} if TORTURE.is_dir() else {}
)

# Quarantine rows emitted per torture file: one per `bad` item, except blank / whitespace-only lines (skipped,
# not counted) and `may_yield` records we keep (huge_doc line 2 under the default 64 MiB limit, nul_bytes line 2
# with its NULs stripped, the three long lines, bad_fields line 14 with meta kept as meta_raw and url stringified).
QUARANTINED = {
    "truncated.jsonl.zst": 1,  # line 43: truncated_stream
    "truncated.jsonl.gz": 1,  # line 65: truncated_stream
    "corrupt_middle.jsonl.zst": 1,  # frame:3 corrupt_frame; frames 4-6 recovered by resync
    "invalid_json.jsonl.zst": 12,  # lines 14/15 blank; NaN and raw control char rejected (strict JSON)
    "invalid_utf8.jsonl.zst": 8,  # quarantined, not repaired; mid-file BOM -> invalid_json
    "bad_fields.jsonl.zst": 11,  # numeric id quarantined (id_wrong_type), not coerced
    "huge_doc.jsonl.zst": 0,
    "nul_bytes.jsonl.zst": 3,  # raw NUL lines -> nul_bytes
    "long_line_nospace.jsonl.zst": 0,
    "wrong_schema.parquet": 1,  # file: schema_mismatch
    "text_wrong_type.parquet": 1,  # file: text_column_wrong_type
    "null_text.parquet": 4,
    "bad_content_length.warc.gz": 2,  # records 2 and 3: content_length_mismatch
    "truncated.warc.gz": 1,  # record 8: truncated_record
    "empty.jsonl.zst": 0,  # an empty file yields no rows at all
    "empty_frame.jsonl.zst": 0,
    "not_zstd.jsonl.zst": 0,  # sniffed as plain JSONL: its 5 records are yielded
    "multi_frame.jsonl.zst": 0,
    "multi_member.jsonl.gz": 0,
    "bom_crlf.jsonl": 0,
}


# Bad lines that cannot name their id: a Python repr with single quotes, and a top-level array.
UNNAMEABLE = {"924b7dbb6ff5e58d38c0ba855a31cb7fbd11acd0", "14090a0507b432ab76598cd180a1fa4c9e07d27e"}


def read(path: Path, **kwargs) -> ShardResult:
    with path.open("rb") as fh:
        return read_shard(fh, fmt=detect_format(path.name), source="test", shard=path.name, **kwargs)


def ids(result: ShardResult) -> list[str]:
    return [json.loads(m)["id"] for m in result.docs["meta"]]


def check_contract(result: ShardResult) -> None:
    assert result.docs.schema == pl.Schema(DOC_SCHEMA)
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert result.records_seen == result.docs.height + result.quarantine.height
    for text in result.docs["text"]:
        text.encode("utf-8")
        assert "\x00" not in text and text.strip()
    for column in ("detail", "record_id", "location", "drop_reason"):
        for value in result.quarantine[column].drop_nulls():
            value.encode("utf-8")
    assert result.quarantine["drop_reason"].null_count() == 0


def location(bad: dict) -> str:
    return next((f"{key}:{bad[key]}" for key in ("line", "row", "record", "frame") if key in bad), "file")


@needs_corpus
def test_torture_set_is_fully_covered():
    on_disk = {p.name for p in TORTURE.iterdir()} - {"README.md", "expected.json"}
    assert on_disk == set(EXPECTED) == set(QUARANTINED)


@needs_corpus
@pytest.mark.parametrize("name", sorted(QUARANTINED))
def test_torture_file(name):
    expected = EXPECTED[name]
    result = read(TORTURE / name)
    check_contract(result)
    yielded = set(ids(result))
    assert set(expected["must_yield"]) <= yielded
    assert not set(expected["must_not_yield"]) & yielded
    assert yielded <= set(expected["must_yield"]) | set(expected["may_yield"])
    assert len(yielded) == result.docs.height

    kept_may = set(expected["may_yield"]) & yielded
    quarantined_bad = [
        b
        for b in expected["bad"]
        if not b["reason"].startswith(("blank line", "whitespace-only line")) and b.get("id") not in kept_may
    ]
    assert result.quarantine.height == QUARANTINED[name] == len(quarantined_bad)
    assert set(result.quarantine["location"]) == {location(b) for b in quarantined_bad}
    named = {b["id"] for b in quarantined_bad if b.get("id")}
    assert named - set(result.quarantine["record_id"]) <= UNNAMEABLE


@needs_corpus
def test_torture_reasons():
    reasons = {
        name: read(TORTURE / name).quarantine.select("location", "drop_reason").rows()
        for name in (
            "truncated.jsonl.zst",
            "corrupt_middle.jsonl.zst",
            "bad_content_length.warc.gz",
            "null_text.parquet",
        )
    }
    assert reasons["truncated.jsonl.zst"] == [("line:43", "truncated_stream")]
    assert reasons["corrupt_middle.jsonl.zst"] == [("frame:3", "corrupt_frame")]
    assert reasons["bad_content_length.warc.gz"] == [
        ("record:2", "content_length_mismatch"),
        ("record:3", "content_length_mismatch"),
    ]
    assert [r for _, r in reasons["null_text.parquet"]] == ["missing_text", "empty_text", "empty_text", "missing_id"]


@needs_corpus
def test_huge_line_over_the_limit_is_quarantined_unparsed():
    result = read(TORTURE / "huge_doc.jsonl.zst", max_doc_bytes=2**20)
    assert result.quarantine.select("location", "drop_reason", "record_id").rows() == [
        ("line:2", "document_too_large", "d247a145a1efdd784ada5cb0a1fa2caf7e6a91e2")
    ]
    assert set(ids(result)) == set(EXPECTED["huge_doc.jsonl.zst"]["must_yield"])


@needs_corpus
def test_nul_escapes_are_stripped_and_flagged():
    result = read(TORTURE / "nul_bytes.jsonl.zst")
    meta = {m["id"]: m for m in map(json.loads, result.docs["meta"])}
    assert meta["31a3aa165e68689b306e611c418a71e8422eddf8"]["nul_stripped"] == 3


def manifest_docs(path: str) -> int:
    files = json.loads((CORPUS / "manifest.json").read_text())["files"]
    return next(f["docs"] for f in files if f["path"] == path)


def check_clean_shard(path: str, *, html: bool) -> ShardResult:
    result = read(CORPUS / path)
    check_contract(result)
    assert result.quarantine.height == 0
    assert result.docs.height == manifest_docs(path)
    assert result.bytes_read == (CORPUS / path).stat().st_size
    assert result.docs["doc_id"].n_unique() == result.docs.height
    assert result.docs["url"].null_count() == 0
    if html:
        texts = result.docs["text"]
        assert not texts.str.contains('<div class="', literal=True).any()
        # pages documenting HTML/XML legitimately quote a few tags in their prose
        assert texts.str.contains("<html|<div|<body|<head|<!DOCTYPE").sum() <= 0.01 * len(texts)
        assert texts.str.len_chars().median() > 1000
    return result


@pytest.fixture(scope="module")
def web_jsonl():
    return check_clean_shard("data/web/part-00000.jsonl.zst", html=True)


@needs_corpus
def test_real_jsonl_zst_shard(web_jsonl):
    assert json.loads(web_jsonl.docs["meta"][0])["package"]


@needs_corpus
def test_real_parquet_shard():
    check_clean_shard("data/web/part-00003.parquet", html=True)


@needs_corpus
def test_real_warc_shard_matches_its_jsonl_twin(web_jsonl):
    result = check_clean_shard("variants/web-warc/part-00000.warc.gz", html=True)
    from_warc = dict(zip(ids(result), result.docs["text"]))
    from_jsonl = dict(zip(ids(web_jsonl), web_jsonl.docs["text"]))
    assert from_warc == from_jsonl
    meta = json.loads(result.docs["meta"][0])  # licence and package come from the concurrent metadata record
    assert meta["license"] and meta["package"] and meta["content_type"] == "text/html"


def test_detect_format():
    assert [detect_format(n) for n in ("a.jsonl", "a.JSONL.GZ", "a.jsonl.zst", "a.parquet", "a.warc", "a.warc.gz")] == [
        "jsonl",
        "jsonl.gz",
        "jsonl.zst",
        "parquet",
        "warc",
        "warc",
    ]
    with pytest.raises(ValueError):
        detect_format("a.csv")


def test_jsonl_gz_with_one_bad_line(tmp_path):
    path = tmp_path / "part-00000.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "a", "text": "first", "url": "u://a", "meta": {"k": 1}}) + "\n")
        fh.write('{"id": "b", "text": "broken",\n')
        fh.write("\n")
        fh.write(json.dumps({"id": "c", "text": "third", "meta": '{"k": 3}'}) + "\n")
    result = read(path)
    check_contract(result)
    assert result.docs.select("doc_id", "text", "url", "source", "shard").rows() == [
        (stable_id("test", path.name, "line:1"), "first", "u://a", "test", path.name),
        (stable_id("test", path.name, "line:4"), "third", None, "test", path.name),
    ]
    assert [json.loads(m) for m in result.docs["meta"]] == [{"k": 1, "id": "a"}, {"k": 3, "id": "c"}]
    assert result.quarantine.select("location", "drop_reason", "record_id").rows() == [("line:2", "invalid_json", "b")]
    assert result.records_seen == 3


def test_parquet_with_a_null_text_row(tmp_path):
    path = tmp_path / "part-00001.parquet"
    pl.DataFrame({"id": ["a", "b", "c"], "text": ["alpha", None, "gamma"], "url": ["u1", "u2", None]}).write_parquet(
        path
    )
    result = read(path)
    check_contract(result)
    assert result.docs.select("text", "url").rows() == [("alpha", "u1"), ("gamma", None)]
    assert ids(result) == ["a", "c"]
    assert result.quarantine.select("location", "drop_reason", "record_id").rows() == [("row:1", "missing_text", "b")]


def test_html_to_text_on_a_literal_page():
    page = (
        "<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>"
        "<script>var x = 1;</script></head><body><nav><a href='/'>Home</a> | <a href='/x'>Other</a></nav>"
        "<main><h1>Caf&eacute; guide</h1><p>First paragraph of the article body, long enough to be content.</p>"
        "<ul><li>one</li><li>two</li></ul></main></body></html>"
    )
    text = html_to_text(page)
    assert "Café guide" in text and "First paragraph of the article body" in text
    assert "Home" not in text  # main-content extraction drops the navigation bar
    assert "<" not in text and "color:red" not in text and "var x" not in text


def test_html_record_with_no_visible_text_is_quarantined():
    line = json.dumps({"id": "h", "text": "<html><body><script>x()</script></body></html>"}) + "\n"
    result = read_shard(io.BytesIO(line.encode()), fmt="jsonl", source="s", shard="s", html=True)
    assert result.quarantine.select("drop_reason", "record_id").rows() == [("empty_after_extraction", "h")]


def test_corrupt_gzip_member_is_skipped_and_later_members_recovered():
    def member(first: int) -> bytes:
        lines = (json.dumps({"id": f"id{i}", "text": f"text {i}"}) + "\n" for i in range(first, first + 10))
        return gzip.compress("".join(lines).encode())

    broken = bytearray(member(10))
    broken[len(broken) // 2 : len(broken) // 2 + 4] = b"\xff\xff\xff\xff"
    result = read_shard(io.BytesIO(member(0) + bytes(broken) + member(20)), fmt="jsonl.gz", source="s", shard="s")
    check_contract(result)
    assert ids(result) == [f"id{i}" for i in [*range(10), *range(20, 30)]]
    assert result.quarantine.select("location", "drop_reason").rows() == [("frame:2", "corrupt_frame")]


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
