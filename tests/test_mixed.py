import polars as pl
import pytest

from curation_assets.config import Recipe
from curation_assets.mixed import MixtureError, fill_quota, mix_sources, token_shares


def docs(source: str, n: int, tokens: int) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": [f"{source}{i}" for i in range(n)], "source": source, "text": "x",
                         "n_tokens": [tokens] * n})


def test_token_weights_are_honoured_and_the_smallest_source_bounds_the_mixture():
    frames = {"a": docs("a", 100, 10), "b": docs("b", 50, 20)}  # 1000 tokens each, different doc lengths
    mixed, dropped = mix_sources(frames, Recipe(name="r", weights={"a": 3, "b": 1}))
    shares = token_shares(mixed)
    assert shares["a"] == pytest.approx(0.75, abs=0.02)
    assert mixed.filter(pl.col("source") == "a")["n_tokens"].sum() == 1000  # a is exhausted: one full epoch
    assert set(dropped["drop_reason"]) == {"not_sampled"}
    assert dropped.height + mixed.filter(pl.col("source") == "b").height == 50


def test_target_beyond_max_epochs_is_refused_and_within_is_repeated():
    frames = {"a": docs("a", 10, 10), "b": docs("b", 10, 10)}
    with pytest.raises(MixtureError, match="epochs"):
        mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 1}, target_tokens=400))
    mixed, _ = mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 1}, target_tokens=400, max_epochs=2))
    assert mixed["epoch"].max() == 1 and mixed["n_tokens"].sum() == 400


def test_missing_source_fails_loudly_and_output_is_deterministic():
    frames = {"a": docs("a", 50, 10), "b": docs("b", 50, 10)}
    with pytest.raises(MixtureError, match="not materialized"):
        mix_sources({"a": frames["a"]}, Recipe(name="r", weights={"a": 1, "b": 1}))
    r = Recipe(name="r", weights={"a": 1, "b": 2}, seed=7)
    assert mix_sources(frames, r)[0].equals(mix_sources(frames, r)[0])
    assert not mix_sources(frames, r)[0].equals(mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 2}))[0])


def test_fill_quota_skips_a_long_document_instead_of_overshooting():
    assert fill_quota([100, 900, 50, 50, 50], quota=250) == [True, False, True, True, True]
    assert fill_quota([10] * 10, quota=0) == [False] * 10
