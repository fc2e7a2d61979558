"""raw: every shard of a source, read into the canonical document schema (`core/readers.py`); broken input goes to
quarantine. Checks: `drop_rate`, `records_accounted`, `no_cross_zone_bytes`.

No token is counted here: most raw documents never reach a mixture (`filtered` counts the ones it keeps). raw's
tokens are an estimate, its text bytes x the tokens per byte of a seeded sample of its documents
(`core.frames.TokenEstimate`), shown as `tokens_est` and `~1.2M (est.)`."""

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.config import check_source_name
from curation_assets.core.frames import (
    DOC_SCHEMA,
    QUARANTINE_SCHEMA,
    StepOutput,
    TokenEstimate,
    WrittenPart,
    empty_frame,
    sample_tokens,
)
from curation_assets.core.readers import (
    SUPPORTED_FORMATS,
    detect_format,
    estimate_records_lost,
    read_shard,
)
from curation_assets.steps.common import drop_rate, enforce_transfers, run_tasks, step
from resources.cost_guard import CostGuard, Transfer
from resources.engine import Progress, RayEngine
from resources.metadata import MOVED
from resources.store import ObjectStore, kind_of
from resources.tokenizer import TokenizerResource, task_tokenizer
from resources.versions import PartSink


def resolve_source(cfg, store: ObjectStore, name: str):
    """(source, landing directory or None): the configured source `name`, or the landing zone subdirectory `name`
    in the first zone that has it.

    `name` is a partition key, which a sensor or a UI user creates: it is checked before it becomes part of a path or
    a listing (`../etc`, `a/b` and globs would otherwise list, and then read, whatever they reach)."""
    if name in cfg.source_names:
        return cfg.source(name), None
    try:
        check_source_name(name)
    except ValueError as e:
        raise dg.Failure(f"partition {e}", allow_retries=False) from e
    for zone in cfg.sources.landing_zones:
        landed = f"{cfg.resolve_uri(zone.uri).rstrip('/')}/{name}"
        if store.expand(f"{landed}/*"):
            return cfg.source(name, landed_in=zone.name), landed
    raise dg.Failure(f"source {name!r} is not configured and is in no landing zone")


def landed_outside(files: list[tuple[str, int]], landed: str) -> dict[str, str]:
    """uri -> real path of each local file listed under the landing directory `landed` that resolves outside it.

    A symlink dropped in a landing zone (a file, or the source directory itself) must not make raw read - and publish
    as training data - a file from elsewhere on the machine. Only the landing zone's own path is resolved: the
    operator may mount it through a link, the uploader may not. Object-store keys are literal, so an s3:// listing
    under the prefix cannot leave it.
    """
    if kind_of(landed) != "local":
        return {}
    zone, name = os.path.split(landed)
    root = os.path.join(os.path.realpath(zone), name)
    real = {uri: os.path.realpath(uri) for uri, _ in files}
    return {uri: r for uri, r in real.items() if os.path.commonpath([root, r]) != root}


def shard_names(uris: list[str]) -> list[str]:
    """Stable shard names: each URI relative to the deepest directory common to all of a source's files.

    doc_id hashes (source, shard, position), so a shard name must not depend on where the data root is mounted.
    """
    if len(uris) == 1:
        return [os.path.basename(uris[0])]
    common = os.path.commonpath([u.replace("s3://", "/", 1) for u in uris])
    return [u.replace("s3://", "/", 1)[len(common) :].lstrip("/") for u in uris]


@dataclass(frozen=True)
class ShardTask:
    """One input file of a source: the unit of work of `raw` (a Ray task)."""

    uri: str
    shard: str
    fmt: str
    source: str
    text_field: str
    id_field: str
    url_field: str
    html: bool
    max_doc_bytes: int
    endpoint_url: str | None
    region: str
    encoding: str
    sink: PartSink  # where the shard's documents go: kept part `part` of the version being staged
    part: int


@dataclass(frozen=True)
class ShardRead:
    """What a shard's task returns to the step: its part as written, and the shard's figures (not its documents)."""

    part: WrittenPart | None
    docs: int
    text_bytes: int
    bytes_read: int
    quarantine: pl.DataFrame
    sample: pl.DataFrame  # the seeded token sample (`core.frames.sample_tokens`)


def read_task(task: ShardTask) -> tuple[ShardRead, int]:
    """Read one shard (`core.readers.read_shard`), write its documents as a part of the staging version and count the
    tokens of its seeded token sample (`core.frames.sample_tokens`); runs in a Ray worker."""
    with ObjectStore(endpoint_url=task.endpoint_url, region=task.region).open(task.uri) as stream:
        res = read_shard(
            stream,
            fmt=task.fmt,
            source=task.source,
            shard=task.shard,
            text_field=task.text_field,
            id_field=task.id_field,
            url_field=task.url_field,
            html=task.html,
            max_doc_bytes=task.max_doc_bytes,
        )
    docs = res.docs
    sample = sample_tokens(docs, task_tokenizer(task.encoding).count_tokens)
    text_bytes = int(docs["text"].str.len_bytes().sum() or 0)
    read = ShardRead(task.sink.write(task.part, docs), docs.height, text_bytes, res.bytes_read, res.quarantine, sample)
    return read, docs.height


def records_accounted(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
    """Every record the readers saw is either a row or a quarantine row."""
    seen, rows, quarantined = int(md["rows_in"]), int(md["rows_out"]), int(md["details"]["rows_dropped"])
    return rows + quarantined == seen, {"records_seen": seen, "rows_out": rows, "rows_quarantined": quarantined}


def build(cfg, version: str) -> list:
    """The `raw` asset and its checks."""
    t = cfg.thresholds.raw
    accounted = ("rows written + rows quarantined == records seen by the readers", records_accounted)

    @step(version, t.pod, {"drop_rate": drop_rate(t.max_drop_rate), "records_accounted": accounted})
    def raw(
        context: dg.AssetExecutionContext,
        store: ObjectStore,
        cost_guard: CostGuard,
        tokenizer: TokenizerResource,
        engine: RayEngine,
    ):
        """The source's documents, one row each: doc_id, source, text, url, shard, meta (tokens are counted in
        `filtered`, for the documents it keeps; here estimated from a seeded sample); one file of them per input
        shard. Records that cannot be read are set aside with the reason, the shard and the
        place in it (line, row, record or frame) they came from."""
        source, landed = resolve_source(cfg, store, context.partition_key)
        found = [f for uri in source.uris for f in store.expand(cfg.resolve_uri(uri))]
        if not found:
            raise dg.Failure(f"source {source.name!r}: no files match {source.uris}")
        names = dict(zip([u for u, _ in found], shard_names([u for u, _ in found]), strict=True))
        # Files that escape the landing directory, and files that are no shard (an uploader's README.md matched by
        # the glob), are quarantined like any unreadable file (one `file` row each), never opened: the good shards
        # of the source still flow, and the drop shows in the metadata and the drop_rate check.
        rejected = {
            uri: ("outside_landing_zone", f"symlink to {target}, outside {landed}")
            for uri, target in (landed_outside(found, landed) if landed else {}).items()
        }
        formats = {}
        for uri, _ in found:
            try:
                formats[uri] = detect_format(uri) if source.format == "auto" else source.format
            except ValueError:
                rejected.setdefault(uri, ("unsupported_format", f"not a shard: {SUPPORTED_FORMATS}"))
        files = [f for f in found if f[0] not in rejected]
        for uri, (reason, detail) in rejected.items():
            context.log.warning(f"{uri}: {reason} ({detail}): not read")
        loc = source.location
        reads = [
            Transfer(uri, size, loc.region, loc.zone, loc.via, label=f"source {source.name}") for uri, size in files
        ]
        # The data root rides along (0 B: the IO manager prices the write) so that a source in one zone and a
        # data root in another are refused together: no pod is local to both.
        enforce_transfers(cost_guard, [*reads, cost_guard.data_root(0)], context, step="raw")
        quarantine = [
            pl.DataFrame(
                {
                    "source": [source.name] * len(rejected),
                    "shard": [names[u] for u in rejected],
                    "location": ["file"] * len(rejected),
                    "drop_reason": [reason for reason, _ in rejected.values()],
                    "detail": [detail for _, detail in rejected.values()],
                    "record_id": [None] * len(rejected),
                    # not the source's data (never a shard of it): one row each, no bytes lost
                    "records_lost": [1] * len(rejected),
                    "bytes_lost": [0] * len(rejected),
                },
                schema=QUARANTINE_SCHEMA,
            )
        ]
        seen = {"docs": 0, "bytes": 0, "text_bytes": 0}
        samples: list[pl.DataFrame] = []

        def tasks(sink: PartSink) -> Iterator[ShardTask]:
            return (
                ShardTask(
                    uri=uri,
                    shard=names[uri],
                    fmt=formats[uri],
                    source=source.name,
                    text_field=source.text_field,
                    id_field=source.id_field,
                    url_field=source.url_field,
                    html=source.html,
                    max_doc_bytes=t.for_source(source.name).max_doc_bytes,
                    endpoint_url=store.endpoint_url,
                    region=store.region,
                    encoding=tokenizer.encoding,
                    sink=sink,
                    part=k + 1,
                )
                for k, (uri, _) in enumerate(files)
            )

        progress = Progress(total=len(files))

        def shards(sink: PartSink) -> Iterator[pl.DataFrame | WrittenPart | None]:
            # a source whose every record is broken still has an (empty) part
            yield empty_frame(DOC_SCHEMA)
            labels = [f"{source.name} {names[u]}" for u, _ in files]
            for read in run_tasks(context, engine, read_task, tasks(sink), labels, progress):
                seen["docs"] += read.docs
                seen["bytes"] += read.bytes_read
                seen["text_bytes"] += read.text_bytes
                quarantine.append(read.quarantine)
                samples.append(read.sample)
                yield read.part

        @functools.cache
        def lost() -> pl.DataFrame:
            rows = pl.concat([empty_frame(QUARANTINE_SCHEMA), *quarantine])
            # a shard with no readable byte (a whole file corrupt, zero-filled or not in its declared format) weighs
            # what its bytes held at the source's records per byte, so losing half a source fails drop_rate; 1 a row
            # when no byte of the source was readable
            filled = estimate_records_lost(rows, seen["docs"], seen["bytes"])
            return filled.with_columns(pl.col("records_lost").fill_null(1))

        out = StepOutput(
            kept=shards,
            dropped=lost,
            rows_in=lambda: seen["docs"] + lost()["records_lost"].sum(),
            bytes_in=lambda: seen["bytes"],
            config_version=version,
            estimate=lambda: TokenEstimate.of(samples, cfg.tokenizer.name, kept_bytes=seen["text_bytes"]),
            extra=lambda: {
                "text_bytes": seen["text_bytes"],  # the documents' volume (UTF-8 bytes of text)
                "bytes_lost": int(lost()["bytes_lost"].sum()),
                "shards": len(files),
                **progress.metadata(),
                MOVED: reads,
            },
        )
        yield dg.Output(out)

    return [raw]
