"""Corpus-wide dedup as assets: `dedup_signatures` (map, per source) -> `dedup_clusters` (band join + components, over
every source, with a source priority) -> `deduped` with `scope="corpus"` applies the ledger per source.

A new or changed source re-materializes only its own `dedup_signatures` partition; `dedup_clusters` re-reads the stored
signatures of the others. Within `dedup_clusters` the band join runs per (band, hash partition) task over the signature
columns and the components over the verified edges only (see `dedup_minhash`); today those tasks run one after the
other in one step, each holding its slice of band keys plus the corpus's (num_perm x 4 bytes per document)
signature matrix for the Jaccard check.
"""

from collections import Counter

import dagster as dg
import polars as pl

from curation_assets.steps.common import (
    drop_rate_result,
    enforce_transfers,
    source_step,
    pod,
    traceable,
)
from curation_assets.core.minhash import empty_ledger
from curation_assets.core.dedup import DedupParams, cluster, signatures
from curation_assets.core.frames import StepOutput, empty_frame
from resources.cost_guard import CostGuard

SIGNATURE_BATCH_ROWS = 20_000  # rows pulled from `filtered` at a time: memory is bounded by a batch, not a source


def corpus_params(cfg) -> DedupParams:
    """The one parameter set of cross-source dedup: the `deduped` default, with the sources config order as the default
    priority. Per-source overrides may not change signatures (they would not be comparable)."""
    params = DedupParams(**cfg.thresholds.deduped.default)
    for source in cfg.source_names:
        own = DedupParams(**cfg.thresholds.deduped.for_source(source))
        if own.signature_version != params.signature_version:
            raise ValueError(
                f"deduped.per_source.{source} changes the signature params: cross-source dedup needs one set"
            )
    return params if params.priority else params.model_copy(update={"priority": tuple(cfg.source_names)})


def ledger_metadata(ledger: pl.DataFrame, n_docs: int) -> dict[str, object]:
    dropped = ledger.filter(~pl.col("kept"))
    cross = dropped.filter(pl.col("source") != pl.col("kept_source"))
    sizes = Counter(ledger.group_by("cluster_id").agg(n=pl.len())["n"].to_list())
    by_source = dropped.group_by("source", "drop_reason").len().sort("source", "drop_reason")
    return {
        "docs": n_docs,
        "clusters": len(ledger["cluster_id"].unique()),
        "removed_exact": dropped.filter(pl.col("drop_reason") == "exact_duplicate").height,
        "removed_near": dropped.filter(pl.col("drop_reason") == "near_duplicate").height,
        "removed_cross_source": cross.height,
        "removal_rate": round(dropped.height / n_docs, 6) if n_docs else 0.0,
        "cluster_size_histogram": dg.MetadataValue.json({str(k): v for k, v in sorted(sizes.items())}),
        "removed_by_source": dg.MetadataValue.json({f"{s}/{r}": n for s, r, n in by_source.iter_rows()}),
    }


def build_signatures(cfg, version: str) -> dg.AssetsDefinition:
    @source_step("dedup_signatures", version, cfg.thresholds.deduped.pod)
    def dedup_signatures(context: dg.AssetExecutionContext, filtered: pl.LazyFrame, cost_guard: CostGuard):
        """MinHash signatures (datasketch affine32 hash values) and exact keys of one source's filtered documents."""
        params = corpus_params(cfg)
        source = context.partition_key
        docs = filtered.select("doc_id", "text")
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(0)])
        seen = {"rows": 0, "bytes": 0}

        def parts():
            for batch in docs.collect_batches(chunk_size=SIGNATURE_BATCH_ROWS):
                seen["rows"] += batch.height
                seen["bytes"] += batch.estimated_size()
                yield from signatures(batch, params, source=source)

        out = StepOutput(
            kept=parts(),
            dropped=empty_frame({"doc_id": pl.String(), "drop_reason": pl.String()}),
            rows_in=lambda: seen["rows"],
            bytes_in=lambda: seen["bytes"],
            config_version=version,
            extra={"signature_version": params.signature_version, **transfer},
        )
        yield dg.Output(out)
        yield drop_rate_result(out, 0.0)

    return dedup_signatures


def build_clusters(cfg, version: str) -> dg.AssetsDefinition:
    @dg.asset(
        code_version=version,
        op_tags=pod(cfg.thresholds.deduped.pod),
        group_name="curation",
        ins={"dedup_signatures": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
        check_specs=[
            dg.AssetCheckSpec(
                "removal_rate",
                asset="dedup_clusters",
                blocking=True,
                description="share of all documents removed is within removal_band",
            )
        ],
    )
    @traceable
    def dedup_clusters(context: dg.AssetExecutionContext, dedup_signatures: dict[str, pl.LazyFrame]):
        """Cluster ledger over every source: doc_id, source, cluster_id, cluster_size, kept, kept_doc_id, kept_source,
        drop_reason, jaccard (estimated vs the kept representative). Keep rule: source priority, then doc_id."""
        params = corpus_params(cfg)
        frames = [lf.collect() for _, lf in sorted(dedup_signatures.items())]
        sigs = pl.concat([f for f in frames if f.width], how="vertical") if any(f.width for f in frames) else None
        ledger = cluster(sigs, params) if sigs is not None and sigs.height else empty_ledger()
        sigs = sigs if sigs is not None else pl.DataFrame()
        md = ledger_metadata(ledger, sigs.height)
        out = StepOutput(
            kept=ledger,
            dropped=empty_frame({"doc_id": pl.String(), "drop_reason": pl.String()}),
            rows_in=ledger.height,
            bytes_in=sigs.estimated_size(),
            config_version=version,
            extra={**md, "priority": ", ".join(params.priority)},
        )
        yield dg.Output(out)
        lo, hi = params.removal_band
        rate = md["removal_rate"]
        yield dg.AssetCheckResult(
            check_name="removal_rate", passed=lo <= rate <= hi, metadata={"removal_rate": rate, "min": lo, "max": hi}
        )

    return dedup_clusters
