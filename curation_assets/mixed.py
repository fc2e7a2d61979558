"""mixed: the recipe's token-weighted mixture over components (each source's curated docs and its synthetic set)."""

import hashlib
import math

import dagster as dg
import polars as pl

from curation_assets._dagster import (
    enforce_transfers,
    failed_checks_of_latest,
    freshness_policy,
    pod,
    source_ages_hours,
    traceable,
)
from curation_assets.config import Recipe, version_of
from curation_assets.frames import DROP_REASON, StepOutput
from resources.cost_guard import CostGuard


class MixtureError(ValueError):
    """The recipe cannot be honoured with the data available."""


def _order_key(seed: int, *cols: str) -> pl.Expr:
    # sha256 over the key columns: a shuffle that is stable across polars versions and machines
    return pl.concat_str([pl.lit(str(seed)), *cols], separator="\x1f").map_elements(
        lambda s: hashlib.sha256(s.encode()).hexdigest()[:16], return_dtype=pl.String
    )


def split_components(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """`synthetic` partitions (source -> docs) as components: `<source>` = rows without a `generator`, and
    `<source>.synthetic` = the rows a generator made. Adds the `component` column."""
    out = {}
    for source, df in frames.items():
        gen = pl.col("generator") if "generator" in df.columns else pl.lit(None, pl.String)
        df = df.with_columns(
            pl.when(gen.is_null()).then(pl.lit(source)).otherwise(pl.lit(f"{source}.synthetic")).alias("component")
        )
        for (name,), part in df.partition_by("component", as_dict=True, maintain_order=True).items():
            out[name] = part
    return out


def unimax(available: dict[str, int], caps: dict[str, float], budget: int) -> dict[str, float]:
    """UniMax (Chung et al. 2023, Algorithm 1): visit components from the smallest; each gets an equal split of the
    remaining budget, capped at caps[c] epochs of its tokens; what a small one cannot take goes to the larger ones."""
    order = sorted(available, key=lambda c: (available[c], c))
    left, alloc = float(budget), {}
    for i, c in enumerate(order):
        alloc[c] = min(left / (len(order) - i), caps[c] * available[c])
        left -= alloc[c]
    if left > 0.5:
        raise MixtureError(f"budget of {budget} tokens exceeds every component at its epoch cap ({budget - left:.0f})")
    return alloc


def quotas(recipe: Recipe, available: dict[str, int]) -> dict[str, float]:
    """Token quota per component: the recipe's shares times the target."""
    caps = {c: recipe.epoch_cap(c) for c in available}
    if recipe.sampling == "unimax":
        return unimax(available, caps, recipe.target_tokens)
    if recipe.sampling == "temperature":
        raw = {c: t**recipe.alpha for c, t in available.items()}
        shares = {c: r / sum(raw.values()) for c, r in raw.items()}
    else:
        shares = recipe.normalised_weights()
    # no target: the largest mixture that needs no repetition (the scarcest component, relative to its share, is
    # used exactly once); repeating up to the caps is something a recipe asks for with target_tokens
    target = recipe.target_tokens or math.floor(min(min(caps[c], 1.0) * available[c] / w for c, w in shares.items()))
    return {c: w * target for c, w in shares.items()}


def fill_quota(n_tokens: list[int], quota: float) -> list[bool]:
    """Greedy fill in the given order: take a document when that brings the total closer to the quota, skip it
    otherwise and keep scanning, so one long document cannot overshoot or starve a component's share (the error is at
    most half of the smallest document that did not fit)."""
    taken, keep = 0, []
    for n in n_tokens:
        keep.append(taken + n / 2 < quota)
        taken += n if keep[-1] else 0
    return keep


def mix_sources(frames: dict[str, pl.DataFrame], recipe: Recipe) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Sample documents so that each component's share of tokens matches the recipe.

    `frames`: source -> DOC_SCHEMA + `n_tokens` (+ `generator` on synthetic rows). Returns (mixed: inputs +
    `component`, `epoch`, in a seeded shuffled order; not_sampled: doc_id, source, component, n_tokens, drop_reason;
    manifest: recipe hash and, per component, available/quota/sampled tokens, epochs, target and realized share).
    Whole epochs are repeated in full; the last partial epoch takes documents in a seeded order, greedily filled to its
    quota (`fill_quota`). Weights are over tokens (NeMo Curator's `blend_datasets` weights documents, which lets a
    component of long documents dominate).
    """
    comps = split_components({s: f for s, f in frames.items() if s in recipe.sources()})
    names = recipe.component_names()
    available = {c: int(comps[c]["n_tokens"].sum()) if c in comps else 0 for c in names}
    empty = sorted(c for c, t in available.items() if t == 0)
    if empty:
        raise MixtureError(
            f"recipe {recipe.name!r} needs components with no tokens (not materialized, or nothing "
            f"left after curation): {empty}"
        )
    quota = quotas(recipe, available)
    picked, unpicked = [], []
    for c in names:
        epochs = quota[c] / available[c]
        if epochs > recipe.epoch_cap(c) + 1e-9:
            raise MixtureError(
                f"{c}: {quota[c]:.0f} tokens requested, {available[c]} available "
                f"({epochs:.2f} epochs > cap {recipe.epoch_cap(c)})"
            )
        docs = comps[c].with_columns(_order_key(recipe.seed, "doc_id").alias("_k")).sort("_k")
        full = int(epochs)
        picked += [docs.with_columns(pl.lit(e, pl.Int32).alias("epoch")) for e in range(full)]
        part = docs.filter(
            pl.Series(fill_quota(docs["n_tokens"].to_list(), quota[c] - full * available[c]), dtype=pl.Boolean)
        )
        picked.append(part.with_columns(pl.lit(full, pl.Int32).alias("epoch")))
        if full == 0:
            unpicked.append(
                docs.join(part, on="doc_id", how="anti").select(
                    "doc_id", "source", "component", "n_tokens", pl.lit("not_sampled").alias(DROP_REASON)
                )
            )
    mixed = pl.concat(picked, how="diagonal_relaxed")
    mixed = mixed.with_columns(
        _order_key(recipe.seed, "component", "doc_id", pl.col("epoch").cast(pl.String)).alias("_k")
    )
    mixed = mixed.sort("_k").drop("_k")
    dropped = (
        pl.concat(unpicked)
        if unpicked
        else pl.DataFrame(
            schema={
                "doc_id": pl.String,
                "source": pl.String,
                "component": pl.String,
                "n_tokens": pl.Int64,
                DROP_REASON: pl.String,
            }
        )
    )
    return mixed, dropped, manifest_of(recipe, mixed, comps, quota)


def manifest_of(recipe: Recipe, mixed: pl.DataFrame, comps: dict[str, pl.DataFrame], quota: dict[str, float]) -> dict:
    total_quota = sum(quota.values())
    sampled = dict(mixed.group_by("component").agg(pl.col("n_tokens").sum()).iter_rows())
    docs = dict(mixed.group_by("component").len().iter_rows())
    total = sum(sampled.values()) or 1
    rows = {}
    for c in recipe.component_names():
        avail = int(comps[c]["n_tokens"].sum())
        rows[c] = {
            "available_tokens": avail,
            "available_docs": comps[c].height,
            "quota_tokens": round(quota[c]),
            "sampled_tokens": int(sampled.get(c, 0)),
            "sampled_docs": int(docs.get(c, 0)),
            "epochs": round(sampled.get(c, 0) / avail, 4),
            "epoch_cap": recipe.epoch_cap(c),
            "target_share": round(quota[c] / total_quota, 6),
            "realized_share": round(sampled.get(c, 0) / total, 6),
        }
    return {
        "recipe": recipe.name,
        "recipe_hash": version_of(recipe),
        "sampling": recipe.sampling,
        "seed": recipe.seed,
        "tolerance": recipe.tolerance,
        "tokens": int(total),
        "documents": mixed.height,
        "components": rows,
        "unused_components": sorted(set(comps) - set(rows)),
    }


def check_mixture(manifest: dict) -> dict[str, object]:
    """Facts the blocking checks assert: realized shares within tolerance of the targets; epochs within the caps."""
    comps = manifest["components"]
    off = {c: round(r["realized_share"] - r["target_share"], 6) for c, r in comps.items()}
    over = sorted(c for c, r in comps.items() if r["epochs"] > r["epoch_cap"] + 1e-9)
    return {
        "shares_ok": all(abs(d) <= manifest["tolerance"] for d in off.values()),
        "deviation": off,
        "over_cap": over,
        "epochs_ok": not over,
    }


def mixture_table(manifest: dict, width: int = 24) -> str:
    """Markdown table of the mixture with a bar chart of the realized shares."""
    lines = [
        "| component | available tokens | sampled tokens | epochs (cap) | target | realized | chart |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c, r in manifest["components"].items():
        bar = "█" * max(round(r["realized_share"] * width), r["realized_share"] > 0)
        lines.append(
            f"| {c} | {r['available_tokens']:,} | {r['sampled_tokens']:,} | {r['epochs']:.2f} ({r['epoch_cap']:g})"
            f" | {r['target_share']:.1%} | {r['realized_share']:.1%} | `{bar:<{width}}` |"
        )
    lines.append(
        f"\nrecipe `{manifest['recipe']}` ({manifest['sampling']}, seed {manifest['seed']}, hash "
        f"`{manifest['recipe_hash']}`): {manifest['tokens']:,} tokens in {manifest['documents']:,} documents"
    )
    return "\n".join(lines)


# --- asset wrapper ---------------------------------------------------------------------------------------------
def build(cfg, version: str) -> dg.AssetsDefinition:

    recipe = cfg.recipe

    @dg.asset(
        code_version=version,
        op_tags=pod(cfg.thresholds.mixed.pod),
        group_name="curation",
        freshness_policy=freshness_policy(cfg.thresholds.freshness),
        ins={"synthetic": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
        check_specs=[
            dg.AssetCheckSpec(
                "weights_honoured",
                asset="mixed",
                blocking=True,
                description="realized token share of every component within the recipe's tolerance of its target",
            ),
            dg.AssetCheckSpec(
                "sources_fresh",
                asset="mixed",
                blocking=True,
                description="every source's curated output is younger than max_source_age_hours (else nothing is mixed)",
            ),
            dg.AssetCheckSpec(
                "epochs_within_cap",
                asset="mixed",
                blocking=True,
                description="no component repeated more than its epoch cap",
            ),
        ],
        metadata={"recipe": recipe.name},
    )
    @traceable
    def mixed(context: dg.AssetExecutionContext, synthetic: dict[str, pl.LazyFrame], cost_guard: CostGuard):
        """The recipe's mixture: rows of every recipe component + `n_tokens`, `component`, `epoch`, in a seeded order."""
        fresh = cfg.thresholds.freshness.max_source_age_hours
        ages = source_ages_hours(context.instance, "synthetic", sorted(recipe.sources()))
        stale = {s: a for s, a in ages.items() if fresh is not None and a is not None and a > fresh}
        if stale:  # refuse before reading anything: a mixture must not silently mix yesterday's web with today's code
            raise dg.Failure(
                f"sources older than {fresh} h, refusing to mix: {stale}",
                allow_retries=False,
                metadata={f"age_hours_{s}": a for s, a in stale.items()},
            )
        failed = failed_checks_of_latest(
            context.instance, "synthetic", ["drop_rate", "no_cross_zone_bytes"], sorted(recipe.sources())
        )
        if failed:  # a source whose latest output failed a blocking check is not mixed, whatever ran after it
            raise dg.Failure(
                f"refusing to mix: blocking checks failed on the latest synthetic of {failed}", allow_retries=False
            )
        frames = {s: synthetic[s].collect() for s in sorted(recipe.sources()) if s in synthetic}
        size = sum(f.estimated_size() for f in frames.values())
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(size)])
        mix, dropped, manifest = mix_sources(frames, recipe)
        facts = check_mixture(manifest)
        out = StepOutput(
            kept=mix,
            dropped=dropped,
            rows_in=sum(f.height for f in frames.values()),
            bytes_in=size,
            config_version=version,
            extra={
                "recipe": recipe.name,
                "recipe_hash": manifest["recipe_hash"],
                **transfer,
                "mixture": dg.MetadataValue.md(mixture_table(manifest)),
                "manifest": dg.MetadataValue.json(manifest),
                **{f"share_{c}": r["realized_share"] for c, r in manifest["components"].items()},
            },
        )
        yield dg.Output(out)
        yield dg.AssetCheckResult(
            check_name="weights_honoured",
            passed=facts["shares_ok"],
            metadata={"tolerance": recipe.tolerance, **{f"deviation_{c}": d for c, d in facts["deviation"].items()}},
        )
        yield dg.AssetCheckResult(
            check_name="sources_fresh",
            passed=True,
            metadata={"max_source_age_hours": fresh or 0, **{f"age_hours_{s}": a or 0 for s, a in ages.items()}},
        )
        yield dg.AssetCheckResult(
            check_name="epochs_within_cap",
            passed=facts["epochs_ok"],
            metadata={
                "over_cap": ", ".join(facts["over_cap"]) or "none",
                **{f"epochs_{c}": r["epochs"] for c, r in manifest["components"].items()},
            },
        )

    return mixed
