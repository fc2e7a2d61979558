"""core/frames.py: drop marking and counting, stable ids and the one seeded hash. (The metadata every step emits is
built from these counts: tests/steps/test_metadata.py.)"""

import polars as pl

from curation_assets.core.frames import (
    drop_counts,
    drop_tokens,
    funnel_markdown,
    mark_dropped,
    parquet_bytes,
    read_parquet_bytes,
    seeded_hash,
    seeded_hash_expr,
    split_kept,
    stable_id,
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
