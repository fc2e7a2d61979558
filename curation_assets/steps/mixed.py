"""mixed: the recipe's token-weighted mixture over components, each source's curated documents and its synthetic set
(`core/mixing.py`). Refuses before reading when a source is stale or its latest output failed a blocking check.
Checks: `weights_honoured`, `epochs_within_cap`, `sources_fresh`, `no_cross_zone_bytes`."""

import dagster as dg
import polars as pl

from curation_assets.core.frames import Added, StepOutput
from curation_assets.core.mixing import check_mixture, mix_sources, mixture_table
from curation_assets.steps.common import (
    enforce_transfers,
    failed_checks_of_latest,
    freshness_policy,
    source_ages_hours,
    step,
)
from resources.cost_guard import CostGuard


def build(cfg, version: str) -> list:
    """The fan-in `mixed` asset and its checks."""
    recipe = cfg.recipe
    fresh = cfg.thresholds.freshness.max_source_age_hours

    def weights_honoured(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        facts = check_mixture(md["details"]["manifest"])
        return facts["shares_ok"], {
            "tolerance": recipe.tolerance,
            **{f"deviation_{c}": d for c, d in facts["deviation"].items()},
        }

    def epochs_within_cap(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        manifest = md["details"]["manifest"]
        facts = check_mixture(manifest)
        epochs = {f"epochs_{c}": r["epochs"] for c, r in manifest["components"].items()}
        return facts["epochs_ok"], {"over_cap": ", ".join(facts["over_cap"]) or "none", **epochs}

    def sources_fresh(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        ages = {f"age_hours_{s}": a for s, a in md["details"]["age_hours"].items()}
        return fresh is None or all(a <= fresh for a in ages.values()), {"max_source_age_hours": fresh or 0, **ages}

    checks = {
        "weights_honoured": (
            "realized token share of every component within the recipe's tolerance of its target",
            weights_honoured,
        ),
        "sources_fresh": (
            "every source's curated output is younger than max_source_age_hours (else nothing is mixed)",
            sources_fresh,
        ),
        "epochs_within_cap": ("no component repeated more than its epoch cap", epochs_within_cap),
    }

    @step(
        version,
        cfg.thresholds.mixed.pod,
        checks,
        partitioned=False,
        freshness_policy=freshness_policy(cfg.thresholds.freshness),
        ins={"synthetic": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
        metadata={"recipe": recipe.name},
    )
    def mixed(context: dg.AssetExecutionContext, synthetic: dict[str, pl.LazyFrame], cost_guard: CostGuard):
        """The recipe's mixture: rows of every recipe component + `n_tokens`, `component`, `epoch`, in a seeded order."""
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
        enforce_transfers(cost_guard, [cost_guard.data_root(size)])
        mix, dropped, manifest = mix_sources(frames, recipe)
        repeats = mix.filter(pl.col("epoch") > 0)  # epoch 0 holds every sampled document once
        yield dg.Output(
            StepOutput(
                kept=mix,
                dropped=dropped,
                rows_in=sum(f.height for f in frames.values()),
                bytes_in=size,
                config_version=version,
                added=Added("repeats (epochs past the first)", repeats.height, int(repeats["n_tokens"].sum())),
                extra={
                    "recipe": recipe.name,
                    "recipe_hash": manifest["recipe_hash"],
                    "mixture": dg.MetadataValue.md(mixture_table(manifest)),  # the realized shares, in one table
                    "manifest": manifest,
                    "age_hours": {s: a or 0 for s, a in ages.items()},
                },
            )
        )

    return [mixed]
