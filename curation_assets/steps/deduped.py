"""deduped: the source's filtered documents minus what the corpus-wide `dedup_clusters` ledger drops
(`core/dedup.py: apply_ledger`). Checks: `drop_rate`, `no_cross_zone_bytes`."""

import dagster as dg
import polars as pl

from curation_assets.core.dedup import apply_ledger
from curation_assets.core.frames import StepOutput, split_kept
from curation_assets.core.minhash import empty_ledger
from curation_assets.steps.common import drop_rate, enforce_transfers, step
from resources.cost_guard import CostGuard


def build(cfg, version: str) -> list:
    """`deduped` per source and its checks."""
    t = cfg.thresholds.deduped

    @step(version, t.pod, {"drop_rate": drop_rate(t.max_drop_rate)})
    def deduped(
        context: dg.AssetExecutionContext, filtered: pl.LazyFrame, dedup_clusters: pl.LazyFrame, cost_guard: CostGuard
    ):
        """Filtered documents (same columns) minus exact and near duplicates, within and across sources (keep rule:
        source priority, then smallest doc_id); dropped rows name their kept representative in `dup_cluster`."""
        docs = filtered.collect()
        enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        mine = (
            dedup_clusters.filter(pl.col("source") == context.partition_key).collect()
            if dedup_clusters.collect_schema().len()
            else empty_ledger()
        )
        kept, dropped = split_kept(apply_ledger(docs, mine))
        yield dg.Output(
            StepOutput(
                kept=kept.drop("dup_cluster"),
                dropped=dropped,
                rows_in=docs.height,
                bytes_in=docs.estimated_size(),
                config_version=version,
                extra={"clusters": kept["dup_cluster"].drop_nulls().n_unique()},
            )
        )

    return [deduped]
