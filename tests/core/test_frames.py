"""core/frames.py: drop marking and counting, stable ids and the one seeded hash. (The metadata every step emits is
built from these counts: tests/steps/test_metadata.py.)"""

import polars as pl

from curation_assets.core.frames import (
    drop_counts,
    drop_tokens,
    funnel_markdown,
    mark_dropped,
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
    assert lines[2] == f"| in | 4 |  | 100.0% | `{'█' * 24}` |"
    assert lines[3].startswith("| dropped: empty | 1 |  | 25.0% | `██████ ")
    assert lines[4].startswith("| **kept** | 3 |  | 75.0% | `██████████████████ ")


def test_seeded_hash_is_sha256_and_the_same_lazily():
    # pinned: the first 64 bits of sha256, big-endian; not polars' or Python's hash (they change across versions)
    assert seeded_hash("0:doc-1") == int.from_bytes(__import__("hashlib").sha256(b"0:doc-1").digest()[:8], "big")
    assert seeded_hash("") == 0xE3B0C44298FC1C14
    keys = pl.Series("k", ["0:a", "0:b", "1:a", ""])
    hashed = pl.DataFrame({"k": keys}).lazy().select(seeded_hash_expr(pl.col("k"))).collect().to_series()
    assert hashed.dtype == pl.UInt64 and hashed.to_list() == [seeded_hash(k) for k in keys]
