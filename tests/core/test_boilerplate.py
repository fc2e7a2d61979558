"""core/boilerplate.py: line normalisation, per-document line counts, the bounded merge, line removal and the ledger."""

import polars as pl
import pytest

from curation_assets.core.boilerplate import (
    DocFrequency,
    frequent_lines,
    line_doc_counts,
    normalized_line,
    remove_lines,
    settle_ledger,
    strip_kept,
)
from curation_assets.core.frames import seeded_hash

FOOTER = "This page is licensed under the GNU GPL, version 3 or later."
MIRROR = "You are reading a mirror of docs.example.org, updated 2024-01-31."


def norm(lines: list[str]) -> list[str]:
    return pl.select(normalized_line(pl.Series(lines))).to_series().to_list()


def test_lines_are_normalised_as_ccnet_does_plus_accents_and_whitespace():
    assert norm(["  Version 3.11, Released 2023!  ", "VERSION 2.07 released   1999", "Ünïcode İSİM yazılım"]) == [
        "version 000 released 0000",
        "version 000 released 0000",
        "unicode isim yazilim",
    ]


def test_a_line_counts_once_per_document_and_short_lines_never():
    texts = pl.Series([f"{FOOTER}\n}}\n{FOOTER}\nfirst text", f"second text\n{FOOTER.upper()}\n}}", "}\n\n"])
    counts = line_doc_counts(texts, min_chars=12)
    footer = seeded_hash(norm([FOOTER])[0])
    assert dict(counts.iter_rows()) == {footer: 2}  # "}", "" and the 10-11 character lines are never counted
    assert dict(line_doc_counts(texts, min_chars=10)["docs"].value_counts().iter_rows()) == {2: 1, 1: 2}
    assert counts.schema == {"hash": pl.UInt64, "docs": pl.UInt32}


def batch(texts: list[str], min_chars: int = 20) -> pl.DataFrame:
    return line_doc_counts(pl.Series(texts, dtype=pl.String), min_chars)


def test_doc_frequency_merges_batches_and_keeps_only_lines_seen_twice():
    freq = DocFrequency(text_bytes=10_000, min_chars=20)
    freq.add(batch([f"a unique line number one\n{FOOTER}", FOOTER, f"{MIRROR}\nanother unique line here"]))
    freq.add(batch([FOOTER, f"{MIRROR}\nyet another unique line", "a unique line number one"]))
    got = {h: n for h, n in freq.counts().iter_rows()}
    want = {seeded_hash(norm([t])[0]): n for t, n in [(FOOTER, 3), (MIRROR, 2), ("a unique line number one", 2)]}
    assert got == want  # lines seen once are only a bit in the bitmap, not a row
    assert frequent_lines(freq.counts(), 3).to_list() == [seeded_hash(norm([FOOTER])[0])]


def test_doc_frequency_is_exact_whatever_the_batching():
    # (digits normalise to 0: "doc 7" and "doc 8" would be one line)
    docs = [
        f"doc {chr(97 + i % 26)}{chr(97 + i // 26)} has its own first line\n{FOOTER if i % 2 else MIRROR}"
        for i in range(40)
    ]
    one = DocFrequency(text_bytes=100_000, min_chars=20)
    one.add(batch(docs))
    many = DocFrequency(text_bytes=100_000, min_chars=20)
    for k in range(0, 40, 7):
        many.add(batch(docs[k : k + 7]))
    assert one.counts().equals(many.counts())
    assert sorted(one.counts()["docs"].to_list()) == [20, 20]


def test_remove_lines_removes_frequent_lines_with_their_newline_and_counts_them():
    frequent = pl.Series([seeded_hash(norm([FOOTER])[0])], dtype=pl.UInt64)
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": [f"Intro.\n{FOOTER}\nEnd.\n", "No footer here.\n", None]})
    out = remove_lines(docs, frequent, min_chars=20)
    assert out["text"].to_list() == ["Intro.\nEnd.\n", "No footer here.\n", None]
    assert out["boilerplate_lines"].to_list() == [1, 0, 0]
    assert out["boilerplate_bytes"].to_list() == [len(FOOTER) + 1, 0, 0]


def test_strip_kept_drops_documents_left_empty_and_counts_what_it_removed():
    frequent = pl.Series([seeded_hash(norm([t])[0]) for t in (FOOTER, MIRROR)], dtype=pl.UInt64)
    kept = pl.DataFrame(
        {
            "doc_id": ["a", "b", "c"],
            "text": [f"{MIRROR}\nA short fortune.\n{FOOTER}", f"{MIRROR}\n\n{FOOTER}\n", "Untouched text."],
        }
    )
    keep, gone, removed = strip_kept(kept, frequent, 20)
    assert keep.to_dicts() == [{"doc_id": "a", "text": "A short fortune."}, {"doc_id": "c", "text": "Untouched text."}]
    assert gone["doc_id"].to_list() == ["b"] and gone["drop_reason"].to_list() == ["boilerplate_only"]
    assert removed.to_dicts() == [
        {"boilerplate_lines": 2, "boilerplate_bytes": len(MIRROR) + len(FOOTER) + 2, "drop_reason": None},
        {"boilerplate_lines": 2, "boilerplate_bytes": len(MIRROR) + len(FOOTER) + 2, "drop_reason": "boilerplate_only"},
        {"boilerplate_lines": 0, "boilerplate_bytes": 0, "drop_reason": None},
    ]


def test_settle_ledger_adds_counts_to_kept_rows_and_drops_the_emptied():
    ledger = pl.DataFrame(
        {
            "doc_id": ["a", "b", "c", "d"],
            "kept": [True, False, True, True],
            "drop_reason": [None, "gopher_short_doc", None, None],
            "drop_value": [None, 12.0, None, None],
        }
    )
    removals = [
        pl.DataFrame({"boilerplate_lines": [1], "boilerplate_bytes": [61], "drop_reason": [None]}),
        pl.DataFrame(
            {"boilerplate_lines": [2, 0], "boilerplate_bytes": [90, 0], "drop_reason": ["boilerplate_only", None]}
        ),
    ]
    out = settle_ledger(ledger, removals)
    assert out.to_dicts() == [
        {"doc_id": "a", "kept": True, "drop_reason": None, "drop_value": None, "boilerplate_lines": 1,
         "boilerplate_bytes": 61},
        {"doc_id": "b", "kept": False, "drop_reason": "gopher_short_doc", "drop_value": 12.0, "boilerplate_lines": None,
         "boilerplate_bytes": None},
        {"doc_id": "c", "kept": False, "drop_reason": "boilerplate_only", "drop_value": 2.0, "boilerplate_lines": 2,
         "boilerplate_bytes": 90},
        {"doc_id": "d", "kept": True, "drop_reason": None, "drop_value": None, "boilerplate_lines": 0,
         "boilerplate_bytes": 0},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="3 kept documents"):
        settle_ledger(ledger, removals[:1])
    off = settle_ledger(ledger, None)  # removal off for the source: same columns, null
    assert off.drop("boilerplate_lines", "boilerplate_bytes").equals(ledger)
    assert off.select(pl.col("boilerplate_lines", "boilerplate_bytes").is_null().all()).row(0) == (True, True)
