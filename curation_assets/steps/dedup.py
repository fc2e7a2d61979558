"""Corpus-wide dedup as assets (`core/dedup.py`, `core/minhash.py`): `dedup_signatures` (map, per source) ->
`dedup_clusters` (band join + components over every source, with a source priority); `deduped` applies the ledger
per source. Checks: `drop_rate` (signatures), `removal_rate` (clusters), `no_cross_zone_bytes`.

A new or changed source re-materializes only its own `dedup_signatures` partition; `dedup_clusters` re-reads the stored
signatures of the others. Within `dedup_clusters` the band join runs per (band, hash partition) task over the signature
columns and the components over the verified edges only (see `core/minhash.py`); today those tasks run one after the
other in one step, each holding its slice of band keys plus the corpus's (num_perm x 4 bytes per document)
signature matrix for the Jaccard check.
"""

import itertools
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.core.dedup import DedupParams, cluster, ledger_summary, signatures
from curation_assets.core.frames import StepOutput, empty_frame
from curation_assets.core.minhash import empty_ledger
from curation_assets.steps.common import (
    drop_rate,
    enforce_transfers,
    run_tasks,
    step,
)
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine

SIGNATURE_BATCH_ROWS = 20_000  # rows of `filtered` per task: a task's memory is bounded by its range, not the source
NO_DROPS = {"doc_id": pl.String(), "drop_reason": pl.String()}


@dataclass(frozen=True)
class SignatureTask:
    """A batch of a source's filtered documents: the unit of work of `dedup_signatures` (a Ray task)."""

    batch: pl.DataFrame
    params: DedupParams
    source: str


def signature_task(task: SignatureTask) -> tuple[tuple[list[pl.DataFrame], int], int]:
    """(signature frames, text bytes) of one row range (`core.dedup.signatures`); runs in a Ray worker."""
    frames = list(signatures(task.batch, task.params, source=task.source))
    return (frames, task.batch.estimated_size()), task.batch.height


def build_signatures(cfg, version: str) -> list:
    """`dedup_signatures` per source and its checks."""
    params = cfg.dedup_params

    @step(version, cfg.thresholds.deduped.pod, {"drop_rate": drop_rate(0.0)})
    def dedup_signatures(
        context: dg.AssetExecutionContext, filtered: pl.LazyFrame, cost_guard: CostGuard, engine: RayEngine
    ):
        """A fingerprint of each of the source's filtered documents (an exact-text hash and MinHash signatures),
        what the corpus-wide duplicate search compares."""
        source = context.partition_key
        docs = filtered.select("doc_id", "text")
        enforce_transfers(cost_guard, [cost_guard.data_root(0)])
        n = docs.select(pl.len()).collect().item()
        batches = docs.collect_batches(chunk_size=SIGNATURE_BATCH_ROWS)
        tasks = (SignatureTask(batch, params, source) for batch in batches)
        labels = (f"{source} batch {k}" for k in itertools.count())
        progress = Progress(total=-(-n // SIGNATURE_BATCH_ROWS))
        seen = {"rows": 0, "bytes": 0}

        def parts():
            for frames, nbytes in run_tasks(context, engine, signature_task, tasks, labels, progress):
                seen["rows"] += sum(f.height for f in frames)
                seen["bytes"] += nbytes
                yield from frames

        yield dg.Output(
            StepOutput(
                kept=parts(),
                dropped=empty_frame(NO_DROPS),
                rows_in=lambda: seen["rows"],
                bytes_in=lambda: seen["bytes"],
                config_version=version,
                extra=lambda: {"signature_version": params.signature_version, **progress.metadata()},
            )
        )

    return [dedup_signatures]


def build_clusters(cfg, version: str) -> list:
    """The unpartitioned `dedup_clusters` ledger and its checks."""
    params = cfg.dedup_params
    lo, hi = params.removal_band

    def removal_rate(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        rate = float(md["removal_rate"])
        return lo <= rate <= hi, {"removal_rate": rate, "min": lo, "max": hi}

    checks = {"removal_rate": ("share of all documents removed is within removal_band", removal_rate)}

    @step(
        version,
        cfg.thresholds.deduped.pod,
        checks,
        partitioned=False,
        ins={"dedup_signatures": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
    )
    def dedup_clusters(context: dg.AssetExecutionContext, dedup_signatures: dict[str, pl.LazyFrame]):
        """Cluster ledger over every source: doc_id, source, cluster_id, cluster_size, kept, kept_doc_id, kept_source,
        drop_reason, jaccard (estimated vs the kept representative). Keep rule: source priority, then doc_id."""
        frames = [lf.collect() for _, lf in sorted(dedup_signatures.items())]
        sigs = pl.concat([f for f in frames if f.width], how="vertical") if any(f.width for f in frames) else None
        ledger = cluster(sigs, params) if sigs is not None and sigs.height else empty_ledger()
        sigs = sigs if sigs is not None else pl.DataFrame()
        summary = ledger_summary(ledger, sigs.height)
        # the share of documents removed is the series to watch across runs (and what the check bounds)
        summary["removal_rate"] = dg.MetadataValue.float(summary["removal_rate"])
        yield dg.Output(
            StepOutput(
                kept=ledger,
                dropped=empty_frame(NO_DROPS),
                rows_in=ledger.height,
                bytes_in=sigs.estimated_size(),
                config_version=version,
                extra={**summary, "priority": ", ".join(params.priority)},
            )
        )

    return [dedup_clusters]
