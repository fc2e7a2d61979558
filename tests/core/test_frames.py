"""core/frames.py: drop marking and counting, stable ids and the one seeded hash. (The metadata every step emits is
built from these counts: tests/steps/test_metadata.py.)"""

import polars as pl
import pyarrow.parquet as pq
import pytest

from curation_assets.core.frames import (
    TOKEN_SAMPLE_RATE,
    TokenEstimate,
    approx,
    conform,
    drop_bytes,
    drop_counts,
    drop_tokens,
    funnel_markdown,
    mark_dropped,
    parquet_bytes,
    range_frames,
    read_parquet_bytes,
    row_ranges,
    sample_tokens,
    seeded_hash,
    seeded_hash_expr,
    split_kept,
    stable_id,
    token_sample,
)


def test_first_failing_rule_wins_and_nulls_never_drop():
    df = pl.DataFrame({"n": [1, 5, None, 50]})
    marked = mark_dropped(df, {"too_small": pl.col("n") < 3, "odd": pl.col("n") % 2 == 1})
    assert marked["drop_reason"].to_list() == ["too_small", "odd", None, None]
    kept, dropped = split_kept(marked)
    assert kept.columns == ["n"] and kept["n"].to_list() == [None, 50]
    assert drop_counts(dropped) == {"odd": 1, "too_small": 1}


def test_stable_id_depends_only_on_its_parts():
    assert stable_id("web", "part-0.jsonl", "line:3") == stable_id("web", "part-0.jsonl", "line:3")
    assert stable_id("web", "part-0.jsonl", "line:3") != stable_id("web", "part-0.jsonl", "line:4")
    assert len(stable_id("x")) == 32


def test_drop_tokens_count_only_rows_with_tokens():
    dropped = pl.DataFrame({"drop_reason": ["short", "short", "lang"], "n_tokens": [5, 7, None]})
    assert drop_tokens(dropped) == {"lang": 0, "short": 12}
    assert drop_tokens(dropped.drop("n_tokens")) == {} and drop_counts(dropped.head(0)) == {}


def test_funnel_without_tokens_has_empty_token_cells():
    lines = funnel_markdown(4, 3, {"empty": 1}, None, {}).splitlines()
    assert lines[2] == f"| in | 4 |  | 100.0% `{'█' * 10}` |"
    assert lines[3] == "| dropped: empty | 1 |  | 25.0% `██        ` |"
    assert lines[4] == "| **kept** | 3 |  | 75.0% `████████  ` |"


def test_drop_bytes_are_the_dropped_texts_utf8_bytes_or_the_quarantines_bytes_lost():
    dropped = pl.DataFrame({"drop_reason": ["short", "short", "lang"], "text": ["ab", "é", None]})
    assert drop_bytes(dropped) == {"lang": 0, "short": 4}  # é is two bytes
    quarantine = pl.DataFrame({"drop_reason": ["truncated_stream", "invalid_json"], "bytes_lost": [4096, 0]})
    assert drop_bytes(quarantine) == {"invalid_json": 0, "truncated_stream": 4096}
    assert drop_bytes(dropped.drop("text")) == {} and drop_bytes(dropped.head(0)) == {}


def test_the_token_sample_is_a_seeded_property_of_each_document_and_never_empty():
    ids = pl.Series([f"doc-{i}" for i in range(3200)])
    picked = token_sample(ids)
    assert 60 < picked.sum() < 140  # about 1 in TOKEN_SAMPLE_RATE
    # the same documents whichever set (shard, batch) they are in
    assert token_sample(ids.slice(100, 1000)).to_list() == picked.slice(100, 1000).to_list()
    [alone] = [i for i in range(3200) if not picked[i]][:1]
    assert token_sample(ids.slice(alone, 1)).to_list() == [True]  # a set none of whose hashes is low: its lowest
    assert token_sample(pl.Series([], dtype=pl.String)).len() == 0
    assert not (picked & ~token_sample(ids, 8)).any() and token_sample(ids, 8).sum() > 3 * picked.sum()  # nested


def test_an_estimate_scales_each_groups_bytes_by_its_samples_tokens_per_byte():
    words = " ".join(["curation"] * 50)
    docs = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(640)],
            "text": [words if i % 2 else words.upper() for i in range(640)],
            "drop_reason": ["short" if i % 2 else "lang" for i in range(640)],
        }
    )
    count = lambda texts: [len(t.split()) * (2 if t.isupper() else 1) for t in texts]  # noqa: E731
    samples = [sample_tokens(docs.slice(0, 320), count), sample_tokens(docs.slice(320), count)]  # two batches
    sample = pl.concat(samples)
    assert sample["docs"].sum() == token_sample(docs["doc_id"]).sum() >= 640 // TOKEN_SAMPLE_RATE // 2
    est = TokenEstimate.of(samples, "words", dropped_bytes={"lang": 4_000, "short": 4_000, "unsampled": 800})
    # each reason at its own rate (lang's texts cost twice the tokens), a reason without a sample at the pooled one
    assert est.dropped["lang"] == round(4_000 * 100 / len(words)) and est.dropped["short"] == est.dropped["lang"] // 2
    assert est.dropped["unsampled"] == round(800 * sample["tokens"].sum() / sample["bytes"].sum()) and est.kept is None
    assert est.details()["tokenizer"] == "words" and est.details()["sample_docs"] == sample["docs"].sum()
    kept = TokenEstimate.of([sample_tokens(docs.drop("drop_reason"), count)], "words", kept_bytes=len(words) * 640)
    assert abs(kept.kept - 75 * 640) / (75 * 640) < 0.2  # the kept rows' estimate: one group
    assert TokenEstimate.of([], "words", kept_bytes=100).kept is None  # nothing sampled: no estimate, never a guess


def test_an_estimate_reads_as_one():
    assert [approx(n) for n in (7, 1_234, 12_345, 999_700, 1_234_567, 123_456_789)] == [
        "~7 (est.)",
        "~1.2k (est.)",
        "~12k (est.)",
        "~1.0M (est.)",
        "~1.2M (est.)",
        "~123M (est.)",
    ]


def test_funnel_marks_estimated_cells_and_an_input_total_that_adds_one():
    est = TokenEstimate(kept=None, dropped={"lang": 2_500_000}, sample_docs=3, sample_bytes=30, sample_tokens=8)
    lines = funnel_markdown(4, 3, {"lang": 1}, 1_000, {}, estimate=est).splitlines()
    assert lines[2].startswith("| in | 4 | ~2.5M (est.) | ")  # 1,000 counted + ~2.5M estimated
    assert lines[3].startswith("| dropped: lang | 1 | ~2.5M (est.) | ")
    assert lines[4].startswith("| **kept** | 3 | 1,000 | ")  # counted: shown exactly
    raw = TokenEstimate(kept=1_234_567, dropped={}, sample_docs=3, sample_bytes=30, sample_tokens=8)
    lines = funnel_markdown(4, 3, {"invalid_json": 1}, None, {}, estimate=raw).splitlines()
    assert lines[2].startswith("| in | 4 |  | ") and lines[3].startswith("| dropped: invalid_json | 1 |  | ")
    assert lines[4].startswith("| **kept** | 3 | ~1.2M (est.) | ")


def test_seeded_hash_is_sha256_and_the_same_lazily():
    # pinned: the first 64 bits of sha256, big-endian; not polars' or Python's hash (they change across versions)
    assert seeded_hash("0:doc-1") == int.from_bytes(__import__("hashlib").sha256(b"0:doc-1").digest()[:8], "big")
    assert seeded_hash("") == 0xE3B0C44298FC1C14
    keys = pl.Series("k", ["0:a", "0:b", "1:a", ""])
    hashed = pl.DataFrame({"k": keys}).lazy().select(seeded_hash_expr(pl.col("k"))).collect().to_series()
    assert hashed.dtype == pl.UInt64 and hashed.to_list() == [seeded_hash(k) for k in keys]


def test_every_output_parquet_file_has_page_crcs_and_a_flipped_bit_is_an_error_never_other_text():
    """Issue 20 item 4: over 40 single-bit flips in the text pages, `read_parquet_bytes` raises or returns the
    original frame, never altered text. Written the old way (polars, no CRCs), zstd decodes some flips into other
    text: the control shows the check is not vacuous."""
    import io
    import random

    import pyarrow.parquet as pq

    df = pl.DataFrame(
        {"doc_id": [f"d{i}" for i in range(2000)], "text": [f"text number {i} " * 20 for i in range(2000)]}
    )

    def flipped(data: bytes, seed: int) -> bytes:
        col = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(1)
        start = min(o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None)
        rng, out = random.Random(seed), bytearray(data)
        out[rng.randrange(start + 30, start + col.total_compressed_size)] ^= 1 << rng.randrange(8)
        return bytes(out)

    def outcome(data: bytes) -> str:
        try:
            return "same" if read_parquet_bytes(data).equals(df) else "altered"
        except Exception:
            return "error"

    ours = parquet_bytes(df)
    assert pq.ParquetFile(io.BytesIO(ours)).metadata.row_group(0).num_rows == 2000 and read_parquet_bytes(ours).equals(
        df
    )
    assert {outcome(flipped(ours, seed)) for seed in range(40)} <= {"error", "same"}
    unchecked = io.BytesIO()
    df.write_parquet(unchecked, compression="zstd")
    assert "altered" in {outcome(flipped(unchecked.getvalue(), seed)) for seed in range(40)}


def test_row_ranges_cover_every_row_in_order_bounded_by_rows_and_by_bytes():
    sizes = pl.Series([5, 5, 5, 50, 1, 1, 1, 1, 1])
    ranges = row_ranges(sizes, max_rows=3, max_bytes=10)
    assert ranges == [(0, 2), (2, 2), (4, 3), (7, 2)]
    assert [r for start, n in ranges for r in range(start, start + n)] == list(range(sizes.len()))
    for start, n in ranges:  # under max_bytes plus the range's last row (a row larger than it stands alone)
        assert n <= 3 and sizes.slice(start, n).sum() < 10 + sizes[start + n - 1]
    assert row_ranges(pl.Series([1] * 7), max_rows=3, max_bytes=100) == [(0, 3), (3, 3), (6, 1)]
    assert row_ranges(pl.Series([], dtype=pl.Int64), max_rows=3, max_bytes=10) == []


def test_range_frames_cuts_a_stream_into_the_ranges_whatever_its_batches(tmp_path):
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(23)], "text": ["x" * (i % 7) for i in range(23)]})
    ranges = row_ranges(docs["text"].str.len_bytes(), max_rows=4, max_bytes=9)
    expected = [docs.slice(start, n) for start, n in ranges]
    for cuts in ([23], [1] * 23, [5, 0, 11, 7]):  # one frame, one row per frame, uneven with an empty frame
        frames = [docs.slice(sum(cuts[:k]), n) for k, n in enumerate(cuts)]
        got = list(range_frames(frames, ranges))
        assert [f.height for f in got] == [n for _, n in ranges]
        assert all(g.equals(e) for g, e in zip(got, expected, strict=True))
    pq.write_table(docs.to_arrow(), tmp_path / "docs.parquet", row_group_size=6)  # a scan streams row groups
    scanned = list(range_frames(pl.scan_parquet(tmp_path / "docs.parquet").collect_batches(), ranges))
    assert pl.concat(scanned).equals(docs) and [f.height for f in scanned] == [n for _, n in ranges]
    with pytest.raises(ValueError, match="rows short"):
        list(range_frames([docs.head(5)], [(0, 4), (4, 4)]))
    with pytest.raises(ValueError, match="does not start where"):
        list(range_frames([docs], [(0, 4), (5, 4)]))


def test_conform_gives_a_part_the_tables_columns_in_order_with_typed_nulls_and_refuses_unknown_ones():
    schema = {"doc_id": pl.String(), "n_tokens": pl.Int64(), "generator": pl.String()}
    part = conform(pl.DataFrame({"n_tokens": [3], "doc_id": ["a"]}), schema)
    assert part.schema == pl.Schema(schema) and part.row(0) == ("a", 3, None)
    with pytest.raises(ValueError, match="lang"):
        conform(pl.DataFrame({"doc_id": ["a"], "lang": ["en"]}), schema)
