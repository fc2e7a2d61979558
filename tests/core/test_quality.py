"""core/quality.py: the quality classifier's training set, pre-sample and held-out metrics on literal frames, and
fastText training on real text. (The asset in the graph: tests/steps/test_quality_model.py.)"""

import polars as pl
import pytest
import yaml

from curation_assets.config import load_config
from curation_assets.core.quality import (
    CC,
    HQ,
    MAX_CHARS,
    TrainingParams,
    fasttext_lines,
    held_out_metrics,
    one_line,
    training_set,
)
from resources.classifiers import QualityModel


def test_one_line_is_dclm_normalisation_of_the_first_max_chars():
    texts = ["  a\nb\r\nc\rd\x0be\x0cf\x1cg\x85h\u2028i\u2029j  ", "x" * (MAX_CHARS + 5), None]
    lines = pl.DataFrame({"t": texts}).select(one_line(pl.col("t"))).to_series()
    assert lines[0] == " ".join(texts[0].strip().splitlines())
    assert len(lines[1]) == MAX_CHARS and lines[2] == ""


def docs_frame(n_hq: int, n_cc: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"h{i}" for i in range(n_hq)] + [f"c{i}" for i in range(n_cc)],
            "source": ["books"] * n_hq + ["web"] * n_cc,
            "text": [f"book text {i}\nsecond line" for i in range(n_hq)] + [f"web page {i}" for i in range(n_cc)],
        }
    )


def test_training_set_labels_by_source_balances_classes_and_leaves_repeated_texts_out():
    docs = docs_frame(300, 120)
    shared = {"c1": "web page 0", "c2": "web page 0", "c3": "book text 0\nsecond line"}  # c0's text; h0's
    docs = docs.with_columns(pl.col("doc_id").replace_strict(shared, default=pl.col("text")).alias("text"))
    train, left_out = training_set(docs, TrainingParams(held_out=0.25))
    # c0, c1, c2 share a text under one label: it counts once; h0 and c3 share one under both labels: both out
    assert left_out == {"text_in_both_classes": 2, "repeated_text": 2, "over_class_cap": 299 - 117}
    counts = dict(train.group_by("label").len().iter_rows())
    assert counts == {HQ: 117, CC: 117}
    assert set(train.filter(pl.col("label") == HQ)["source"]) == {"books"}
    assert not train["doc_id"].is_in(["h0", "c3"]).any()
    assert train.filter(pl.col("line") == "web page 0").height == 1
    first = train.filter(pl.col("label") == HQ).row(0, named=True)
    assert first["line"] == f"book text {first['doc_id'][1:]} second line"
    share = train["held_out"].mean()
    assert 0.15 < share < 0.35
    again, _ = training_set(docs.reverse(), TrainingParams(held_out=0.25))
    assert again.equals(train)  # the draw and the split depend on doc_id and seed, not on input order
    other, _ = training_set(docs, TrainingParams(held_out=0.25, seed=7))
    assert not other["doc_id"].equals(train["doc_id"]) or not other["held_out"].equals(train["held_out"])
    assert fasttext_lines(train.head(2)).splitlines()[0].startswith("__label__cc web page ")


def test_presample_draws_about_twice_the_cap_lazily_and_truncates_texts():
    from curation_assets.core.quality import presample

    n = 20_000
    docs = pl.LazyFrame({"doc_id": [f"d{i}" for i in range(n)], "text": ["x" * (MAX_CHARS + 10)] * (n - 1) + ["  "]})
    params = TrainingParams(max_per_class=1_000)
    drawn = presample(docs, n, params).collect()
    assert 1_800 < drawn.height < 2_200  # Bernoulli(2 x 1,000 / 20,000)
    assert drawn["text"].str.len_chars().max() == MAX_CHARS
    assert presample(docs, n, params).collect().equals(drawn)
    assert presample(docs.head(500), 500, params).collect().height == 500  # a small source is read whole
    small = pl.LazyFrame({"doc_id": ["a", "b"], "text": ["hi", " \n "]})
    assert presample(small, 2, params).collect()["doc_id"].to_list() == ["a"]  # blank documents are never drawn


def test_held_out_metrics_on_literal_scores():
    y = pl.Series([True, True, True, False, False])
    s = pl.Series([0.9, 0.6, 0.4, 0.7, 0.1])
    m = held_out_metrics(y, s)
    assert (m["held_out_precision"], m["held_out_recall"]) == (round(2 / 3, 4), round(2 / 3, 4))
    assert m["held_out_auc"] == round(4 / 6, 4)  # 4 of the 6 (hq, cc) pairs are ordered right
    assert (m["held_out_hq_median"], m["held_out_cc_median"]) == (0.6, 0.4)
    assert (m["held_out_hq"], m["held_out_cc"]) == (3, 2)


def test_a_small_training_set_trains_more_epochs_until_it_sees_min_updates_examples():
    params = TrainingParams(epoch=10, min_updates=25_000)
    assert params.fasttext(123)["epoch"] == 204  # ceil(25,000 / 123)
    assert params.fasttext(2_500)["epoch"] == params.fasttext(100_000)["epoch"] == 10  # enough data: DCLM's epochs
    assert TrainingParams(min_updates=0).fasttext(1)["epoch"] == 10


def test_params_refuse_a_source_in_both_classes_and_a_cut_without_a_model(tmp_path):
    with pytest.raises(ValueError, match="both reference and background"):
        TrainingParams(reference=("web",), background=("web",))
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [{"name": "books", "uris": ["x"], "licence": "t"}]}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"books": 1}}}))
    assert load_config(sources, recipe).quality_model_params is None  # no background source configured: no model
    cut = tmp_path / "thresholds.yaml"
    cut.write_text(yaml.safe_dump({"filtered": {"per_source": {"books": {"quality_keep_fraction": 0.5}}}}))
    with pytest.raises(ValueError, match="cuts by quality score"):
        _ = load_config(sources, recipe, cut).quality_model_params


@pytest.fixture(scope="module")
def shared_docs(shared_corpus) -> pl.DataFrame:
    """books and code documents of the shared corpus (JSONL text needs no extraction)."""
    frames = []
    for source, name in (("books", "part-00000.jsonl.zst"), ("code", "part-00000.jsonl.zst")):
        df = pl.read_ndjson(shared_corpus / "data" / source / name)
        frames.append(df.select(pl.col("id").cast(pl.String).alias("doc_id"), pl.lit(source).alias("source"), "text"))
    return pl.concat(frames)


def test_a_model_trained_on_real_text_separates_held_out_documents(shared_docs):
    params = TrainingParams(reference=("books",), background=("code",), max_per_class=1500)
    train, _ = training_set(shared_docs, params)
    fit, test = train.filter(~pl.col("held_out")), train.filter(pl.col("held_out"))
    model = QualityModel.train(fasttext_lines(fit), **params.fasttext(fit.height))
    scores = pl.Series(model.score(test["line"].to_list()))
    m = held_out_metrics(test["label"] == HQ, scores)
    assert m["held_out_auc"] > 0.95 and m["held_out_precision"] > 0.9 and m["held_out_recall"] > 0.9, m
    again = QualityModel.train(fasttext_lines(fit), **params.fasttext(fit.height))  # one thread, seeded: reproducible
    assert again.score(test["line"].to_list()) == scores.to_list()
    assert again.to_bytes() == model.to_bytes()
