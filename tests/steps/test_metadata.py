"""The metadata every step emits (`resources/metadata.py: step_metadata`, built from core/frames.py's counts): the same
keys for every asset, and the funnel of documents and tokens."""

import polars as pl

from curation_assets.core.frames import Added, drop_counts, drop_tokens
from resources.metadata import step_metadata


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


def test_repeated_rows_are_neither_kept_documents_nor_a_negative_drop_rate():
    """Issue 17 item 3: a mixture that upsamples writes more rows than it read; the repeats are their own funnel row,
    so drop_rate is over distinct documents (was -0.50) and no share exceeds 100 % (was "kept 150.1 %")."""
    md = step_metadata(
        rows_in=10,
        rows_out=15,
        drops={"not_sampled": 2},
        bytes_in=1,
        bytes_out=1,
        config_version="v",
        tokens_out=1500,
        tokens_dropped={"not_sampled": 200},
        added=Added("repeats (epochs past the first)", 7, 700),
    )
    assert md["drop_rate"] == 0.2 and md["rows_added"] == 7 and md["tokens_added"] == 700
    lines = md["funnel"].value.splitlines()
    assert lines[2] == f"| in | 10 | 1,000 | 100.0% | `{'█' * 24}` |"
    assert lines[4].startswith("| **kept** | 8 | 800 | 80.0% | ")
    assert lines[5:] == ["| added: repeats (epochs past the first) | 7 | 700 | | |", "| **written** | 15 | 1,500 | | |"]
    shares = [float(cell.strip().rstrip("%")) for line in lines[2:] if (cell := line.split("|")[4]).strip()]
    assert shares and all(0 <= s <= 100 for s in shares)
