"""deduped: the source's filtered documents minus what the corpus-wide `dedup_clusters` ledger drops
(`core/dedup.py: apply_ledger`) and minus the documents that share an n-gram with an evaluation set of
`decontam_index` (`core/decontam.py: mark_contaminated`). Checks: `drop_rate`, `no_cross_zone_bytes`.

Both are per-document decisions, so each row range of filtered (as filtered's tasks cut them) is a Ray task: it gets
its documents' rows of the ledger and the eval-set index and writes its kept and its dropped documents as its parts
of the staging version: no document returns to the step."""

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.core.decontam import Index, mark_contaminated
from curation_assets.core.dedup import apply_ledger
from curation_assets.core.filtering import BATCH_BYTES, BATCH_DOCS
from curation_assets.core.frames import DROPPED, StepOutput, WrittenPart, range_frames, row_ranges, split_kept
from curation_assets.core.minhash import empty_ledger
from curation_assets.steps.common import drop_rate, enforce_transfers, failed_checks_of_latest, run_tasks, step
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.versions import PartSink


@dataclass(frozen=True)
class DedupedTask:
    """A row range of a source's filtered documents with their rows of the cluster ledger: the unit of work of
    `deduped` (a Ray task)."""

    batch: pl.DataFrame
    ledger: pl.DataFrame  # the ledger rows of the batch's documents (doc_id, cluster_id, drop_reason)
    index: Index
    sink: PartSink  # where its documents go: part `part` of the kept and of the dropped ones of the version staged
    part: int


def deduped_task(task: DedupedTask) -> tuple[tuple[WrittenPart | None, WrittenPart | None, pl.Series], int]:
    """(the kept documents and the dropped ones, each as written into the staging version; the kept documents'
    cluster ids) of one row range, via `core.dedup.apply_ledger` and `core.decontam.mark_contaminated`; runs in a Ray
    worker."""
    kept, dropped = split_kept(mark_contaminated(apply_ledger(task.batch, task.ledger), task.index))
    part = task.sink.write(task.part, kept.drop("dup_cluster", "eval_set", "eval_ngram"))
    gone = task.sink.write(task.part, dropped, DROPPED)
    return (part, gone, kept["dup_cluster"].drop_nulls().unique()), task.batch.height


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
        engine: RayEngine,
    ):
        """Filtered documents (same columns) minus exact and near duplicates, within and across sources (keep rule:
        source priority, then smallest doc_id), and minus documents that share an n-gram with an eval set. Dropped
        rows name their kept representative in `dup_cluster`, a contaminated one its `eval_set` and `eval_ngram`."""
        source = context.partition_key
        sizes = filtered.select(pl.col("text").str.len_bytes()).collect().to_series()
        enforce_transfers(cost_guard, [cost_guard.data_root(int(sizes.sum() or 0))])
        failed = failed_checks_of_latest(context.instance, "decontam_index", ["eval_sets_indexed"], [None])
        if failed:  # a run of finish_source alone does not see dedupe_corpus's blocking check
            raise dg.Failure(f"the latest decontam_index failed its blocking check {failed[None]}: fix the eval sets")
        mine = (
            dedup_clusters.filter(pl.col("source") == source).select("doc_id", "cluster_id", "drop_reason").collect()
            if dedup_clusters.collect_schema().len()
            else empty_ledger().select("doc_id", "cluster_id", "drop_reason")
        )
        index = Index.of(decontam_index.collect() if decontam_index.collect_schema().len() else pl.DataFrame())
        ranges = row_ranges(sizes, BATCH_DOCS, BATCH_BYTES) or [(0, 0)]  # an empty source still has its part 0
        progress = Progress(total=len(ranges))
        seen: dict[str, object] = {"bytes": 0, "dropped": [], "clusters": []}

        def kept(sink: PartSink) -> Iterator[WrittenPart | None]:
            def tasks() -> Iterator[DedupedTask]:
                batches = range_frames(filtered.collect_batches(), ranges) if sizes.len() else [filtered.collect()]
                for k, batch in enumerate(batches):
                    seen["bytes"] += batch.estimated_size()
                    rows = mine.filter(pl.col("doc_id").is_in(batch["doc_id"].implode()))
                    yield DedupedTask(batch, rows, index, sink, k)

            labels = (f"{source} rows {start}-{start + length - 1}" for start, length in ranges)
            for part, dropped, clusters in run_tasks(context, engine, deduped_task, tasks(), labels, progress):
                seen["dropped"].append(dropped)
                seen["clusters"].append(clusters)
                yield part

        yield dg.Output(
            StepOutput(
                kept=kept,
                dropped=lambda: seen["dropped"],
                rows_in=sizes.len(),
                bytes_in=lambda: seen["bytes"],
                config_version=version,
                extra=lambda: {
                    "clusters": pl.concat(seen["clusters"]).n_unique(),
                    "eval_ngrams": len(index),
                    **progress.metadata(),
                },
            )
        )

    return [deduped]
