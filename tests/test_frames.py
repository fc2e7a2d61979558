import polars as pl

from curation_assets.frames import drop_counts, mark_dropped, split_kept, stable_id, step_metadata


def test_first_failing_rule_wins_and_nulls_never_drop():
    df = pl.DataFrame({"n": [1, 5, None, 50]})
    marked = mark_dropped(df, {"too_small": pl.col("n") < 3, "odd": pl.col("n") % 2 == 1})
    assert marked["drop_reason"].to_list() == ["too_small", "odd", None, None]
    kept, dropped = split_kept(marked)
    assert kept.columns == ["n"] and kept["n"].to_list() == [None, 50]
    assert drop_counts(dropped) == {"odd": 1, "too_small": 1}


def test_step_metadata_has_the_same_keys_for_every_step():
    md = step_metadata(rows_in=10, rows_out=7, drops={"a": 2, "b": 1}, bytes_in=100, bytes_out=70, config_version="v")
    assert md == {
        "rows_in": 10,
        "rows_out": 7,
        "rows_dropped": 3,
        "drop_rate": 0.3,
        "bytes_in": 100,
        "bytes_out": 70,
        "config_version": "v",
        "dropped_a": 2,
        "dropped_b": 1,
    }


def test_stable_id_depends_only_on_its_parts():
    assert stable_id("web", "part-0.jsonl", "line:3") == stable_id("web", "part-0.jsonl", "line:3")
    assert stable_id("web", "part-0.jsonl", "line:3") != stable_id("web", "part-0.jsonl", "line:4")
    assert len(stable_id("x")) == 32
