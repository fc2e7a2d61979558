"""The Parquet IO manager: maps assets to folders, persists step outputs as versions and loads them back.

Layout under the data root (`CURATION_DATA_ROOT`, a local directory or `s3://bucket/prefix`)::

    <root>/<asset>/<partition>/_latest.json            manifest of the current version (written last, atomically)
    <root>/<asset>/<partition>/<version>/data/part-NNNNN.parquet     kept rows, one file per streamed part (N its
                                                                   place in the step's order; an empty part after
                                                                   the first is left out, its number with it)
    <root>/<asset>/<partition>/<version>/dropped/part-NNNNN.parquet  dropped / quarantined rows with `drop_reason`
                                                                   (numbered as the kept parts; every empty one
                                                                   is left out)
    <root>/<asset>/<partition>/<version>/<name>/part-00000.parquet   a side table (filtered: `ledger`)
    <root>/<asset>/<partition>/<version>/<name>                 a FileSetOutput (tokenized: see its module)
    <root>/<asset>/<partition>/<version>/trace.json             the step's trace (run tag curation/trace)
    <root>/<asset>/<partition>/<version>/tasks/NNNNN-<label>.json  the trace of each of its tasks on Ray
    <root>/<asset>/<partition>/_removed/<version>.json  audit record of a version removed by `cli remove-version`

Unpartitioned assets use the partition folder `_all`. Each table of a version (kept rows, dropped rows, each side
table) has a folder of its own holding nothing else, so every file under a table folder has one schema and the folder
is what a reader that takes a directory is given (HF `datasets`' `data_dir`, Spark, DuckDB and polars globs):
`curation paths TABLE` prints the current version's folders. The current version is named by the manifest only: an
object store has no links and no atomic rename, so no stable path can point at it without copies; a glob over every
version (`<asset>/<partition>/*/data/*`) counts the rows of each kept old version again (`curation prune --keep 1`
leaves the current one alone on a local root). The mechanics live beside this module: bytes in `resources.store`,
write-once versions, pruning and removal in `resources.versions`, the one-writer-per-partition
lock in `resources.locks`. Guarantees: tests/test_reliability.py and tests/resources/.

Paths in a manifest are relative to the data root (`versions.resolved` resolves them; absolute ones, from manifests
written before, are used as they are), so a root copied or moved elsewhere still loads. The manifest (`_latest.json`)
of a frame output (`StepOutput`) has `version`, `run_id`, `parts`, `dropped`, `side`, `rows`, `rows_dropped`,
`tokens`, `bytes`, `part_bytes` (and `trace`, `task_traces`); of a `FileSetOutput` `version`, `run_id`, `files`
(name -> path), `bytes` (and `trace`, `task_traces`). Both also record `content` (the version's content hash, also the
materialization's Dagster data version), `config_version` (the asset's code version) and `inputs` (what the version
was made from: label -> content of each upstream version loaded, or the source listing of raw), so the data root
alone says whether an asset partition is current (`curation run`'s skip decision). A version whose content equals
the current one's is not published again (nothing new under the root); only its manifest's provenance is updated.
The IO manager never changes the output object: what it wrote is in the manifest and in the materialization's
metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
from pydantic import Field, PrivateAttr

from curation_assets.core.frames import DATA, DROPPED, DropTally, WrittenPart, parquet_bytes, verify_page_checksums
from resources import locks, versions
from resources.cost_guard import OVERRIDE_TAG, CostGuard, CrossZoneTransferError, TransferPlan
from resources.engine import trace_json
from resources.store import ObjectStore, Store
from resources.versions import KEEP_VERSIONS, MANIFEST, UNPARTITIONED, PartSink, Version

if TYPE_CHECKING:
    from resources.engine import StepTrace

# run tag: the fingerprint of a source's files (`curation run` sets it on ingest runs); raw's manifest records it
SOURCES_TAG = "curation/sources"
# An input whose AssetIn metadata has {LOAD: PARTS} loads as {partition: {"parts": [URIs], "rows": n,
# "part_bytes": n, "side": {name: URI}}} (from its manifest): for a step whose tasks read the parts themselves
# (dedup_clusters' shuffle, filtered's passes over annotated).
LOAD, PARTS = "curation/load", "parts"


class CorruptFileError(RuntimeError):
    """A stored part whose page checksums do not match its bytes (a flipped bit on disk or in transit)."""


def _adopt(
    parts: Iterable[pl.DataFrame | WrittenPart | None], table: str, sink: PartSink, version: Version
) -> tuple[list[str], int, int, int | None, DropTally]:
    """Record a step's parts of `table` in step order (a frame the step made itself is written here, through the same
    sink as its tasks'; None is an empty part left out): (their paths, rows, bytes, tokens or None, `DropTally`)."""
    paths, rows, nbytes, tokens, drops = [], 0, 0, None, DropTally()
    for index, part in enumerate(parts):
        if isinstance(part, pl.DataFrame):
            part = sink.write(index, part, table)
        if part is None:
            continue
        if (part.index, part.table) != (index, table):
            raise ValueError(
                f"{table} part {index} came back as {part.table} part {part.index}: parts are stored in step order"
            )
        paths.append(version.adopt(part))
        rows += part.rows
        nbytes += part.nbytes
        if part.tokens is not None:  # document tables; a signature or ledger table has no tokens
            tokens = (tokens or 0) + part.tokens
        if part.drops is not None:
            drops += part.drops
    return paths, rows, nbytes, tokens, drops


class ParquetIOManager(dg.ConfigurableIOManager):
    """Persists step outputs under `base_uri` (layout in the module docstring) and loads them back as polars frames.

    Inputs: a partitioned upstream loads as a `pl.LazyFrame` over its kept parts; a fan-in (an unpartitioned asset
    reading a partitioned one) loads as `{partition: LazyFrame}` over the partitions that exist (a source that was
    never materialized is reported and skipped, so one broken source does not block a recipe); a file set loads as
    name -> URI; an input declared with `{LOAD: PARTS}` as `{partition: its parts' URIs and counts}`.

    Every read and write under the data root goes through the cost guard first: a step whose data root sits in
    another AZ or region fails before its first byte moves (unless the run carries OVERRIDE_TAG), and each
    materialization records the bytes it moved by path class and their estimated cost.
    """

    base_uri: str
    store: ObjectStore
    cost_guard: CostGuard
    keep_versions: int = Field(default=KEEP_VERSIONS, ge=1)
    lock_timeout_s: float = 6 * 3600  # a second writer of the same asset partition waits this long, then fails
    _reads: dict[tuple[str, str], int] = PrivateAttr(default_factory=dict)
    _inputs: dict[tuple[str, str], dict[str, str]] = PrivateAttr(default_factory=dict)  # per step: label -> content

    # -- cost guard ----------------------------------------------------------------------------------------
    @staticmethod
    def _step_context(context: dg.InputContext | dg.OutputContext):
        try:
            return context.step_context
        except dg.DagsterInvariantViolationError:  # a context built by hand (unit tests) has no step
            return None

    def _run_tags(self, context: dg.InputContext | dg.OutputContext) -> dict[str, str]:
        sc = self._step_context(context)
        return dict(sc.run_tags) if sc else {}

    def _preflight(self, context: dg.InputContext | dg.OutputContext, nbytes: int) -> TransferPlan:
        override = self._run_tags(context).get(OVERRIDE_TAG)
        try:
            plan = self.cost_guard.enforce(
                [self.cost_guard.data_root(nbytes)], override=override, step=context.asset_key.path[-1]
            )
        except CrossZoneTransferError as e:
            raise dg.Failure(description=f"{context.asset_key.to_user_string()}: {e}", allow_retries=False) from e
        if override and (plan.offenders or plan.usd > self.cost_guard.budget(context.asset_key.path[-1])):
            context.log.warning(f"cost guard overridden ({OVERRIDE_TAG}={override!r}): {plan.offenders}")
        return plan

    def _step(self, context: dg.InputContext | dg.OutputContext) -> tuple[str, str]:
        sc = self._step_context(context)
        return (sc.run_id, sc.step.key) if sc else ("", "")

    # -- paths ---------------------------------------------------------------------------------------------
    def _dir(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        return "/".join([self.base_uri.rstrip("/"), *asset_key.path, partition or UNPARTITIONED])

    @staticmethod
    def label(asset_key: dg.AssetKey, partition: str | None) -> str:
        """How messages and a manifest's `inputs` name an asset partition: `raw[web]`, `mixed[_all]`."""
        return f"{asset_key.to_user_string()}[{partition or UNPARTITIONED}]"

    @property
    def root_store(self) -> Store:
        """The store that holds the data root."""
        return self.store.impl(self.base_uri)

    @property
    def staging_root(self) -> str | None:
        return versions.staging_dir_for(self.base_uri)

    def scratch_uri(self, step: str, run_id: str) -> str:
        """Where a step's tasks exchange intermediate files (a shuffle) during one run: beside a local data root
        (never under it), `_scratch/` of an S3 root (a bucket lifecycle rule can expire what a killed run left)."""
        staging = self.staging_root
        base = f"{staging}/scratch" if staging else f"{self.base_uri.rstrip('/')}/_scratch"
        return f"{base}/{step}/{run_id}"

    def stored_manifest(self, asset_key: dg.AssetKey, partition: str | None) -> dict[str, Any] | None:
        """The manifest as stored: its paths relative to the data root (or absolute, written before)."""
        uri = f"{self._dir(asset_key, partition)}/{MANIFEST}"
        if not self.store.exists(uri):
            return None
        return json.loads(self.store.read_bytes(uri))

    def manifest(self, asset_key: dg.AssetKey, partition: str | None) -> dict[str, Any] | None:
        """The manifest of the current version with its paths resolved to URIs under this data root."""
        m = self.stored_manifest(asset_key, partition)
        return None if m is None else versions.resolved(m, self.base_uri)

    @staticmethod
    def content(manifest: dict[str, Any]) -> str:
        """What identifies a current version's data: its content hash (the version name for a manifest written
        before content addressing)."""
        return manifest.get("content", manifest["version"])

    # -- output --------------------------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        partition = context.partition_key if context.has_partition_key else None
        self._preflight(context, 0)  # a data root in another zone is refused before the first write
        name, lock = self._lock(context.asset_key, partition)
        with locks.writer_lock(lock, name, self.lock_timeout_s, context.log):
            self._publish(context, obj, partition, lock)

    def _lock(self, asset_key: dg.AssetKey, partition: str | None) -> tuple[str, locks.Lock]:
        """The name and writer lock of an asset partition (one writer at a time: publishing and pruning)."""
        name = f"{'.'.join(asset_key.path)}.{partition or UNPARTITIONED}"
        return name, locks.lock_for(self.root_store, name, self._dir(asset_key, partition), self.staging_root)

    def _publish(self, context: dg.OutputContext, obj: Any, partition: str | None, lock: locks.Lock) -> None:
        from curation_assets.core.frames import FileSetOutput, StepOutput

        if not isinstance(obj, (FileSetOutput, StepOutput)):
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot persist {type(obj).__name__}")
        root = self._dir(context.asset_key, partition)
        out = versions.begin(
            self.root_store, self.base_uri, root, versions.new_version_id(context.run_id), self.staging_root
        )
        try:
            files = self._write_files(obj, out) if isinstance(obj, FileSetOutput) else self._write_step(obj, out)
            drops = files.pop("drops", None)
            content = out.content  # of the data files (a trace, written next, is not data)
            current = self.stored_manifest(context.asset_key, partition)
            # Content addressing: a rerun that wrote the current version's files byte for byte publishes nothing (a
            # protected asset would keep every copy). A traced run publishes: its trace is new content asked for.
            unchanged = obj.trace is None and current is not None and current.get("content") == content
            lock.assert_held()  # a writer that lost its lock (paused past its S3 lease, taken over) publishes nothing
            if not unchanged:
                if obj.trace is not None:
                    files["trace"], files["task_traces"] = self._save_trace(obj.trace, out)
                out.commit()
        except BaseException:
            out.abort()  # nothing of a failed write stays under the root
            raise
        provenance = {"content": content, **self._provenance(context)}
        if unchanged:
            out.abort()
            manifest = {**current, **provenance}  # the same files; what they were made from is recorded anew
            context.log.info(f"{self.label(context.asset_key, partition)}: identical to {current['version']}, kept")
        else:
            manifest = {"version": out.name, "run_id": context.run_id, **files, **provenance}
        if manifest != current:
            self.store.write_bytes(
                f"{root}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), tmp_dir=self.staging_root
            )
        if not unchanged:
            versions.prune(self.root_store, root, context.asset_key.to_user_string(), out.name, self.keep_versions)
        sc = self._step_context(context)
        if sc is not None:  # the materialization's data version: automation follows only a change of content
            sc.set_data_version(context.asset_key, dg.DataVersion(content))
        self._report(context, obj, root, versions.resolved(manifest, self.base_uri), drops)

    def _provenance(self, context: dg.OutputContext) -> dict[str, Any]:
        """What a version was made from, for `curation run` to decide what is unchanged from the data root alone:
        the asset's config version (its code version) and its inputs (label -> content of every upstream version
        this step loaded; a root asset: the run's source listing, SOURCES_TAG)."""
        sc = self._step_context(context)
        inputs = self._inputs.pop(self._step(context), {})
        if not inputs and (listing := self._run_tags(context).get(SOURCES_TAG)):
            inputs = {"sources": listing}
        return {
            "config_version": sc.job_def.asset_layer.get(context.asset_key).code_version if sc else None,
            "inputs": dict(sorted(inputs.items())),
        }

    def _report(
        self, context: dg.OutputContext, obj: Any, root: str, manifest: dict[str, Any], drops: DropTally | None
    ) -> None:
        """The materialization's metadata (`resources.metadata`), from what the manifest says is the current version:
        a frame output's step metadata, or the file-set step's own (its Output's) with the bytes actually written; the
        one `cost` table prices every byte the step moved (data root reads and writes, raw's source reads)."""
        from resources.metadata import MOVED, published, step_metadata

        if "files" in manifest:
            metadata = {**context.output_metadata, "bytes_out": manifest["bytes"]}
            details, moved = {"files": manifest["files"]}, []
        else:
            extra = dict(obj.metadata())
            moved = extra.pop(MOVED, [])
            metadata = step_metadata(
                rows_in=obj.resolve(obj.rows_in),
                rows_out=manifest["rows"],
                drops=drops.rows,
                bytes_in=obj.resolve(obj.bytes_in),
                bytes_out=manifest["bytes"],
                config_version=obj.config_version,
                tokens_out=manifest["tokens"],
                tokens_dropped=drops.tokens,
                added=obj.addition(),
                extra=extra,
                bytes_dropped=drops.nbytes,
                estimate=obj.token_estimate(),
            )
            details = {f"side_{n}": u for n, u in manifest["side"].items()}
        if obj.trace is not None:
            metadata["trace"] = dg.MetadataValue.path(manifest["trace"])
            if manifest["task_traces"]:  # the folder of the tasks' own traces, one file per task on Ray
                metadata["task_traces"] = dg.MetadataValue.path(manifest["task_traces"][0].rsplit("/", 1)[0])
            metadata["trace_viewer"] = dg.MetadataValue.url("https://ui.perfetto.dev")  # Open trace file
        moved = [
            *moved,
            self.cost_guard.data_root(self._reads.pop(self._step(context), 0)),
            self.cost_guard.data_root(manifest["bytes"]),
        ]
        context.add_output_metadata(
            published(
                metadata,
                uri=f"{root}/{manifest['version']}",
                cost=self.cost_guard.plan(moved),
                override=self._run_tags(context).get(OVERRIDE_TAG, ""),
                details=details,
            )
        )

    def _save_trace(self, trace: StepTrace, out: Version) -> tuple[str, list[str]]:
        """Stop the step's tracer and store its Chrome trace-event JSON (what Perfetto and chrome://tracing open) as
        `trace.json`, and each of its tasks' traces as `tasks/<n>-<label>.json` (n: the task's place in the step)."""
        trace.tracer.stop()
        step = out.write("trace.json", trace_json(trace.tracer))
        tasks = [
            out.write(f"tasks/{n:05d}-{re.sub(r'[^A-Za-z0-9.]+', '-', t.label).strip('-')}.json", t.trace)
            for n, t in enumerate(trace.tasks)
        ]
        return step, tasks

    def _write_step(self, out: Any, version: Version) -> dict[str, Any]:
        sink = PartSink(version.final, version.staging, self.store.endpoint_url, self.store.region)
        parts, rows, part_bytes, tokens, _ = _adopt(out.kept_parts(sink), DATA, sink, version)
        dropped, rows_dropped, dropped_bytes, _, drops = _adopt(out.dropped_parts(), DROPPED, sink, version)
        nbytes = part_bytes + dropped_bytes
        side = {}
        for name, table in out.side.items():
            if name in (DATA, DROPPED):
                raise ValueError(f"a side table cannot be named {name!r}: the folder of the kept or dropped rows")
            data = parquet_bytes(table)
            side[name] = version.write(f"{name}/part-00000.parquet", data)
            nbytes += len(data)
        return {
            "parts": parts,
            "dropped": dropped,
            "side": side,
            "rows": rows,
            "rows_dropped": rows_dropped,
            "tokens": tokens,
            "bytes": nbytes,
            "part_bytes": part_bytes,
            "drops": drops,
        }

    def _write_files(self, out: Any, version: Version) -> dict[str, Any]:
        names, nbytes = {}, 0
        for name, data in out.files:
            names[name] = version.write(name, data)
            nbytes += len(data)
        return {"files": names, "bytes": nbytes}

    def versions(self, asset_key: dg.AssetKey, partition: str | None) -> list[str]:
        """The version folders of an asset partition, oldest first (local roots), or by name (S3)."""
        return versions.list_versions(self.root_store, self._dir(asset_key, partition))

    def prune(self, asset_key: dg.AssetKey, partition: str | None, keep_versions: int) -> list[str]:
        """`versions.prune` of an asset partition to its newest `keep_versions` versions, never the current one,
        under the partition's writer lock (a version committed but not yet named by its manifest is never taken for
        an old one). A protected asset, an S3 root and a partition without a current version are left alone.
        Returns the versions deleted."""
        name, lock = self._lock(asset_key, partition)
        with locks.writer_lock(lock, name, self.lock_timeout_s):
            current = (self.stored_manifest(asset_key, partition) or {}).get("version")
            if current is None:
                return []
            root, asset = self._dir(asset_key, partition), asset_key.to_user_string()
            return versions.prune(self.root_store, root, asset, current, keep_versions)

    def remove_version(self, asset_key: dg.AssetKey, partition: str | None, version: str, reason: str) -> list[str]:
        """Delete one version of an unprotected asset, never the current one, and leave an audit record beside it
        (`_removed/<version>.json`: who, when, why, which files). Returns the deleted URIs."""
        name = asset_key.to_user_string()
        current = None if name in versions.PROTECTED else (self.manifest(asset_key, partition) or {}).get("version")
        return versions.remove_version(
            self.root_store,
            self.base_uri,
            self._dir(asset_key, partition),
            asset=name,
            label=self.label(asset_key, partition),
            version=version,
            current=current,
            reason=reason,
        )

    # -- input ---------------------------------------------------------------------------------------------
    def scan(self, asset_key: dg.AssetKey, partition: str | None, dropped: bool = False) -> pl.LazyFrame | None:
        m = self.manifest(asset_key, partition)
        if m is None:
            return None
        files = m["dropped"] if dropped else m["parts"]
        if not files:
            return None
        for uri in files:  # every page's CRC, before anything reads the parts (polars' scans do not check them)
            with self.store.open(uri) as stream:
                try:
                    verify_page_checksums(stream)
                except OSError as e:
                    raise CorruptFileError(f"{uri}: {e}: rematerialize {self.label(asset_key, partition)}") from e
        return pl.scan_parquet(files, storage_options=self.store.storage_options(files[0]))

    def load_files(self, asset_key: dg.AssetKey, partition: str | None = None) -> dict[str, str]:
        """name -> URI of the files of a FileSetOutput's current version."""
        m = self.manifest(asset_key, partition)
        if m is None or "files" not in m:
            raise FileNotFoundError(f"{asset_key.to_user_string()} has no published file set")
        return m["files"]

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        found = {pk: m for pk in partitions if (m := self.manifest(key, pk))}
        nbytes = sum(m.get("part_bytes", m["bytes"]) for m in found.values())
        self._preflight(context, nbytes)  # before the first byte is read
        self._reads[self._step(context)] = self._reads.get(self._step(context), 0) + nbytes
        consumed = self._inputs.setdefault(self._step(context), {})
        consumed.update({self.label(key, pk): self.content(m) for pk, m in found.items()})
        if not context.has_asset_partitions:
            m = self.manifest(key, None)
            if m is not None and "files" in m:
                return m["files"]  # a file set loads as name -> URI; its reader knows the format
            return self._require(key, None)
        keys = context.asset_partition_keys
        if (context.definition_metadata or {}).get(LOAD) == PARTS:  # the reader's tasks read (and CRC-check) them
            return {pk: {k: m.get(k) for k in ("parts", "rows", "part_bytes", "side")} for pk, m in found.items()}
        if context.has_partition_key and len(keys) == 1:
            return self._require(key, keys[0])
        out = {}
        for pk in keys:
            frame = self.scan(key, pk)
            if frame is None and self.manifest(key, pk) is None:
                context.log.warning(f"{key.to_user_string()}[{pk}] has not been materialized: left out")
                continue
            out[pk] = frame if frame is not None else pl.LazyFrame()
        return out

    def _require(self, key: dg.AssetKey, partition: str | None) -> pl.LazyFrame:
        m = self.manifest(key, partition)
        if m is None:
            raise FileNotFoundError(f"{self.label(key, partition)} has not been materialized")
        return self.scan(key, partition) if m["parts"] else pl.LazyFrame()
