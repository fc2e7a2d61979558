"""mixed: the asset wrapper of core/mixing.py."""

import hashlib
import math

import dagster as dg
import polars as pl

from curation_assets.steps.common import (
    enforce_transfers,
    failed_checks_of_latest,
    freshness_policy,
    pod,
    source_ages_hours,
    traceable,
)
from curation_assets.config import Recipe, version_of
from curation_assets.core.frames import DROP_REASON, StepOutput
from resources.cost_guard import CostGuard


from curation_assets.core.mixing import *  # FIXME

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
