"""core/decontam.py: n-grams of normalised words, the index per eval set, the matcher and the drop marking."""

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from curation_assets.core.decontam import (
    CONTAMINATED,
    INDEX_SCHEMA,
    DecontamParams,
    Index,
    index_items,
    mark_contaminated,
    match,
    ngram_hashes,
)
from curation_assets.core.minhash import normalize

QUESTION = "Which of the following best describes the role of mitochondria in a eukaryotic cell during respiration?"


def items(*texts: str, eval_set: str = "qa") -> pl.DataFrame:
    return pl.DataFrame({"eval_set": eval_set, "file": "f.jsonl", "item": range(len(texts)), "text": list(texts)})


def index_of(*frames: pl.DataFrame, n: int = 13) -> Index:
    return Index.of(pl.concat([index_items(f, n) for f in frames]).filter(pl.col("n_words") >= n))


def test_ngrams_are_of_normalised_words_and_a_short_text_has_none():
    texts = ["One two three four", "ONE, two; three!  four", "one two three", "", "Ｆｕｌｌ width"]
    hashes, owner, position, counts = ngram_hashes([normalize(t) for t in texts], 3)
    assert counts.tolist() == [4, 4, 3, 0, 2]
    assert owner.tolist() == [0, 0, 1, 1, 2] and position.tolist() == [0, 1, 0, 1, 0]
    # case and punctuation do not matter: the same words give the same n-gram hashes
    assert hashes[owner == 0].tolist() == hashes[owner == 1].tolist()
    assert hashes[4] == hashes[0]  # "one two three"
    assert hashes.dtype == np.uint64


def test_index_rows_hold_each_items_distinct_sorted_hashes():
    rows = index_items(items(QUESTION, "Too short to index.", "a a a a a a a a a a a a a a a a"), 13)
    assert rows.schema == pl.Schema(INDEX_SCHEMA)
    assert rows["n_words"].to_list() == [16, 4, 16]
    assert [len(h) for h in rows["hashes"]] == [4, 0, 1]  # 16 - 13 + 1 distinct; none; one repeated 13-gram
    first = rows["hashes"][0].to_list()
    assert first == sorted(first) and rows["ngram"].unique().to_list() == [13]


def test_match_reports_the_first_shared_ngram_and_its_set():
    index = index_of(items(QUESTION), items("Lorem ipsum " + QUESTION, eval_set="other"))
    assert index.names == ("qa", "other") and index.n == 13
    texts = [
        "Intro. " + QUESTION.upper() + " More text follows here.",  # case and punctuation differ
        "Which of the following best describes the job of mitochondria in a eukaryotic cell?",  # a word in each 13
        "Nothing in common with any evaluation item at all, just a long enough sentence of words.",
        None,
        "lorem ipsum which of the following best describes the role of mitochondria in a",  # only in `other`
    ]
    out = match(texts, index)
    assert out.rows() == [
        ("qa", "which of the following best describes the role of mitochondria in a eukaryotic"),
        (None, None),
        (None, None),
        (None, None),
        ("other", "lorem ipsum which of the following best describes the role of mitochondria in"),
    ]


def test_a_hash_in_two_sets_is_reported_in_the_first_configured():
    index = index_of(items(QUESTION, eval_set="mmlu"), items(QUESTION, eval_set="arc"))
    assert match([QUESTION], index)["eval_set"].to_list() == ["mmlu"]


def test_mark_contaminated_drops_only_documents_still_kept():
    index = index_of(items(QUESTION))
    docs = pl.DataFrame(
        {
            "doc_id": ["a", "b", "c"],
            "text": [QUESTION, QUESTION, "A clean document about something else entirely, with many words in it."],
            "drop_reason": ["near_duplicate", None, None],
        }
    )
    out = mark_contaminated(docs, index, batch_bytes=10)  # one document per batch
    assert out.select("doc_id", "drop_reason", "eval_set").rows() == [
        ("a", "near_duplicate", None),
        ("b", CONTAMINATED, "qa"),
        ("c", None, None),
    ]
    assert out["eval_ngram"][1].split() == QUESTION.lower().rstrip("?").split()[:13]


def test_an_empty_index_matches_nothing():
    empty = Index.of(pl.DataFrame(schema=INDEX_SCHEMA))
    assert len(empty) == 0
    docs = pl.DataFrame(
        {"text": [QUESTION], "drop_reason": [None]}, schema={"text": pl.String, "drop_reason": pl.String}
    )
    assert mark_contaminated(docs, empty)["drop_reason"].to_list() == [None]
    assert Index.of(pl.DataFrame()).n == 0


def test_an_index_of_two_ngram_lengths_is_refused():
    rows = pl.concat([index_items(items(QUESTION), 13), index_items(items(QUESTION), 8)])
    with pytest.raises(ValueError, match="mixes n-gram lengths"):
        Index.of(rows)


def test_params_refuse_duplicate_set_names_and_another_hash():
    DecontamParams(eval_sets=[{"name": "a", "paths": ["x.jsonl"]}, {"name": "b", "paths": ["y.jsonl"]}])
    with pytest.raises(ValidationError, match="unique"):
        DecontamParams(eval_sets=[{"name": "a", "paths": ["x.jsonl"]}, {"name": "a", "paths": ["y.jsonl"]}])
    with pytest.raises(ValidationError):
        DecontamParams(hashfunc="xxhash64")
    assert DecontamParams().ngram == 13
