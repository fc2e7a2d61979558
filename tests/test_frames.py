import polars as pl

from curation_assets.core.frames import drop_counts, drop_tokens, mark_dropped, split_kept, stable_id, step_metadata


def test_first_failing_rule_wins_and_nulls_never_drop():
    df = pl.DataFrame({"n": [1, 5, None, 50]})
    marked = mark_dropped(df, {"too_small": pl.col("n") < 3, "odd": pl.col("n") % 2 == 1})
    assert marked["drop_reason"].to_list() == ["too_small", "odd", None, None]
    kept, dropped = split_kept(marked)
    assert kept.columns == ["n"] and kept["n"].to_list() == [None, 50]
    assert drop_counts(dropped) == {"odd": 1, "too_small": 1}


def test_step_metadata_has_the_same_keys_for_every_step():
    md = step_metadata(rows_in=10, rows_out=7, drops={"a": 2, "b": 1}, bytes_in=100, bytes_out=70, config_version="v")
    funnel = md.pop("funnel")
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
    assert "| dropped: a | 2 |  | 20.0% |" in funnel.value


def test_funnel_counts_documents_and_tokens_per_reason_with_a_bar_each():
    dropped = pl.DataFrame({"drop_reason": ["short", "short", "lang"], "n_tokens": [5, 7, 100]})
    md = step_metadata(
        rows_in=8,
        rows_out=5,
        drops=drop_counts(dropped),
        bytes_in=1,
        bytes_out=1,
        config_version="v",
        tokens_out=1000,
        tokens_dropped=drop_tokens(dropped),
    )
    assert md["tokens"] == 1000 and md["tokens_dropped_short"] == 12 and md["tokens_dropped_lang"] == 100
    lines = md["funnel"].value.splitlines()
    assert lines[2] == f"| in | 8 | 1,112 | 100.0% | `{'█' * 24}` |"
    assert lines[3].startswith("| dropped: short | 2 | 12 | 25.0% | `██████ ")  # largest reason first
    assert lines[4].startswith("| dropped: lang | 1 | 100 | 12.5% | `███ ")
    assert lines[5].startswith("| **kept** | 5 | 1,000 | 62.5% | `███████████████ ")


def test_stable_id_depends_only_on_its_parts():
    assert stable_id("web", "part-0.jsonl", "line:3") == stable_id("web", "part-0.jsonl", "line:3")
    assert stable_id("web", "part-0.jsonl", "line:3") != stable_id("web", "part-0.jsonl", "line:4")
    assert len(stable_id("x")) == 32
