"""core/readers.py: read_shard on the torture set, on one real shard per format, on small literal inputs, and on hostile
input (a 1 GiB line, decompression bombs: read in bounded memory and quarantined, never fatal). WARC framing:
tests/core/test_warc.py."""

import gzip
import io
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import polars as pl
import pytest
import zstandard

from curation_assets.core import readers
from curation_assets.core.frames import stable_id
from curation_assets.core.readers import ShardResult, detect_format, html_to_text, read_shard
from tests.core.reading import check_contract, ids, read
from tests.helpers import find_shared_corpus

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
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


def test_a_page_that_main_content_extraction_empties_keeps_its_full_text():
    """A copyright page (all of it a footer to main-content extraction) is short, not broken: its visible text is
    kept, not quarantined as empty_after_extraction."""
    page = (
        "<html><head><title>Copyright</title></head><body><div class='footer'>Copyright &copy; 2001-2023 Python "
        "Software Foundation. All rights reserved.</div></body></html>"
    )
    line = json.dumps({"id": "c", "text": page}) + "\n"
    result = read_shard(io.BytesIO(line.encode()), fmt="jsonl", source="s", shard="s", html=True)
    assert result.quarantine.height == 0
    assert result.docs["text"].to_list() == ["Copyright © 2001-2023 Python Software Foundation. All rights reserved."]


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


# --- a 1 GiB line and a decompression bomb -------------------------------------------------------------------
def piece_sizes(monkeypatch) -> list[int]:
    sizes: list[int] = []
    feed = readers._JsonlSink.feed
    monkeypatch.setattr(readers._JsonlSink, "feed", lambda self, data: sizes.append(len(data)) or feed(self, data))
    return sizes


@pytest.mark.parametrize("level", [1, 19])  # 1: RLE blocks (4 bytes -> 128 KiB each); 19: compressed blocks
def test_a_zstd_bomb_is_decoded_in_bounded_pieces(monkeypatch, level):
    bomb = zstandard.ZstdCompressor(level=level).compress(b"a" * (64 << 20))
    assert len(bomb) < 64 << 10  # one 256 KiB read holds the whole 64 MiB
    sizes = piece_sizes(monkeypatch)
    result = readers.read_shard(io.BytesIO(bomb), fmt="jsonl.zst", source="s", shard="b", max_doc_bytes=1 << 20)
    assert sum(sizes) == 64 << 20 and max(sizes) <= readers.MAX_PIECE + (128 << 10)
    assert result.quarantine["drop_reason"].to_list() == ["document_too_large"]


def test_a_gzip_bomb_is_decoded_in_bounded_pieces(monkeypatch):
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()
    assert len(data) < 256 << 10
    sizes = piece_sizes(monkeypatch)
    result = readers.read_shard(io.BytesIO(data), fmt="jsonl.gz", source="s", shard="b", max_doc_bytes=1 << 20)
    assert sum(sizes) == 64 << 20 and max(sizes) <= readers.MAX_PIECE
    assert result.quarantine["drop_reason"].to_list() == ["document_too_large"]


# Runs read_shard in a fresh interpreter and reports its peak RSS (VmHWM) against its RSS before the read, so the
# import footprint (~300 MB: polars, pyarrow, resiliparse) is not mistaken for the reader's.
_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from curation_assets.core.readers import read_shard

    def status(field):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field + ":"))

    before, t = status("VmRSS"), time.monotonic()
    with open(sys.argv[1], "rb") as f:
        r = read_shard(f, fmt=sys.argv[2], source="hostile", shard="x")
    print(json.dumps({
        "ids": [json.loads(m)["id"] for m in r.docs["meta"]],
        "quarantine": r.quarantine.select("location", "drop_reason", "record_id").rows(),
        "seen": r.records_seen, "before": before, "peak": status("VmHWM"), "seconds": time.monotonic() - t,
    }))
    """
)
MAX_GROWTH = 256 << 20  # the reader holds at most max_doc_bytes (64 MiB) of a line plus a few decoded pieces


def read_in_child(path: Path, fmt: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), fmt],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # no exception, and no OOM kill
    report = json.loads(proc.stdout)
    print(
        f"{path.name}: peak RSS {report['peak'] >> 20} MiB ({(report['peak'] - report['before']) >> 20} MiB over "
        f"the imports), read in {report['seconds']:.1f} s"
    )
    return report


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_a_1_gib_line_between_two_good_ones_is_quarantined_in_bounded_memory(tmp_path):
    path = tmp_path / "huge_line.jsonl.zst"
    chunk = b"a" * (8 << 20)
    with open(path, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as z:
        z.write(b'{"id": "before", "text": "a good document"}\n{"id": "huge", "text": "')
        for _ in range(GIB // len(chunk)):
            z.write(chunk)
        z.write(b'"}\n{"id": "after", "text": "another good document"}\n')
    assert path.stat().st_size < 1 << 20, "built small: the test itself stays low on memory and disk"
    report = read_in_child(path, "jsonl.zst")
    assert report["ids"] == ["before", "after"] and report["seen"] == 3
    assert report["quarantine"] == [["line:2", "document_too_large", "huge"]]
    assert report["peak"] - report["before"] < MAX_GROWTH


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_a_1_gib_gzip_bomb_without_a_newline_is_quarantined_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    chunk = b"\0" * (8 << 20)
    with open(path, "wb") as f:
        gz = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # ~1000:1, deflate's ceiling: ~5 s to build
        f.writelines(gz.compress(chunk) for _ in range(GIB // len(chunk)))
        f.write(gz.flush())
    assert path.stat().st_size < 2 << 20  # one 256 KiB read inflates to ~256 MiB
    report = read_in_child(path, "jsonl.gz")
    assert report["ids"] == [] and report["seen"] == 1
    assert report["quarantine"] == [["line:1", "document_too_large", None]]
    assert report["peak"] - report["before"] < MAX_GROWTH


def test_a_record_whose_meta_nests_too_deep_to_re_encode_is_quarantined_alone():
    """A meta nested 900 levels parses but may not re-encode in a step's deeper stack: that record is quarantined
    (`meta_too_deep`, past 100 levels whatever the stack), the records after it in the file are kept (they were all
    lost to one file-level `read_error`); a meta 99 levels deep is carried."""
    deep = "[" * 900 + "]" * 900
    lines = [json.dumps({"id": f"g{i}", "text": f"good record {i}"}) for i in range(3)]
    lines.append('{"id": "deep", "text": "carried?", "meta": {"x": ' + deep + "}}")
    lines += [json.dumps({"id": f"h{i}", "text": f"later record {i}"}) for i in range(3)]
    res = read_shard(io.BytesIO("\n".join(lines).encode()), fmt="jsonl", source="s", shard="deep.jsonl")
    assert res.docs["text"].to_list() == [f"good record {i}" for i in range(3)] + [
        f"later record {i}" for i in range(3)
    ]
    assert res.quarantine.select("drop_reason", "record_id", "location").rows() == [("meta_too_deep", "deep", "line:4")]
    assert res.records_seen == 7
    ok = '{"id": "ok", "text": "t", "meta": {"x": ' + "[" * 98 + "]" * 98 + "}}"
    assert read_shard(io.BytesIO(ok.encode()), fmt="jsonl", source="s", shard="d").docs.height == 1


# --- what a broken container costs (issue 20 item 3) and page checksums (item 4) ---------------------------------
def jsonl_zst_frames(frames: int, per_frame: int) -> list[bytes]:
    lines = (json.dumps({"id": f"id{i}", "text": f"text number {i} " * 8}) + "\n" for i in range(frames * per_frame))
    text = list(lines)
    return [zstandard.compress("".join(text[f * per_frame : (f + 1) * per_frame]).encode()) for f in range(frames)]


def test_a_corrupt_frame_counts_the_records_and_bytes_it_held():
    """A frame lost whole is one quarantine row, but it held half the shard: `records_lost` estimates them from the
    shard's records per byte and `bytes_lost` is its compressed size, so drop rates see half the shard, not 1/n."""
    good, bad = jsonl_zst_frames(2, 400)
    broken = bytearray(bad)
    broken[20:60] = bytes(40)  # inside the first block: nothing of this frame decodes
    result = read_shard(io.BytesIO(good + bytes(broken)), fmt="jsonl.zst", source="s", shard="s")
    check_contract(result)
    assert result.docs.height == 400
    [row] = result.quarantine.select("location", "drop_reason", "records_lost", "bytes_lost").rows()
    assert row[:2] == ("frame:2", "corrupt_frame") and row[3] == len(bad)
    assert 360 <= row[2] <= 440  # ~400: the frames compress alike
    assert result.records_seen == 400 + row[2]


def test_a_file_with_no_readable_byte_leaves_its_estimate_to_the_caller():
    garbage = b"\x28\xb5\x2f\xfd\x00" + b"\xff" * 300  # a zstd magic, then nothing a decoder accepts
    for fmt, data in (("jsonl.zst", garbage), ("warc", garbage), ("jsonl.zst", b"not zstd at all " * 20)):
        result = read_shard(io.BytesIO(data), fmt=fmt, source="s", shard="s")
        check_contract(result)
        assert result.quarantine.select("records_lost", "bytes_lost").rows() == [(None, len(data))]


def parquet_with_crc(rows: int, row_group_size: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"d{i}" for i in range(rows)], "text": [f"text number {i} " * 20 for i in range(rows)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size, write_page_checksum=True)
    return buf.getvalue()


def flipped_text_pages(data: bytes, group: int, seed: int) -> bytes:
    """One bit flipped in the compressed text pages of row group `group`."""
    import random

    import pyarrow.parquet as pq

    col = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(group).column(1)
    start = min(o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None)
    rng, out = random.Random(seed), bytearray(data)
    at = rng.randrange(start + 30, start + col.total_compressed_size)
    out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


def test_a_bit_flip_in_a_checksummed_parquet_page_is_a_corrupt_row_group_never_altered_text():
    """Page CRCs are verified on read: over 40 single-bit flips in a row group's text pages, no altered text is ever
    passed as good (without verification zstd decodes some flips into other text), and the row group's exact
    row count is what the quarantine row says was lost."""
    clean = parquet_with_crc(3000, 1000)
    texts = read_shard(io.BytesIO(clean), fmt="parquet", source="s", shard="s").docs["text"].to_list()
    caught = 0
    for seed in range(40):
        result = read_shard(io.BytesIO(flipped_text_pages(clean, 1, seed)), fmt="parquet", source="s", shard="s")
        check_contract(result)
        assert set(result.docs["text"]) <= set(texts)  # never a document the file did not hold
        if result.quarantine.height:
            caught += 1
            [row] = result.quarantine.select("location", "drop_reason", "records_lost").rows()
            assert row == ("row:1000", "corrupt_row_group", 1000)
            assert result.docs.height == 2000
    assert caught >= 30  # the rest landed in padding the pages do not cover: the text came back intact


def hostile_parquet(dictionary: bool = False) -> bytes:
    """Rows that pass the bulk expressions and rows that each fail one of them, in several row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    deep: object = 1
    for _ in range(150):
        deep = {"d": deep}
    rows = [
        ("a", "alpha", "u1", None),
        (None, "no id", None, None),
        ("  ", "blank id", None, None),
        ("\x1c", "separator id", None, None),  # whitespace to str.isspace, not to the regex crate's \s
        ('q"x', "an id JSON escapes", None, '{"b": 2, "a": "x"}'),
        ("b", None, None, None),
        ("c", "\x1c\u3000 ", None, None),
        ("d", "nul\x00inside", None, None),
        ("e", "y" * 5000, None, None),  # over max_doc_bytes below
        ("f", "plain meta", "u", "plain"),
        ("g", "list meta", None, "[1, 2]"),
        ("h", "NaN meta", None, '{"a": NaN}'),
        ("i", "surrogate meta", None, '{"a": "\\ud800"}'),
        ("j", "deep meta", None, json.dumps(deep)),
        ("k", "<p>html <b>page</b></p>", None, '{"content_type": "TEXT/HTML; charset=x"}'),
        ("l", "meta with its own id", None, '{"id": "inner", "z": -0.0, "f": 1e5}'),
        ("m", "sentinel-like meta", None, '{"s": "\\u0000id\\u0000"}'),
        ("n", "shared meta", "u2", '{"b": 2, "a": "x"}'),
        ("o", "unicode meta", None, '{"u": "é\\n", "n": null, "x": [1, {"y": true}]}'),
    ]
    table = pa.table({name: list(col) for name, col in zip(("id", "text", "url", "meta"), zip(*rows))})
    if dictionary:
        table = table.set_column(0, "id", table.column("id").dictionary_encode())
    buf = io.BytesIO()
    pq.write_table(pa.concat_tables([table] * 3), buf, row_group_size=7, write_page_checksum=True)
    return buf.getvalue()


@pytest.mark.parametrize("dictionary", [False, True])
def test_parquet_rows_checked_in_bulk_read_exactly_as_row_by_row(monkeypatch, dictionary):
    """The bulk path (a row group read whole, checked as expressions) yields the frames the per-record path yields:
    the rows that fail the expressions go through `_record`, in row order, and only they."""
    data = hostile_parquet(dictionary)
    calls = []
    per_record = readers._record
    monkeypatch.setattr(readers, "_record", lambda col, rec, *a: calls.append(rec) or per_record(col, rec, *a))

    def both() -> tuple[ShardResult, ShardResult]:
        bulk = read_shard(io.BytesIO(data), fmt="parquet", source="s", shard="x", max_doc_bytes=4000)
        with monkeypatch.context() as m:
            m.setattr(readers, "_read_group", lambda *a: None)  # every row group row by row
            return bulk, read_shard(io.BytesIO(data), fmt="parquet", source="s", shard="x", max_doc_bytes=4000)

    bulk, rowwise = both()
    check_contract(bulk)
    assert bulk.docs.equals(rowwise.docs) and bulk.quarantine.equals(rowwise.quarantine)
    assert bulk.records_seen == rowwise.records_seen == 57
    # in bulk, each copy of the 19 rows sends these 12 row by row (meta "plain", "[1, 2]" and NaN pass: meta_raw)
    failing = [None, "  ", "\x1c", 'q"x', "b", "c", "d", "e", "i", "j", "k", "m"]
    assert [rec["id"] for rec in calls[: 3 * 12]] == failing * 3 and len(calls) == 3 * 12 + 57


def test_a_clean_parquet_shard_is_never_read_row_by_row(monkeypatch):
    data = parquet_with_crc(3000, 1000)
    monkeypatch.setattr(readers, "_record", lambda *a: pytest.fail("a clean row went row by row"))
    result = read_shard(io.BytesIO(data), fmt="parquet", source="s", shard="x")
    check_contract(result)
    assert result.docs.height == 3000 and result.quarantine.is_empty()
    assert result.docs["doc_id"][1234] == stable_id("s", "x", "row:1234")
    assert result.docs["meta"][1234] == '{"id": "d1234"}'


def test_jsonl_reads_the_same_whatever_the_read_boundaries(monkeypatch):
    """Lines split anywhere across reads (pending lines, oversize lines, a BOM, NULs, CRLF, blank lines) read as
    when whole."""
    lines = [
        b'\xef\xbb\xbf{"id": "bom", "text": "first"}',
        b'{"id": "nul", "text": "a\x00b"}',
        b'{"id": "esc", "text": "a\\u0000b"}',
        b"",
        b"   ",
        b'  {"id": "lead", "text": "leading blanks"}',
        b'{"id": "long", "text": "' + b"x" * 300 + b'"}',
        b'{"id": "crlf", "text": "t"}\r',
        b'{"id": "bad\xff", "text": "x"}',
        b'{"id": "ok", "text": "caf\xc3\xa9"}',
        b'{"id": "last", "text": "no newline"}',
    ]
    data = b"\n".join(lines)
    results = []
    for chunk in (1, 2, 7, 64, 1 << 18):
        monkeypatch.setattr(readers, "CHUNK", chunk)
        results.append(read_shard(io.BytesIO(data), fmt="jsonl", source="s", shard="x", max_doc_bytes=200))
    check_contract(results[0])
    assert ids(results[0]) == ["bom", "esc", "lead", "crlf", "ok", "last"]
    assert results[0].quarantine.select("location", "drop_reason").rows() == [
        ("line:2", "nul_bytes"),
        ("line:7", "document_too_large"),
        ("line:9", "invalid_utf8"),
    ]
    for other in results[1:]:
        assert other.docs.equals(results[0].docs) and other.quarantine.equals(results[0].quarantine)


def test_records_sharing_a_meta_keep_their_own_id_and_value_types():
    """Metas repeat across a shard's records and are serialised once per distinct meta: values equal in Python but
    printed differently (1, 1.0, true; 0.0, -0.0) and ids JSON escapes still come out as `meta_json` prints them."""
    from curation_assets.core.frames import meta_json

    metas = [
        {"k": 1},
        {"k": 1.0},
        {"k": True},
        {"k": 0.0},
        {"k": -0.0},
        {"k": 1},
        {"k": 1},
        {"k": "1"},
        {"id": [1], "k": 1},
    ]
    rids = ["a", "b", "c", "d", "e", 'q"f', "g\\h\ti", "j", "k"]
    data = "".join(json.dumps({"id": r, "text": "t", "meta": m}) + "\n" for r, m in zip(rids, metas)).encode()
    result = read_shard(io.BytesIO(data), fmt="jsonl", source="s", shard="x")
    check_contract(result)
    assert result.docs["meta"].to_list() == [meta_json({**m, "id": r}) for r, m in zip(rids, metas)]
