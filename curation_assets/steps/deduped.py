"""deduped: the asset wrapper of core/dedup.py."""

from collections.abc import Iterator
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator

from curation_assets.steps.common import (
    drop_rate_result,
    enforce_transfers,
    source_step,
)
from curation_assets.core.minhash import HASH_SCHEME, cluster_signatures, empty_ledger, signature_frame
from curation_assets.core.frames import StepOutput, split_kept, stable_id
from resources.cost_guard import CostGuard


from curation_assets.core.dedup import *  # FIXME

def build(cfg, version: str) -> dg.AssetsDefinition:
    """`deduped` per source: the source's filtered documents minus those the corpus-wide `dedup_clusters` ledger drops
    (near duplicates within the source and across sources; see `dedup_corpus`)."""

    @source_step("deduped", version, cfg.thresholds.deduped.pod)
    def deduped(
        context: dg.AssetExecutionContext, filtered: pl.LazyFrame, dedup_clusters: pl.LazyFrame, cost_guard: CostGuard
    ):
        """Filtered documents (same columns) minus exact and near duplicates, within and across sources (keep rule:
        source priority, then smallest doc_id); dropped rows name their kept representative in `dup_cluster`."""
        docs = filtered.collect()
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        mine = (
            dedup_clusters.filter(pl.col("source") == context.partition_key).collect()
            if dedup_clusters.collect_schema().len()
            else empty_ledger()
        )
        kept, dropped = split_kept(apply_ledger(docs, mine))
        out = StepOutput(
            kept=kept.drop("dup_cluster"),
            dropped=dropped,
            rows_in=docs.height,
            bytes_in=docs.estimated_size(),
            config_version=version,
            extra={"clusters": kept["dup_cluster"].drop_nulls().n_unique(), **transfer},
        )
        yield dg.Output(out)
        yield drop_rate_result(out, cfg.thresholds.deduped.max_drop_rate)

    return deduped
