"""mixed: the recipe's token-weighted mixture over every source's synthetic output."""

import hashlib
import math

import dagster as dg
import polars as pl

from curation_assets.config import Recipe
from curation_assets.frames import DROP_REASON, StepOutput
from curation_assets._dagster import DAILY, enforce_transfers, pod
from resources.cost_guard import CostGuard


class MixtureError(ValueError):
    """The recipe cannot be honoured with the data available."""


def _order_key(seed: int, *cols: str) -> pl.Expr:
    # sha256 over the key columns: a shuffle that is stable across polars versions and machines
    return pl.concat_str([pl.lit(str(seed)), *cols], separator="\x1f").map_elements(
        lambda s: hashlib.sha256(s.encode()).hexdigest()[:16], return_dtype=pl.String)


def fill_quota(n_tokens: list[int], quota: float) -> list[bool]:
    """Greedy fill in the given order: take a document when that brings the total closer to the quota, skip it
    otherwise and keep scanning, so one long document cannot overshoot or starve a source's share (the error is at
    most half of the smallest document that did not fit)."""
    taken, keep = 0, []
    for n in n_tokens:
        keep.append(taken + n / 2 < quota)
        taken += n if keep[-1] else 0
    return keep


def mix_sources(frames: dict[str, pl.DataFrame], recipe: Recipe) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sample documents so that each source's share of tokens matches the recipe weights.

    Each frame has DOC_SCHEMA + `n_tokens`. Returns (mixed: inputs + `epoch`, globally shuffled by a seeded hash;
    not_sampled: doc_id, source, n_tokens, drop_reason=`not_sampled`). The target size N is `recipe.target_tokens`,
    or the largest N such that no source repeats more than `max_epochs` (N = min_s T_s * max_epochs / w_s).
    Weights are over tokens, not documents (NeMo Curator's `blend_datasets` weights documents, which lets a source
    of long documents dominate). Whole epochs are repeated in full; the last partial epoch takes documents in a seeded
    order, greedily filled to its token quota (`fill_quota`).
    """
    weights = recipe.normalised_weights()
    missing = sorted(set(weights) - set(frames))
    if missing:
        raise MixtureError(f"recipe {recipe.name!r} needs sources that are not materialized: {missing}")
    totals = {s: int(frames[s]["n_tokens"].sum()) for s in weights}
    empty = sorted(s for s, t in totals.items() if t == 0)
    if empty:
        raise MixtureError(f"sources with no tokens left after curation: {empty}")
    target = recipe.target_tokens or math.floor(min(totals[s] * recipe.max_epochs / w for s, w in weights.items()))
    picked, unpicked = [], []
    for source, w in weights.items():
        quota = w * target
        epochs = quota / totals[source]
        if epochs > recipe.max_epochs + 1e-9:
            raise MixtureError(f"{source}: {quota:.0f} tokens requested, {totals[source]} available "
                               f"({epochs:.2f} epochs > max_epochs {recipe.max_epochs})")
        docs = frames[source].with_columns(_order_key(recipe.seed, "doc_id").alias("_k")).sort("_k")
        full = int(epochs)
        picked += [docs.with_columns(pl.lit(e, pl.Int32).alias("epoch")) for e in range(full)]
        rest = quota - full * totals[source]
        part = docs.filter(pl.Series(fill_quota(docs["n_tokens"].to_list(), rest), dtype=pl.Boolean))
        picked.append(part.with_columns(pl.lit(full, pl.Int32).alias("epoch")))
        if full == 0:
            unpicked.append(docs.join(part, on="doc_id", how="anti").select(
                "doc_id", "source", "n_tokens", pl.lit("not_sampled").alias(DROP_REASON)))
    mixed = pl.concat(picked, how="vertical_relaxed")
    mixed = mixed.with_columns(_order_key(recipe.seed, "source", "doc_id", pl.col("epoch").cast(pl.String)).alias("_k"))
    dropped = pl.concat(unpicked) if unpicked else pl.DataFrame(
        schema={"doc_id": pl.String, "source": pl.String, "n_tokens": pl.Int64, DROP_REASON: pl.String})
    return mixed.sort("_k").drop("_k"), dropped


def token_shares(mixed: pl.DataFrame) -> dict[str, float]:
    per = mixed.group_by("source").agg(pl.col("n_tokens").sum()).sort("source")
    total = per["n_tokens"].sum() or 1
    return {s: n / total for s, n in per.iter_rows()}


# --- asset wrapper ---------------------------------------------------------------------------------------------
def build(cfg, version: str) -> dg.AssetsDefinition:

    recipe = cfg.recipe

    @dg.asset(code_version=version, op_tags=pod("2", "8Gi"), group_name="curation", freshness_policy=DAILY,
              ins={"synthetic": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
              check_specs=[dg.AssetCheckSpec("weights_honoured", asset="mixed", blocking=True,
                                             description="token share of every source within 2 % of the recipe")],
              metadata={"recipe": recipe.name})
    def mixed(context: dg.AssetExecutionContext, synthetic: dict[str, pl.LazyFrame], cost_guard: CostGuard):
        """The recipe's mixture: synthetic rows of every recipe source + `n_tokens`, `epoch`, in a seeded order."""
        frames = {s: synthetic[s].collect() for s in recipe.weights if s in synthetic}
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(sum(f.estimated_size() for f in frames.values()))])
        mix, dropped = mix_sources(frames, recipe)
        shares = token_shares(mix)
        out = StepOutput(kept=mix, dropped=dropped, rows_in=sum(f.height for f in frames.values()),
                         bytes_in=sum(f.estimated_size() for f in frames.values()), config_version=version,
                         extra={"recipe": recipe.name, **transfer,
                                **{f"share_{s}": round(v, 4) for s, v in shares.items()}})
        yield dg.Output(out)
        off = {s: round(shares.get(s, 0.0) - w, 4) for s, w in recipe.normalised_weights().items()}
        yield dg.AssetCheckResult(check_name="weights_honoured", passed=all(abs(d) <= 0.02 for d in off.values()),
                                  metadata={f"deviation_{s}": d for s, d in off.items()})

    return mixed
