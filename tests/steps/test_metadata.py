"""The metadata every step emits (`resources/metadata.py`: step_metadata, published; built from core/frames.py's
counts): the same few keys for every asset, the funnel of documents and tokens, one cost table."""

import dagster as dg
import polars as pl
import pytest

from curation_assets.core.frames import Added, TokenEstimate, drop_bytes, drop_counts, drop_tokens
from resources.cost_guard import CostGuard, Transfer
from resources.metadata import MAX_KEYS, MAX_SHOWN, published, step_metadata


def test_step_metadata_shows_the_same_few_keys_for_every_step_and_keeps_the_rest_in_details():
    """Issue 17 item 6: a step page shows at most MAX_KEYS keys; drops per reason are the funnel's rows (and
    `details`), not one key each."""
    md = step_metadata(
        rows_in=10,
        rows_out=7,
        drops={"a": 2, "b": 1},
        bytes_in=100,
        bytes_out=70,
        config_version="v",
        extra={"tasks": 3, "histogram": {"2": 1}, "table": dg.MetadataValue.md("| x |")},
    )
    funnel, details = md.pop("funnel"), md.pop("details").value
    assert md == {
        "rows_in": 10,
        "rows_out": 7,
        "drop_rate": 0.3,
        "bytes_out": 70,
        "config_version": "v",
        "table": dg.MetadataValue.md("| x |"),  # a MetadataValue is shown; plain values go into details
    }
    assert details == {
        "rows_dropped": 3,
        "bytes_in": 100,
        "drops": {"a": 2, "b": 1},
        "tasks": 3,
        "histogram": {"2": 1},
    }
    assert "| dropped: a | 2 |  | 20.0% `██" in funnel.value
    with pytest.raises(ValueError, match="at most"):
        step_metadata(
            rows_in=1,
            rows_out=1,
            drops={},
            bytes_in=1,
            bytes_out=1,
            config_version="v",
            extra={f"t{k}": dg.MetadataValue.md("x") for k in range(MAX_SHOWN + 1)},
        )


def test_published_metadata_has_one_cost_table_and_its_numbers_in_details():
    """One set of cost keys: the bytes of every path priced together (was `bytes_local` and `data_bytes_local`,
    two estimates that disagreed), the numbers the zone check reads under `details["cost"]`."""
    guard = CostGuard(pod_region="us-east-1", pod_zone="use1-az4")
    plan = guard.plan([Transfer("s3://b/x", 2 * 10**9, via="nat"), Transfer("/tmp/x", 5)])
    md = step_metadata(
        rows_in=1, rows_out=1, drops={}, bytes_in=1, bytes_out=1, config_version="v", tokens_out=3, extra={"a": 1}
    )
    out = published(md, uri="/data/raw/web/v1", cost=plan, override="", details={"side_ledger": "/x"})
    assert len(out) <= MAX_KEYS and not any(k.startswith(("data_", "source_", "bytes_local")) for k in out)
    assert out["uri"] == dg.MetadataValue.path("/data/raw/web/v1")
    assert out["cost"].value.splitlines() == [
        "| network path | bytes |",
        "|---|---:|",
        "| local | 5 |",
        "| regional nat | 2,000,000,000 |",
        "| **cost** | $0.0900 |",
    ]
    details = out["details"].value
    assert details["a"] == 1 and details["side_ledger"] == "/x" and details["rows_dropped"] == 0
    assert details["cost"] == {
        "bytes_local": 5,
        "bytes_regional_nat": 2 * 10**9,
        "cross_az_bytes": 0,
        "cross_region_bytes": 0,
        "transfer_usd": 0.09,
        "transfer_override": "",
    }


def funnel_metadata(dropped: pl.DataFrame, **extra) -> dict:
    """A step's metadata for 8 documents in, 5 kept (1,000 tokens) and `dropped` (drop_reason, and n_tokens or text)."""
    return step_metadata(
        rows_in=8,
        rows_out=5,
        drops=drop_counts(dropped),
        bytes_in=1,
        bytes_out=1,
        config_version="v",
        tokens_out=1000,
        tokens_dropped=drop_tokens(dropped),
        **extra,
    )


def test_funnel_counts_documents_and_tokens_per_reason_with_a_bar_each():
    md = funnel_metadata(pl.DataFrame({"drop_reason": ["short", "short", "lang"], "n_tokens": [5, 7, 100]}))
    assert md["tokens"] == 1000 and md["details"].value["tokens_dropped"] == {"lang": 100, "short": 12}
    lines = md["funnel"].value.splitlines()
    assert lines[0].count("|") == 5  # four columns: the share and its bar share one
    assert lines[2] == f"| in | 8 | 1,112 | 100.0% `{'█' * 10}` |"
    assert lines[3] == "| dropped: short | 2 | 12 | 25.0% `██        ` |"  # largest reason first
    assert lines[4] == "| dropped: lang | 1 | 100 | 12.5% `█         ` |"
    assert lines[5] == "| **kept** | 5 | 1,000 | 62.5% `██████    ` |"


def test_estimated_tokens_are_never_counts_they_are_labelled_wherever_they_show():
    """Issue 19: raw counts no token and filtered tokenizes only what it keeps; what they estimate is `tokens_est`
    (never `tokens`), `details["tokens_estimated"]` with its sample, and `~N (est.)` in the funnel, beside the dropped
    volume in bytes."""
    raw = TokenEstimate(kept=4_441_000, dropped={}, sample_docs=60, sample_bytes=512_000, sample_tokens=128_000)
    md = step_metadata(
        rows_in=10, rows_out=9, drops={"invalid_json": 1}, bytes_in=1, bytes_out=1, config_version="v", estimate=raw
    )
    assert "tokens" not in md and md["tokens_est"] == 4_441_000
    est = md["details"].value["tokens_estimated"]
    assert est["kept"] == 4_441_000 and est["tokens_per_byte"] == 0.25 and est["sample_docs"] == 60
    assert "| **kept** | 9 | ~4.4M (est.) |" in md["funnel"].value
    dropped = pl.DataFrame({"drop_reason": ["short", "short", "lang"], "text": ["a b", "c", "déjà"]})
    rules = TokenEstimate(kept=None, dropped={"short": 2, "lang": 3}, sample_docs=2, sample_bytes=8, sample_tokens=4)
    md = funnel_metadata(dropped, bytes_dropped=drop_bytes(dropped), estimate=rules)
    details = md["details"].value
    assert md["tokens"] == 1000 and "tokens_est" not in md and "tokens_dropped" not in details
    assert details["bytes_dropped"] == {"lang": 6, "short": 4}  # déjà: 6 UTF-8 bytes
    assert details["tokens_estimated"]["dropped"] == rules.dropped
    lines = md["funnel"].value.splitlines()
    assert lines[2].startswith("| in | 8 | ~1.0k (est.) |") and lines[5].startswith("| **kept** | 5 | 1,000 |")
    assert lines[3].startswith("| dropped: short | 2 | ~2 (est.) |")


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
    details = md["details"].value
    assert md["drop_rate"] == 0.2 and details["rows_added"] == 7 and details["tokens_added"] == 700
    lines = md["funnel"].value.splitlines()
    assert lines[2] == f"| in | 10 | 1,000 | 100.0% `{'█' * 10}` |"
    assert lines[4].startswith("| **kept** | 8 | 800 | 80.0% ")
    assert lines[5:] == ["| added: repeats (epochs past the first) | 7 | 700 | |", "| **written** | 15 | 1,500 | |"]
    shares = [float(cell.split("%")[0]) for line in lines[2:] if (cell := line.split("|")[4]).strip()]
    assert shares and all(0 <= s <= 100 for s in shares)
