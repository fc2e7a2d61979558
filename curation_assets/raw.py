"""raw: every shard of a source, read into the canonical document schema; broken input goes to quarantine."""

import os
from collections.abc import Iterator

import dagster as dg
import polars as pl

from curation_assets._dagster import (
    drop_rate_result,
    drop_rate_spec,
    enforce_transfers,
    pod,
    source_partitions,
    traceable,
    with_tokens,
)
from curation_assets.frames import DOC_SCHEMA, QUARANTINE_SCHEMA, StepOutput, empty_frame
from curation_assets.readers import detect_format, read_shard
from resources.cost_guard import CostGuard, Transfer
from resources.storage import ObjectStore
from resources.tokenizer import TokenizerResource


def resolve_source(cfg, store: ObjectStore, name: str):
    """The configured source `name`, or the landing zone subdirectory `name` in the first zone that has it."""
    if name in cfg.source_names:
        return cfg.source(name)
    for zone in cfg.sources.landing_zones:
        if store.expand(f"{cfg.resolve_uri(zone.uri).rstrip('/')}/{name}/*"):
            return cfg.source(name, landed_in=zone.name)
    raise dg.Failure(f"source {name!r} is not configured and is in no landing zone")


def shard_names(uris: list[str]) -> list[str]:
    """Stable shard names: each URI relative to the deepest directory common to all of a source's files.

    doc_id hashes (source, shard, position), so a shard name must not depend on where the data root is mounted.
    """
    if len(uris) == 1:
        return [os.path.basename(uris[0])]
    common = os.path.commonpath([u.replace("s3://", "/", 1) for u in uris])
    return [u.replace("s3://", "/", 1)[len(common) :].lstrip("/") for u in uris]


# --- asset wrapper ---------------------------------------------------------------------------------------------
def build(cfg, version: str) -> dg.AssetsDefinition:

    @dg.asset(
        partitions_def=source_partitions,
        code_version=version,
        op_tags=pod(cfg.thresholds.raw.pod),
        group_name="curation",
        check_specs=[
            drop_rate_spec("raw"),
            dg.AssetCheckSpec(
                "records_accounted",
                asset="raw",
                blocking=True,
                description="rows written + rows quarantined == records seen by the readers",
            ),
        ],
    )
    @traceable
    def raw(context: dg.AssetExecutionContext, store: ObjectStore, cost_guard: CostGuard, tokenizer: TokenizerResource):
        """Canonical documents (DOC_SCHEMA + n_tokens), one Parquet part per input shard; quarantine rows (QUARANTINE_SCHEMA)
        with a stable `drop_reason` and the shard + location they came from."""
        source = resolve_source(cfg, store, context.partition_key)
        files = [f for uri in source.uris for f in store.expand(cfg.resolve_uri(uri))]
        if not files:
            raise dg.Failure(f"source {source.name!r}: no files match {source.uris}")
        loc = source.location
        reads = [
            Transfer(uri, size, loc.region, loc.zone, loc.via, label=f"source {source.name}") for uri, size in files
        ]
        # The data root rides along (0 B: the IO manager prices the write) so that a source in one zone and a
        # data root in another are refused together: no pod is local to both.
        transfer = enforce_transfers(cost_guard, [*reads, cost_guard.data_root(0)], context, step="raw")
        quarantine: list[pl.DataFrame] = []
        seen = {"records": 0, "bytes": 0}

        def shards() -> Iterator[pl.DataFrame]:
            yield with_tokens(
                empty_frame(DOC_SCHEMA), tokenizer
            )  # a source whose every record is broken still has a (empty) part
            for (uri, _), name in zip(files, shard_names([u for u, _ in files]), strict=True):
                fmt = detect_format(uri) if source.format == "auto" else source.format
                with store.open(uri) as stream:
                    res = read_shard(
                        stream,
                        fmt=fmt,
                        source=source.name,
                        shard=name,
                        text_field=source.text_field,
                        id_field=source.id_field,
                        url_field=source.url_field,
                        html=source.html,
                        **cfg.thresholds.raw.for_source(source.name),
                    )
                seen["records"] += res.records_seen
                seen["bytes"] += res.bytes_read
                quarantine.append(res.quarantine)
                context.log.info(f"{name}: {res.docs.height} docs, {res.quarantine.height} quarantined")
                yield with_tokens(res.docs, tokenizer)

        out = StepOutput(
            kept=shards(),
            dropped=lambda: pl.concat([empty_frame(QUARANTINE_SCHEMA), *quarantine]),
            rows_in=lambda: seen["records"],
            bytes_in=lambda: seen["bytes"],
            config_version=version,
            extra={"shards": len(files), **{f"source_{k}": v for k, v in transfer.items()}},
        )
        yield dg.Output(out)
        yield drop_rate_result(out, cfg.thresholds.raw.max_drop_rate)
        accounted = out.written["rows_out"] + out.written["rows_dropped"]
        yield dg.AssetCheckResult(
            check_name="records_accounted",
            passed=accounted == seen["records"],
            metadata={
                "records_seen": seen["records"],
                "rows_out": out.written["rows_out"],
                "rows_quarantined": out.written["rows_dropped"],
            },
        )

    return raw
