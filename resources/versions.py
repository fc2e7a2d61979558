"""Write-once versions of an asset partition: staging, publishing, listing, pruning and audited removal.

    <root>/<asset>/<partition>/_latest.json             manifest of the current version (MANIFEST; the IO manager)
    <root>/<asset>/<partition>/<version>/...            one version's files, never modified once published
                                                        (a table per folder: see resources.io_manager)
    <root>/<asset>/<partition>/_removed/<version>.json  audit record of a version removed by `remove_version`

How a version is written depends on the store that holds the data root (`kind_of`):
- local: its files are written into a staging directory beside the root (`staging_dir_for`: `.<root name>.staging/`,
  same filesystem) and `Version.commit` renames the directory into place complete; a writer first clears what a
  dead writer staged for the same partition (it holds the partition's writer lock);
- S3: every file is a create-only PUT (`If-None-Match: *`) straight to its final key, and `Version.abort` deletes
  what was written.
A version is content-addressed: `Version.content` hashes the names and bytes of what was written (while writing, no
re-read); the IO manager records it in the manifest and publishes no version whose content equals the current one's.
A manifest records its files relative to the data root (`Version.write` returns that path), so a root copied or moved
elsewhere, locally or to another bucket, still reads; `resolved` turns them into URIs (a manifest written before
paths were relative lists absolute URIs, which are used as they are).
`synthetic` and `tokenized` (PROTECTED: GPU- and dollar-expensive) are never pruned or removed; other assets keep
their last KEEP_VERSIONS versions locally (S3 retention belongs to a bucket lifecycle rule, not to the writer).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from curation_assets.core.frames import DATA, DROPPED, DropTally, WrittenPart, keeps_part, parquet_bytes, part_name
from resources.store import Store, join, kind_of, relative, store_for

MANIFEST = "_latest.json"
UNPARTITIONED = "_all"
REMOVED = "_removed"
KEEP_VERSIONS = 3
# Outputs that cost GPU-hours or dollars to remake: no code path deletes or overwrites one of their versions.
PROTECTED = ("synthetic", "tokenized")
# the manifest keys that hold file paths: lists, name -> path maps, one path
PATH_LISTS, PATH_MAPS, PATH_ONE = ("parts", "dropped", "task_traces"), ("side", "files"), ("trace",)
log = logging.getLogger(__name__)


class ProtectedVersionError(Exception):
    """Raised instead of deleting a protected or current version."""


def staging_dir_for(data_root: str) -> str | None:
    """Where local writes are assembled: beside the data root (same filesystem, so a rename publishes), so nothing
    half-written is ever under it. None for S3 (a PUT is atomic)."""
    if kind_of(data_root) != "local":
        return None
    base = Path(data_root).resolve()
    return str(base.parent / f".{base.name}.staging")


def new_version_id(run_id: str) -> str:
    """`<first 8 characters of the run id>-<8 random hex digits>`: unique, and names the run that wrote it."""
    return f"{run_id[:8]}-{uuid.uuid4().hex[:8]}"


def stage_file(store: Store, final: str, staging: str | None, name: str, data: bytes, same_again: bool = False) -> None:
    """Write the file `name` of the version `final` being staged: into its local staging folder (a file half-written
    by a killed writer is rewritten by the next write), or as a create-only PUT of its final key on S3. `same_again`:
    an S3 object that exists with these very bytes is accepted (a task re-run after its worker died); any other
    existing object is refused (FileExistsError)."""
    if staging:
        path = os.path.join(staging, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return
    uri = f"{final}/{name}"
    try:
        store.write_bytes(uri, data, create_only=True)
    except FileExistsError:
        if not same_again or store.read_bytes(uri) != data:
            raise


class Version:
    """One version being written. Locally its files go to a staging directory and `commit` renames it into place
    complete (atomic on one filesystem); on S3 each file is a write-once PUT and `abort` deletes what was written.
    `final` is the version folder's URI, `path` the same relative to the data root."""

    def __init__(self, store: Store, final: str, path: str, staging: str | None):
        self.store, self.final, self.path, self.staging, self.written = store, final, path, staging, []
        self.digests: dict[str, str] = {}  # path within the version -> sha256 of its bytes
        if staging:
            os.makedirs(staging)

    @property
    def name(self) -> str:
        return self.final.rsplit("/", 1)[1]

    def write(self, name: str, data: bytes) -> str:
        """Write the file `name` (`<table>/<file>` puts it in a table folder) of this version; returns its path
        relative to the data root (what the manifest records)."""
        uri = f"{self.final}/{name}"
        stage_file(self.store, self.final, self.staging, name, data)
        self.written.append(uri)
        self.digests[name] = hashlib.sha256(data).hexdigest()
        return f"{self.path}/{name}"

    def adopt(self, part: WrittenPart) -> str:
        """Record `part`, written into this version by its task (`PartSink`); returns its path relative to the data
        root, as `write` does."""
        name = part_name(part.index, part.table)
        self.written.append(f"{self.final}/{name}")
        self.digests[name] = part.sha256
        return f"{self.path}/{name}"

    @property
    def content(self) -> str:
        """The content address of the files written so far: sha256 over their sorted (name, sha256 of bytes) pairs.
        Two versions with the same files byte for byte have the same content, whatever their version names."""
        return hashlib.sha256(json.dumps(sorted(self.digests.items())).encode()).hexdigest()

    def commit(self) -> None:
        if self.staging:
            os.makedirs(os.path.dirname(self.final), exist_ok=True)
            os.rename(self.staging, self.final)  # fails rather than merge into an existing version

    def abort(self) -> None:
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            self.store.delete_prefix(self.final)


@dataclass(frozen=True)
class PartSink:
    """Where a step's tasks write the parts (kept or dropped rows) of the version being staged (picklable: it travels
    with the tasks to the Ray workers, which must see the data root: an S3 root, or a local one on the same machine).
    `write` stores part `index` as the IO manager would have (the one Parquet encoding, the same name) and returns
    what the manifest records of it; the version is published only when every part is in and the step succeeded, and
    an aborted one takes its parts with it (`Version.abort`)."""

    final: str  # the version's URI
    staging: str | None  # its local staging folder (None: S3, each part a create-only PUT to its final key)
    endpoint_url: str | None = None
    region: str = "us-east-1"

    def write(self, index: int, frame: pl.DataFrame, table: str = DATA) -> WrittenPart | None:
        """Store `frame` as part `index` of `table` (kept rows, or `DROPPED` rows with their `DropTally`); None
        (nothing written) for an empty part left out (`keeps_part`). A task re-run by Ray after its worker died
        writes the same bytes again: a local part is replaced, an S3 part that exists with these bytes is kept
        (anything else is refused)."""
        if not keeps_part(index, frame, table):
            return None
        data, name = parquet_bytes(frame), part_name(index, table)
        store = store_for(self.final, self.endpoint_url, self.region)
        stage_file(store, self.final, self.staging, name, data, same_again=True)
        tokens = int(frame["n_tokens"].sum() or 0) if "n_tokens" in frame.columns else None
        drops = DropTally.of(frame) if table == DROPPED else None
        return WrittenPart(index, frame.height, tokens, len(data), hashlib.sha256(data).hexdigest(), table, drops)


def begin(store: Store, base_uri: str, root: str, version: str, staging_root: str | None) -> Version:
    """Start writing `version` of the asset partition folder `root` under the data root `base_uri`. Locally its
    staging folder is `<staging_root>/<root relative to base_uri>/<version>`, and whatever a killed writer left
    staged for the partition is cleared first (the caller holds the partition's writer lock)."""
    staging = None
    if store.kind == "local":
        stage_dir = Path(staging_root) / Path(root).resolve().relative_to(Path(base_uri).resolve())
        shutil.rmtree(stage_dir, ignore_errors=True)  # what a killed writer left (we hold the lock)
        staging = str(stage_dir / version)
    return Version(store, f"{root}/{version}", f"{relative(base_uri, root)}/{version}", staging)


def resolved(manifest: dict, base_uri: str) -> dict:
    """`manifest` with every file path (PATH_LISTS, PATH_MAPS, PATH_ONE) resolved against the data root `base_uri`
    (`store.join`: relative paths joined to the root, absolute ones as they are)."""
    out = dict(manifest)
    for key in PATH_LISTS:
        if key in out:
            out[key] = [join(base_uri, p) for p in out[key]]
    for key in PATH_MAPS:
        if key in out:
            out[key] = {name: join(base_uri, p) for name, p in out[key].items()}
    for key in PATH_ONE:
        if key in out:
            out[key] = join(base_uri, out[key])
    return out


def list_versions(store: Store, root: str) -> list[str]:
    """The version folders of the asset partition folder `root`: oldest first locally (by modification time), by
    name on S3; never the `_removed` audit folder."""
    return [name for name in store.list_dirs(root) if name != REMOVED]


def prune(store: Store, root: str, asset: str, keep: str, keep_versions: int = KEEP_VERSIONS) -> list[str]:
    """Delete all but the newest `keep_versions` versions of a local, unprotected asset partition, never `keep`
    (the version just published). Returns the versions deleted. A PROTECTED asset and S3 are left alone."""
    if asset in PROTECTED or store.kind != "local":
        return []  # S3 retention belongs to a bucket lifecycle rule, not to the writer
    old = [v for v in list_versions(store, root)[:-keep_versions] if v != keep]
    for v in old:
        store.delete_prefix(f"{root}/{v}")
    return old


# a version folder's name: `new_version_id` writes `<8 hex>-<8 hex>`; older layouts used other plain names
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_version_name(version: str) -> None:
    """Refuse a version argument that is not a plain folder name (`..`, `a/b`, `.`) before it names a path."""
    if not VERSION_NAME.fullmatch(version):
        raise ValueError(
            f"{version!r} is not a version name ({VERSION_NAME.pattern}): refused before any path is built"
        )


def remove_version(
    store: Store, base: str, root: str, asset: str, label: str, version: str, current: str | None, reason: str
) -> list[str]:
    """Delete `version` of the asset partition folder `root` (`asset`: the asset's name; `label`: how messages name
    the partition) and leave an audit record beside it (`_removed/<version>.json`: who, when, why, which files).
    Refuses a PROTECTED asset and the `current` version (ProtectedVersionError), an empty reason (ValueError) and a
    version that does not exist (FileNotFoundError). Protection is decided on the resolved location: locally, a version
    folder reached through a link (the version, its partition or its asset folder linked into another asset's) is
    refused. Returns the deleted URIs."""
    check_version_name(version)
    if kind_of(root) == "local":
        real = os.path.realpath(f"{root}/{version}")
        spelled = os.path.join(os.path.realpath(base), os.path.relpath(root, base), version)
        if real != spelled:
            raise ProtectedVersionError(f"{label} {version} resolves to {real}, outside {asset}'s own folder")
    if asset in PROTECTED:
        raise ProtectedVersionError(f"{asset} versions are protected: remove them with the bucket's own tools")
    if version == current:
        raise ProtectedVersionError(f"{label} {version} is the current version")
    if not reason.strip():
        raise ValueError("a reason is required")
    if version not in list_versions(store, root):
        raise FileNotFoundError(f"{label} has no version {version!r}")
    deleted = store.delete_prefix(f"{root}/{version}")
    record = {"version": version, "reason": reason, "by": getpass.getuser(), "at": time.time(), "files": deleted}
    store.write_bytes(f"{root}/{REMOVED}/{version}.json", json.dumps(record, indent=1).encode())
    log.warning(f"removed {label} version {version} ({len(deleted)} files): {reason}")
    return deleted
