"""mixed: the recipe's token-weighted mixture over components (each source's curated docs and its synthetic set)."""

import math

import polars as pl

from curation_assets.config import Recipe, version_of
from curation_assets.core.frames import DROP_REASON, seeded_hash_expr


class MixtureError(ValueError):
    """The recipe cannot be honoured with the data available."""


def _order_key(seed: int, *cols: str) -> pl.Expr:
    """A seeded shuffle key over the key columns, stable across polars versions and machines."""
    return seeded_hash_expr(pl.concat_str([pl.lit(str(seed)), *cols], separator="\x1f"))


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
    Every input document is a row of the mixture or of not_sampled (`not_sampled`, or `not_in_recipe` for a component
    the recipe does not name).
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
    picked = []
    # a component the recipe does not name (say `multilingual.synthetic`) is dropped whole, never silently left out
    unpicked = [
        comps[c].select("doc_id", "source", "component", "n_tokens", pl.lit("not_in_recipe").alias(DROP_REASON))
        for c in sorted(set(comps) - set(names))
    ]
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
