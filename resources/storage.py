"""Persistence: object access for local paths and `s3://`, and the Parquet IO manager that owns every write.

Layout under the data root (`CURATION_DATA_ROOT`, a local directory or `s3://bucket/prefix`)::

    <root>/<asset>/<partition>/_latest.json            manifest of the current version (written last, atomically)
    <root>/<asset>/<partition>/<version>/part-NNNNN.parquet      kept rows, one file per streamed part
    <root>/<asset>/<partition>/<version>/dropped-00000.parquet   dropped / quarantined rows with `drop_reason`
    <root>/<asset>/<partition>/<version>/<name>.parquet          a side table (filtered: `ledger`)
    <root>/<asset>/<partition>/<version>/<name>                 a FileSetOutput (tokenized: see its module)
    <root>/<asset>/<partition>/_removed/<version>.json  audit record of a version removed by `cli remove-version`

Unpartitioned assets use the partition folder `_all`. Guarantees (tests/test_reliability.py):
- No partial file is ever visible under a local root: a version is written into a staging directory beside the
  root (`.<root name>.staging/`, same filesystem) and renamed into place complete; the manifest is renamed over
  the old one. On S3 every object PUT is atomic and a version's objects are deleted again if the write fails.
- Versions are write-once (create-only writes; S3 `If-None-Match: *`): a version is never modified, and a config
  change or a rerun writes a new version beside the old ones. Readers only follow `_latest.json`.
- One writer per asset partition at a time (an flock locally, a lease object on S3); a second run waits for it.
- `synthetic` and `tokenized` versions (GPU- and dollar-expensive) are never deleted by the pipeline or by
  `cli remove-version`; other assets keep their last three versions locally (S3: a bucket lifecycle rule).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import getpass
import glob
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import dagster as dg
import polars as pl
from pydantic import Field, PrivateAttr

from resources.cost_guard import CostGuard, CrossZoneTransferError, TransferPlan

MANIFEST = "_latest.json"
# A run tag whose value (a reason) lets a run move data across zones or over budget; it is logged and recorded.
OVERRIDE_TAG = "curation/allow-transfer"
TRACE_TAG = "curation/trace"  # run tag: trace each step with Viztracer (curation_assets.steps.common.traceable)
UNPARTITIONED = "_all"
KEEP_VERSIONS = 3
# Outputs that cost GPU-hours or dollars to remake: no code path deletes or overwrites one of their versions.
PROTECTED = ("synthetic", "tokenized")
log = logging.getLogger(__name__)


class ProtectedVersionError(Exception):
    """Raised instead of deleting a protected or current version."""


class ObjectStore(dg.ConfigurableResource):
    """Byte-level access to local paths and s3:// URIs with one API (dagster-aws `S3Resource` clients for S3,
    polars `storage_options` for Parquet scans)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    # local temp files go here (beside the data root: see staging_dir_for), never into a directory readers list
    staging_dir: str | None = None
    _client = PrivateAttr(default=None)

    def storage_options(self, uri: str) -> dict[str, str] | None:
        if not uri.startswith("s3://"):
            return None
        so = {"aws_region": self.region}
        if self.endpoint_url:
            so |= {
                "aws_endpoint_url": self.endpoint_url,
                "aws_allow_http": str(self.endpoint_url.startswith("http:")).lower(),
            }
        return so

    def _s3(self):
        """One client per process (botocore's default retries: 503 SlowDown, throttling and dropped connections,
        five attempts with backoff)."""
        if self._client is None:
            from dagster_aws.s3 import S3Resource

            self._client = S3Resource(endpoint_url=self.endpoint_url, region_name=self.region).get_client()
        return self._client

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def expand(self, pattern: str) -> list[tuple[str, int]]:
        """(uri, size) of every object matching a path, glob or s3:// glob, sorted by uri."""
        if not pattern.startswith("s3://"):
            return sorted((p, os.path.getsize(p)) for p in glob.glob(pattern) if os.path.isfile(p))
        bucket, key = self._split(pattern)
        prefix = key.split("*")[0].split("?")[0].split("[")[0]
        out = []
        for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [
                (f"s3://{bucket}/{o['Key']}", o["Size"])
                for o in page.get("Contents", [])
                if fnmatch.fnmatchcase(o["Key"], key)
            ]
        return sorted(out)

    def open(self, uri: str) -> BinaryIO:
        if uri.startswith("s3://"):
            bucket, key = self._split(uri)
            return self._s3().get_object(Bucket=bucket, Key=key)["Body"]
        return open(uri, "rb")

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes, create_only: bool = False, tmp_dir: str | None = None) -> None:
        """Atomic publish: a temp file (in `tmp_dir`, default the target's directory) renamed into place locally, a
        single PUT on S3. `create_only`: never replace an existing object (FileExistsError)."""
        if uri.startswith("s3://"):
            bucket, key = self._split(uri)
            extra = {"IfNoneMatch": "*"} if create_only else {}
            try:
                self._s3().put_object(Bucket=bucket, Key=key, Body=data, **extra)
            except self._s3().exceptions.ClientError as e:  # botocore has retried what was transient
                error = e.response.get("Error", {})
                if error.get("Code") == "PreconditionFailed":
                    raise FileExistsError(f"{uri} exists and is write-once") from e
                raise OSError(f"PUT {uri} failed: {error.get('Code')}: {error.get('Message')}") from e
            return
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = tmp_dir or self.staging_dir or str(Path(uri).parent)
        os.makedirs(tmp_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False, prefix=".tmp-") as f:
            f.write(data)
        try:
            if create_only:
                os.link(f.name, uri)  # fails with FileExistsError instead of replacing
            else:
                os.replace(f.name, uri)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.name)

    def delete(self, uri: str) -> None:
        """Delete one object or file (missing is fine)."""
        if uri.startswith("s3://"):
            bucket, key = self._split(uri)
            self._s3().delete_object(Bucket=bucket, Key=key)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uri)

    def delete_prefix(self, uri: str) -> list[str]:
        """Delete every object under `uri` (a directory or key prefix); returns what was deleted."""
        if not uri.startswith("s3://"):
            files = sorted(str(p) for p in Path(uri).rglob("*") if p.is_file())
            shutil.rmtree(uri, ignore_errors=True)
            return files
        bucket, prefix = self._split(uri.rstrip("/") + "/")
        keys = [
            o["Key"]
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]
        for i in range(0, len(keys), 1000):
            self._s3().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
        return [f"s3://{bucket}/{k}" for k in keys]

    def exists(self, uri: str) -> bool:
        if not uri.startswith("s3://"):
            return os.path.exists(uri)
        bucket, key = self._split(uri)
        return self._s3().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0) > 0


def staging_dir_for(data_root: str) -> str | None:
    """Where local writes are assembled: beside the data root (same filesystem, so a rename publishes), so nothing
    half-written is ever under it. None for S3 (a PUT is atomic)."""
    if data_root.startswith("s3://"):
        return None
    base = Path(data_root).resolve()
    return str(base.parent / f".{base.name}.staging")


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """One Parquet file (zstd, with statistics)."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    return buf.getvalue()


class _FileLock:
    def __init__(self, path: str):
        self.file = open(path, "a+")  # noqa: SIM115 - held until release()

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class _S3Lease:
    """A lease on S3: the object `uri`, created with If-None-Match (of racing creators exactly one wins), renewed
    every LEASE_S / 3 while held and deleted on release. A holder that dies stops renewing; once its lease has
    expired the next writer deletes it and competes again. (Two waiters breaking the same stale lease at once can
    both delete, but only one of them then creates the new one.)"""

    LEASE_S = 120.0

    def __init__(self, store: ObjectStore, uri: str):
        self.store, self.uri, self.token = store, uri, uuid.uuid4().hex
        self._stop, self._renewer = None, None

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "expires": time.time() + self.LEASE_S}).encode()

    def try_acquire(self) -> bool:
        try:
            self.store.write_bytes(self.uri, self._body(), create_only=True)
        except FileExistsError:
            try:
                held = json.loads(self.store.read_bytes(self.uri))
            except self.store._s3().exceptions.NoSuchKey:
                return False  # released in between: compete again
            if held.get("expires", 0) < time.time():
                self.store.delete(self.uri)  # its holder died: break the lease
            return False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.LEASE_S / 3):
            self.store.write_bytes(self.uri, self._body())

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        self.store.delete(self.uri)


class _Version:
    """One version being written. Locally its files go to a staging directory and `commit` renames it into place
    complete (atomic on one filesystem); on S3 each file is a write-once PUT and `abort` deletes what was written."""

    def __init__(self, store: ObjectStore, final: str, staging: str | None):
        self.store, self.final, self.staging, self.written = store, final, staging, []
        if staging:
            os.makedirs(staging)

    def write(self, name: str, data: bytes) -> str:
        uri = f"{self.final}/{name}"
        if self.staging:
            with open(os.path.join(self.staging, name), "wb") as f:
                f.write(data)
        else:
            self.store.write_bytes(uri, data, create_only=True)
        self.written.append(uri)
        return uri

    def commit(self) -> None:
        if self.staging:
            os.makedirs(os.path.dirname(self.final), exist_ok=True)
            os.rename(self.staging, self.final)  # fails rather than merge into an existing version

    def abort(self) -> None:
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            self.store.delete_prefix(self.final)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Persists step outputs under `base_uri` (layout in the module docstring) and loads them back as polars frames.

    Inputs: a partitioned upstream loads as a `pl.LazyFrame` over its kept parts; a fan-in (an unpartitioned asset
    reading a partitioned one) loads as `{partition: LazyFrame}` over the partitions that exist (a source that was
    never materialized is reported and skipped, so one broken source does not block a recipe).

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

    @property
    def staging_root(self) -> str | None:
        return staging_dir_for(self.base_uri)

    @contextlib.contextmanager
    def _writer_lock(self, asset_key: dg.AssetKey, partition: str | None, log_to=None):
        """Exclusive per asset partition across processes and machines: a second writer waits for the first.
        Locally an flock (released by the kernel when its holder dies, so a killed run never blocks its rerun);
        on S3 a lease object (see _S3Lease)."""
        name = f"{'.'.join(asset_key.path)}.{partition or UNPARTITIONED}"
        if self.staging_root:
            path = Path(self.staging_root) / "_locks" / f"{name}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = _FileLock(str(path))
        else:
            lock = _S3Lease(self.store, f"{self._dir(asset_key, partition)}/_lock")
        deadline, warned = time.monotonic() + self.lock_timeout_s, False
        while not lock.try_acquire():
            if not warned and log_to is not None:
                log_to.warning(f"another run is writing {name}: waiting for it")
                warned = True
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} stayed locked for {self.lock_timeout_s:.0f} s")
            time.sleep(0.2)
        try:
            yield
        finally:
            lock.release()

    def manifest(self, asset_key: dg.AssetKey, partition: str | None) -> dict[str, Any] | None:
        uri = f"{self._dir(asset_key, partition)}/{MANIFEST}"
        if not self.store.exists(uri):
            return None
        return json.loads(self.store.read_bytes(uri))

    # -- output --------------------------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        partition = context.partition_key if context.has_partition_key else None
        self._preflight(context, 0)  # a data root in another zone is refused before the first write
        with self._writer_lock(context.asset_key, partition, context.log):
            self._publish(context, obj, partition)

    def _publish(self, context: dg.OutputContext, obj: Any, partition: str | None) -> None:
        from curation_assets.core.frames import FileSetOutput, StepOutput, drop_counts, drop_tokens, step_metadata

        root = self._dir(context.asset_key, partition)
        version = f"{context.run_id[:8]}-{uuid.uuid4().hex[:8]}"
        staging = None
        if self.staging_root:
            stage_dir = Path(self.staging_root) / Path(root).resolve().relative_to(Path(self.base_uri).resolve())
            shutil.rmtree(stage_dir, ignore_errors=True)  # what a killed writer left (we hold the lock)
            staging = str(stage_dir / version)
        out = _Version(self.store, f"{root}/{version}", staging)
        try:
            if isinstance(obj, FileSetOutput):
                files = self._write_files(obj, out)
                context.add_output_metadata({"uri": dg.MetadataValue.path(f"{root}/{version}")})
            elif isinstance(obj, StepOutput):
                files = self._write_step(obj, out)
                dropped = files.pop("dropped_frame")
                drops = drop_counts(dropped)
                context.add_output_metadata(
                    step_metadata(
                        rows_in=obj.resolve(obj.rows_in),
                        rows_out=files["rows"],
                        drops=drops,
                        bytes_in=obj.resolve(obj.bytes_in),
                        bytes_out=files["bytes"],
                        config_version=obj.config_version,
                        tokens_out=files["tokens"],
                        tokens_dropped=drop_tokens(dropped),
                        extra={
                            **obj.extra,
                            "uri": dg.MetadataValue.path(f"{root}/{version}"),
                            **{f"side_{n}": dg.MetadataValue.path(u) for n, u in files["side"].items()},
                        },
                    )
                )
            else:
                raise TypeError(f"{context.asset_key.to_user_string()}: cannot persist {type(obj).__name__}")
            if obj.trace is not None:
                files["trace"] = self._save_trace(obj.trace, out)
                context.add_output_metadata(
                    {
                        "trace": dg.MetadataValue.path(files["trace"]),
                        "trace_viewer": dg.MetadataValue.url("https://ui.perfetto.dev"),  # Open trace file
                    }
                )
            out.commit()
        except BaseException:
            out.abort()  # nothing of a failed write stays under the root
            raise
        manifest = {"version": version, "run_id": context.run_id, **files}
        self.store.write_bytes(f"{root}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), tmp_dir=self.staging_root)
        if context.asset_key.to_user_string() not in PROTECTED:
            self._prune(root, keep=version)
        moved = [
            self.cost_guard.data_root(self._reads.pop(self._step(context), 0)),
            self.cost_guard.data_root(files["bytes"]),
        ]
        context.add_output_metadata(
            {
                **self.cost_guard.plan(moved).metadata("data_"),
                "transfer_override": self._run_tags(context).get(OVERRIDE_TAG, ""),
            }
        )

    def _save_trace(self, tracer: Any, out: _Version) -> str:
        """Stop the step's tracer and store its Chrome trace-event JSON (what Perfetto and chrome://tracing open)."""
        tracer.stop()
        with tempfile.TemporaryDirectory(prefix="trace-") as tmp:
            tracer.save(output_file=f"{tmp}/trace.json", verbose=0)
            return out.write("trace.json", Path(f"{tmp}/trace.json").read_bytes())

    def _write_step(self, out: Any, version: _Version) -> dict[str, Any]:
        parts, rows, nbytes, tokens, part_bytes = [], 0, 0, None, 0
        for frame in out.kept_parts():
            if frame.height == 0 and parts:
                continue
            data = parquet_bytes(frame)
            parts.append(version.write(f"part-{len(parts):05d}.parquet", data))
            nbytes += len(data)
            part_bytes = nbytes
            rows += frame.height
            if "n_tokens" in frame.columns:  # document tables; a signature or ledger table has no tokens
                tokens = (tokens or 0) + int(frame["n_tokens"].sum())
        dropped = out.dropped_frame()
        dropped_files = []
        if dropped.height:
            data = parquet_bytes(dropped)
            dropped_files.append(version.write("dropped-00000.parquet", data))
            nbytes += len(data)
        side = {}
        for name, table in out.side.items():
            data = parquet_bytes(table)
            side[name] = version.write(f"{name}.parquet", data)
            nbytes += len(data)
        return {
            "parts": parts,
            "dropped": dropped_files,
            "side": side,
            "rows": rows,
            "rows_dropped": dropped.height,
            "tokens": tokens,
            "bytes": nbytes,
            "part_bytes": part_bytes,
            "dropped_frame": dropped,
        }

    def _write_files(self, out: FileSetOutput, version: _Version) -> dict[str, Any]:
        names, nbytes = {}, 0
        for name, data in out.files:
            names[name] = version.write(name, data)
            nbytes += len(data)
        return {"files": names, "bytes": nbytes}

    def _prune(self, root: str, keep: str) -> None:
        if root.startswith("s3://"):
            return  # S3 retention belongs to a bucket lifecycle rule, not to the writer
        for old in _local_versions(root)[: -self.keep_versions]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def versions(self, asset_key: dg.AssetKey, partition: str | None) -> list[str]:
        """The version folders of an asset partition, oldest first (local roots), or by name (S3)."""
        root = self._dir(asset_key, partition)
        if root.startswith("s3://"):
            bucket, prefix = self.store._split(root + "/")
            pages = (
                self.store._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            )
            names = [c["Prefix"][len(prefix) :].rstrip("/") for page in pages for c in page.get("CommonPrefixes", [])]
            return sorted(n for n in names if n != "_removed")
        return [p.name for p in _local_versions(root)]

    def remove_version(self, asset_key: dg.AssetKey, partition: str | None, version: str, reason: str) -> list[str]:
        """Delete one version of an unprotected asset, never the current one, and leave an audit record beside it
        (`_removed/<version>.json`: who, when, why, which files). Returns the deleted URIs."""
        name = asset_key.to_user_string()
        if name in PROTECTED:
            raise ProtectedVersionError(f"{name} versions are protected: remove them with the bucket's own tools")
        current = (self.manifest(asset_key, partition) or {}).get("version")
        if version == current:
            raise ProtectedVersionError(f"{name}[{partition or UNPARTITIONED}] {version} is the current version")
        if not reason.strip():
            raise ValueError("a reason is required")
        if version not in self.versions(asset_key, partition):
            raise FileNotFoundError(f"{name}[{partition or UNPARTITIONED}] has no version {version!r}")
        root = self._dir(asset_key, partition)
        deleted = self.store.delete_prefix(f"{root}/{version}")
        record = {"version": version, "reason": reason, "by": getpass.getuser(), "at": time.time(), "files": deleted}
        self.store.write_bytes(f"{root}/_removed/{version}.json", json.dumps(record, indent=1).encode())
        log.warning(f"removed {name}[{partition or UNPARTITIONED}] version {version} ({len(deleted)} files): {reason}")
        return deleted

    # -- input ---------------------------------------------------------------------------------------------
    def scan(self, asset_key: dg.AssetKey, partition: str | None, dropped: bool = False) -> pl.LazyFrame | None:
        m = self.manifest(asset_key, partition)
        if m is None:
            return None
        files = m["dropped"] if dropped else m["parts"]
        if not files:
            return None
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
        nbytes = sum(m.get("part_bytes", m["bytes"]) for pk in partitions if (m := self.manifest(key, pk)))
        self._preflight(context, nbytes)  # before the first byte is read
        self._reads[self._step(context)] = self._reads.get(self._step(context), 0) + nbytes
        if not context.has_asset_partitions:
            m = self.manifest(key, None)
            if m is not None and "files" in m:
                return m["files"]  # a file set loads as name -> URI; its reader knows the format
            return self._require(key, None)
        keys = context.asset_partition_keys
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
            raise FileNotFoundError(f"{key.to_user_string()}[{partition or UNPARTITIONED}] has not been materialized")
        return self.scan(key, partition) if m["parts"] else pl.LazyFrame()


def _local_versions(root: str) -> list[Path]:
    """The version folders under a local asset partition folder, oldest first (not the `_removed` audit folder)."""
    if not os.path.isdir(root):
        return []
    return sorted(
        (p for p in Path(root).iterdir() if p.is_dir() and p.name != "_removed"), key=lambda p: p.stat().st_mtime
    )
