"""deduped: the source's filtered documents minus what the corpus-wide `dedup_clusters` ledger drops
(`core/dedup.py: apply_ledger`) and minus the documents that share an n-gram with an evaluation set of
`decontam_index` (`core/decontam.py: mark_contaminated`). Checks: `drop_rate`, `no_cross_zone_bytes`."""

import dagster as dg
import polars as pl

from curation_assets.core.decontam import Index, mark_contaminated
from curation_assets.core.dedup import apply_ledger
from curation_assets.core.frames import StepOutput, split_kept
from curation_assets.core.minhash import empty_ledger
from curation_assets.steps.common import drop_rate, enforce_transfers, failed_checks_of_latest, step
from resources.cost_guard import CostGuard


def build(cfg, version: str) -> list:
    """`deduped` per source and its checks."""
    t = cfg.thresholds.deduped

    @step(version, t.pod, {"drop_rate": drop_rate(t.max_drop_rate)})
    def deduped(
        context: dg.AssetExecutionContext,
        filtered: pl.LazyFrame,
        dedup_clusters: pl.LazyFrame,
        decontam_index: pl.LazyFrame,
        cost_guard: CostGuard,
    ):
        """Filtered documents (same columns) minus exact and near duplicates, within and across sources (keep rule:
        source priority, then smallest doc_id), and minus documents that share an n-gram with an eval set. Dropped
        rows name their kept representative in `dup_cluster`, a contaminated one its `eval_set` and `eval_ngram`."""
        docs = filtered.collect()
        enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        failed = failed_checks_of_latest(context.instance, "decontam_index", ["eval_sets_indexed"], [None])
        if failed:  # a run of finish_source alone does not see dedupe_corpus's blocking check
            raise dg.Failure(f"the latest decontam_index failed its blocking check {failed[None]}: fix the eval sets")
        mine = (
            dedup_clusters.filter(pl.col("source") == context.partition_key).collect()
            if dedup_clusters.collect_schema().len()
            else empty_ledger()
        )
        index = Index.of(decontam_index.collect() if decontam_index.collect_schema().len() else pl.DataFrame())
        kept, dropped = split_kept(mark_contaminated(apply_ledger(docs, mine), index))
        yield dg.Output(
            StepOutput(
                kept=kept.drop("dup_cluster", "eval_set", "eval_ngram"),
                dropped=dropped,
                rows_in=docs.height,
                bytes_in=docs.estimated_size(),
                config_version=version,
                extra={"clusters": kept["dup_cluster"].drop_nulls().n_unique(), "eval_ngrams": len(index)},
            )
        )

    return [deduped]
