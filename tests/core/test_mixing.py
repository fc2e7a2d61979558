"""core/mixing.py: manual, temperature and UniMax weights, epoch caps, the manifest and its checks."""

import polars as pl
import pytest
from pydantic import ValidationError

from curation_assets.config import Recipe
from curation_assets.core.mixing import (
    MixtureError,
    check_mixture,
    fill_quota,
    mix_sources,
    mixture_table,
    quotas,
    split_components,
    unimax,
)


def docs(source: str, n: int, tokens: int, generator: str | None = None, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"{source}{generator or ''}{i}" for i in range(start, start + n)],
            "source": source,
            "text": "x",
            "n_tokens": [tokens] * n,
            "generator": pl.Series([generator] * n, dtype=pl.String),
        }
    )


def shares(mixed: pl.DataFrame) -> dict[str, float]:
    per = dict(mixed.group_by("component").agg(pl.col("n_tokens").sum()).iter_rows())
    return {c: n / sum(per.values()) for c, n in per.items()}


def test_token_weights_are_honoured_and_the_smallest_component_bounds_the_mixture():
    frames = {"a": docs("a", 100, 10), "b": docs("b", 50, 20)}  # 1000 tokens each, different doc lengths
    mixed, dropped, manifest = mix_sources(frames, Recipe(name="r", weights={"a": 3, "b": 1}, max_epochs=1))
    assert shares(mixed)["a"] == pytest.approx(0.75, abs=0.01)
    assert manifest["components"]["a"]["sampled_tokens"] == 1000 and manifest["components"]["a"]["epochs"] == 1.0
    assert set(dropped["drop_reason"]) == {"not_sampled"}
    assert dropped.height + mixed.filter(pl.col("source") == "b").height == 50
    assert check_mixture(manifest)["shares_ok"] and check_mixture(manifest)["epochs_ok"]
    # without a target nothing repeats, whatever the cap (default 4): the scarcest component is used once
    _, _, default_cap = mix_sources(frames, Recipe(name="r", weights={"a": 3, "b": 1}))
    assert {c: r["sampled_tokens"] for c, r in default_cap["components"].items()} == {"a": 1000, "b": 340}
    assert default_cap["components"]["a"]["epoch_cap"] == 4 and default_cap["components"]["a"]["epochs"] == 1.0


def test_synthetic_sets_are_their_own_components():
    frames = {"a": pl.concat([docs("a", 100, 10), docs("a", 20, 5, generator="math")])}
    comps = split_components(frames)
    assert set(comps) == {"a", "a.synthetic"} and comps["a.synthetic"].height == 20
    mixed, _, manifest = mix_sources(frames, Recipe(name="r", weights={"a": 0.9, "a.synthetic": 0.1}))
    assert manifest["components"]["a.synthetic"]["realized_share"] == pytest.approx(0.1, abs=0.01)
    assert manifest["components"]["a.synthetic"]["epochs"] <= 4
    # a recipe without the synthetic component leaves it out (and says so)
    mixed, dropped, manifest = mix_sources(frames, Recipe(name="r", weights={"a": 1}))
    assert set(mixed["component"]) == {"a"} and manifest["unused_components"] == ["a.synthetic"]
    # ... and accounts for its documents: each input document is mixed or dropped, with a reason
    assert (
        dropped.filter(pl.col("drop_reason") == "not_in_recipe")["doc_id"].to_list()
        == comps["a.synthetic"]["doc_id"].to_list()
    )
    assert mixed.filter(pl.col("epoch") == 0).height + dropped.height == 120


def test_epoch_cap_refuses_an_oversized_target_and_repeats_whole_epochs_within_it():
    frames = {"a": docs("a", 10, 10), "b": docs("b", 10, 10)}
    with pytest.raises(MixtureError, match="epochs"):
        mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 1}, target_tokens=1000))  # 5 epochs > default 4
    mixed, _, m = mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 1}, target_tokens=400, max_epochs=2))
    assert mixed["epoch"].max() == 1 and mixed["n_tokens"].sum() == 400
    assert mixed.group_by("doc_id").len()["len"].max() == 2
    with pytest.raises(MixtureError, match="cap 1"):
        mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 1}, target_tokens=300, epoch_caps={"a": 1}))


def test_temperature_and_unimax_weights():
    available = {"big": 9000, "mid": 900, "small": 100}
    t = quotas(
        Recipe(name="r", sampling="temperature", components=list(available), alpha=0.5, target_tokens=1000), available
    )
    assert t["big"] / t["small"] == pytest.approx((9000 / 100) ** 0.5)  # p ∝ tokens^alpha
    t1 = quotas(
        Recipe(name="r", sampling="temperature", components=list(available), alpha=1.0, target_tokens=1000), available
    )
    assert t1["small"] / 1000 == pytest.approx(0.01)  # alpha = 1: proportional
    # UniMax: uniform 2000 each, but small is capped at 4 epochs (400); the rest is spread over the others
    u = unimax(available, dict.fromkeys(available, 4.0), 6000)
    assert u == pytest.approx({"small": 400, "mid": 2800, "big": 2800})
    u = unimax(available, dict.fromkeys(available, 1.0), 3000)
    assert u == pytest.approx({"small": 100, "mid": 900, "big": 2000})
    with pytest.raises(MixtureError, match="budget"):
        unimax(available, dict.fromkeys(available, 1.0), 20000)
    frames = {"a": docs("a", 100, 10), "b": docs("b", 5, 10)}
    mixed, _, m = mix_sources(frames, Recipe(name="r", sampling="unimax", components=["a", "b"], target_tokens=400))
    assert m["components"]["b"]["sampled_tokens"] == 200 and m["components"]["b"]["epochs"] == 4.0
    assert check_mixture(m)["shares_ok"] and check_mixture(m)["epochs_ok"]


def test_recipe_validation():
    with pytest.raises(ValidationError, match="unimax needs target_tokens"):
        Recipe(name="r", sampling="unimax", components=["a"])
    with pytest.raises(ValidationError, match="takes `components`"):
        Recipe(name="r", sampling="temperature", weights={"a": 1})
    with pytest.raises(ValidationError, match="synthetic"):
        Recipe(name="r", weights={"a.generated": 1})
    r = Recipe(name="r", weights={"a": 3, "a.synthetic": 1, "b": 4})
    assert r.weights == {"a": 0.5, "b": 0.5} and r.sources() == {"a", "b"}  # the per-source view


def test_checks_fail_on_a_bad_realization_and_the_table_shows_every_component():
    frames = {"a": docs("a", 50, 10), "b": docs("b", 50, 10)}
    _, _, m = mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 1}, seed=1))
    bad = {**m, "components": {**m["components"], "a": {**m["components"]["a"], "realized_share": 0.6, "epochs": 5.0}}}
    facts = check_mixture(bad)
    assert not facts["shares_ok"] and facts["over_cap"] == ["a"]
    table = mixture_table(m)
    assert "| a |" in table and "| b |" in table and "█" in table and m["recipe_hash"] in table


def test_missing_component_fails_loudly_and_output_is_deterministic():
    frames = {"a": docs("a", 50, 10), "b": docs("b", 50, 10)}
    with pytest.raises(MixtureError, match="no tokens"):
        mix_sources({"a": frames["a"]}, Recipe(name="r", weights={"a": 1, "b": 1}))
    r = Recipe(name="r", weights={"a": 1, "b": 2}, seed=7)
    assert mix_sources(frames, r)[0].equals(mix_sources(frames, r)[0])
    assert not mix_sources(frames, r)[0].equals(mix_sources(frames, Recipe(name="r", weights={"a": 1, "b": 2}))[0])


def test_fill_quota_skips_a_long_document_instead_of_overshooting():
    assert fill_quota([100, 900, 50, 50, 50], quota=250) == [True, False, True, True, True]
    assert fill_quota([10] * 10, quota=0) == [False] * 10
