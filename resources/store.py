"""Byte-level storage: one `Store` protocol, a local and an S3 implementation, and the one function that picks one.

`kind_of(uri)` is the only place that looks at a URI's scheme (`s3://bucket/key` is S3, a path without a scheme is
local, any other scheme is refused); `store_for(uri)` turns its answer into an implementation; `relative` and `join`
turn a URI under the data root into the root-relative path a manifest records and back. Everything else -
versions, locks, the IO manager, the steps, the sensors - asks a store, or asks `kind_of` when it must do something
that only one kind can do (a local staging directory, an flock), and never inspects a URI string itself
(tests/resources/test_store.py walks the package and fails otherwise).

- `LocalStore`: files; an atomic write is a temp file in `staging_dir` (beside the data root: see
  `resources.versions.staging_dir_for`) renamed into place, a create-only write is `os.link` (fails instead of
  replacing).
- `S3Store`: one boto3 client per process and endpoint (dagster-aws `S3Resource(...).get_client()`: botocore's
  retries, 5 attempts with backoff, for 503 SlowDown, throttling and dropped connections); a PUT is atomic, a
  create-only PUT sends `If-None-Match: *`.
- `ObjectStore`: the Dagster resource (`endpoint_url`, `region`, `staging_dir`) whose methods take any URI and
  delegate to `store_for`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import shutil
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal, NamedTuple, Protocol

import dagster as dg

Kind = Literal["local", "s3"]
_S3 = "s3://"


def kind_of(uri: str) -> Kind:
    """Which store holds `uri`: `s3` for `s3://bucket/key`, `local` for a path without a scheme. The only function
    that reads a URI's scheme; another scheme is refused (no store could read it)."""
    if uri.startswith(_S3):
        return "s3"
    if "://" in uri:
        raise ValueError(f"{uri}: unsupported storage scheme (local paths and s3:// URIs only)")
    return "local"


def join(base: str, path: str) -> str:
    """Where a path a manifest records lives: a path relative to the data root `base` (what manifests record, so a
    root copied or moved elsewhere still reads) joined to it with `/`; an absolute one (a local absolute path or an
    s3:// URI: a manifest written before paths were relative) as it is."""
    if kind_of(path) == "s3" or os.path.isabs(path):
        return path
    return f"{base.rstrip('/')}/{path}"


def relative(base: str, uri: str) -> str:
    """`uri`, an object under the data root `base` (spelled from `base`, as the IO manager builds it), relative to
    it, `/`-separated: what a manifest records (`join` resolves it)."""
    prefix = f"{base.rstrip('/')}/"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri} is not under the data root {base}")
    return uri.removeprefix(prefix)


class Listed(NamedTuple):
    """One object found by `Store.list_since`."""

    key: str  # relative to the listed prefix, `/`-separated (`<source>/<shard>` under a landing zone)
    uri: str
    # identifies the object's current content, changes when it is rewritten: `<path>@<size>:<mtime_ns>` locally
    # (os.stat), `<key>@<ETag>` on S3 (the key within its bucket)
    token: str
    modified: datetime  # timezone-aware UTC


class Store(Protocol):
    """Byte-level access to one kind of storage. URIs are absolute: a local path, or `s3://bucket/key`."""

    kind: ClassVar[Kind]

    def expand(self, pattern: str) -> list[tuple[str, int]]:
        """(uri, size) of every object matching a path or glob (`*`, `?`, `[...]`), sorted by uri."""
        ...

    def open(self, uri: str) -> BinaryIO:
        """A binary stream; a missing object raises FileNotFoundError."""
        ...

    def read_bytes(self, uri: str) -> bytes: ...

    def write_bytes(self, uri: str, data: bytes, create_only: bool = False, tmp_dir: str | None = None) -> None:
        """Atomic publish (nothing partial is ever visible at `uri`); `create_only` never replaces an existing
        object (FileExistsError). `tmp_dir`: where a local temp file is assembled (ignored on S3)."""
        ...

    def delete(self, uri: str) -> None:
        """Delete one object (missing is fine)."""
        ...

    def delete_prefix(self, uri: str) -> list[str]:
        """Delete every object under `uri` (a directory or key prefix); returns the URIs deleted."""
        ...

    def exists(self, uri: str) -> bool: ...

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the folders directly under `prefix`, oldest first where the store keeps folder times (local:
        by modification time), else by name (S3 has no folder times). [] when there is none."""
        ...

    def list_since(self, prefix: str, since: datetime | None) -> list[Listed]:
        """Every object under `prefix` (recursively) modified strictly after `since` (None: all)."""
        ...

    def storage_options(self, uri: str) -> dict[str, str] | None:
        """polars / object_store `storage_options` for scanning `uri` (None: a local path)."""
        ...


class LocalStore:
    kind: ClassVar[Kind] = "local"

    def __init__(self, staging_dir: str | None = None):
        self.staging_dir = staging_dir

    def expand(self, pattern: str) -> list[tuple[str, int]]:
        return sorted((p, os.path.getsize(p)) for p in glob.glob(pattern) if os.path.isfile(p))

    def open(self, uri: str) -> BinaryIO:
        return open(uri, "rb")

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes, create_only: bool = False, tmp_dir: str | None = None) -> None:
        """A temp file (in `tmp_dir`, else `staging_dir`, else the target's directory) renamed into place."""
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uri)

    def delete_prefix(self, uri: str) -> list[str]:
        files = sorted(str(p) for p in Path(uri).rglob("*") if p.is_file())
        shutil.rmtree(uri, ignore_errors=True)
        return files

    def exists(self, uri: str) -> bool:
        return os.path.exists(uri)

    def list_dirs(self, prefix: str) -> list[str]:
        if not os.path.isdir(prefix):
            return []
        dirs = sorted((p for p in Path(prefix).iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        return [p.name for p in dirs]

    def list_since(self, prefix: str, since: datetime | None) -> list[Listed]:
        out = []
        for root, _, files in os.walk(prefix):
            for name in files:
                path = os.path.join(root, name)
                st = os.stat(path)
                modified = datetime.fromtimestamp(st.st_mtime, tz=UTC)
                if since is None or modified > since:
                    key = os.path.relpath(path, prefix).replace(os.sep, "/")
                    out.append(Listed(key, path, f"{path}@{st.st_size}:{st.st_mtime_ns}", modified))
        return out

    def storage_options(self, uri: str) -> dict[str, str] | None:
        return None


_clients: dict[tuple[int, str | None, str], Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None, region: str):
    """The process's boto3 S3 client for an endpoint and region, created on first use (dagster-aws `S3Resource`:
    botocore's retries, five attempts with backoff, for 503 SlowDown, throttling and dropped connections). Keyed
    by process id too: a forked child makes its own (a boto3 client must not cross a fork)."""
    key = (os.getpid(), endpoint_url, region)
    with _clients_lock:
        if key not in _clients:
            from dagster_aws.s3 import S3Resource

            _clients[key] = S3Resource(endpoint_url=endpoint_url, region_name=region).get_client()
        return _clients[key]


class S3Store:
    kind: ClassVar[Kind] = "s3"

    def __init__(self, endpoint_url: str | None = None, region: str = "us-east-1"):
        self.endpoint_url, self.region = endpoint_url, region

    @property
    def client(self):
        return s3_client(self.endpoint_url, self.region)

    @staticmethod
    def split(uri: str) -> tuple[str, str]:
        """(bucket, key) of `s3://bucket/key`."""
        bucket, _, key = uri.removeprefix(_S3).partition("/")
        return bucket, key

    def _keys(self, bucket: str, prefix: str) -> list[dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o for page in pages for o in page.get("Contents", [])]

    def expand(self, pattern: str) -> list[tuple[str, int]]:
        bucket, key = self.split(pattern)
        prefix = key.split("*")[0].split("?")[0].split("[")[0]
        return sorted(
            (f"{_S3}{bucket}/{o['Key']}", o["Size"])
            for o in self._keys(bucket, prefix)
            if fnmatch.fnmatchcase(o["Key"], key)
        )

    def open(self, uri: str) -> BinaryIO:
        bucket, key = self.split(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey as e:
            raise FileNotFoundError(f"{uri} does not exist") from e

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes, create_only: bool = False, tmp_dir: str | None = None) -> None:
        """One PUT (atomic); `create_only` sends `If-None-Match: *`."""
        bucket, key = self.split(uri)
        extra = {"IfNoneMatch": "*"} if create_only else {}
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
        except self.client.exceptions.ClientError as e:  # botocore has retried what was transient
            error = e.response.get("Error", {})
            if error.get("Code") == "PreconditionFailed":
                raise FileExistsError(f"{uri} exists and is write-once") from e
            raise OSError(f"PUT {uri} failed: {error.get('Code')}: {error.get('Message')}") from e

    def delete(self, uri: str) -> None:
        bucket, key = self.split(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, uri: str) -> list[str]:
        bucket, prefix = self.split(uri.rstrip("/") + "/")
        keys = [o["Key"] for o in self._keys(bucket, prefix)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
        return [f"{_S3}{bucket}/{k}" for k in keys]

    def exists(self, uri: str) -> bool:
        bucket, key = self.split(uri)
        return self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0) > 0

    def list_dirs(self, prefix: str) -> list[str]:
        bucket, key = self.split(prefix.rstrip("/") + "/")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/")
        return sorted(c["Prefix"][len(key) :].rstrip("/") for page in pages for c in page.get("CommonPrefixes", []))

    def list_since(self, prefix: str, since: datetime | None) -> list[Listed]:
        """Sorted by LastModified (dagster-aws `get_objects`: strictly after `since`, one-second resolution)."""
        from dagster_aws.s3.sensor import get_objects

        bucket, key = self.split(prefix)
        key = key.rstrip("/") + "/" if key else ""
        return [
            Listed(o["Key"][len(key) :], f"{_S3}{bucket}/{o['Key']}", f"{o['Key']}@{o['ETag']}", o["LastModified"])
            for o in get_objects(bucket, key, since_last_modified=since, client=self.client)
        ]

    def storage_options(self, uri: str) -> dict[str, str] | None:
        so = {"aws_region": self.region}
        if self.endpoint_url:
            so |= {
                "aws_endpoint_url": self.endpoint_url,
                "aws_allow_http": str(self.endpoint_url.startswith("http:")).lower(),
            }
        return so


def store_for(
    uri: str, endpoint_url: str | None = None, region: str = "us-east-1", staging_dir: str | None = None
) -> Store:
    """The store that holds `uri` (by `kind_of`): a `LocalStore` assembling in `staging_dir`, or an `S3Store` on
    `endpoint_url` (None: AWS) in `region`."""
    if kind_of(uri) == "s3":
        return S3Store(endpoint_url, region)
    return LocalStore(staging_dir)


class ObjectStore(dg.ConfigurableResource):
    """Byte-level access to local paths and s3:// URIs with one API: each call goes to `store_for(uri)` (see the
    `Store` protocol for what each method does)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    # local temp files go here (beside the data root: see versions.staging_dir_for), never into a directory readers list
    staging_dir: str | None = None

    def impl(self, uri: str) -> Store:
        return store_for(uri, self.endpoint_url, self.region, self.staging_dir)

    def expand(self, pattern: str) -> list[tuple[str, int]]:
        return self.impl(pattern).expand(pattern)

    def open(self, uri: str) -> BinaryIO:
        return self.impl(uri).open(uri)

    def read_bytes(self, uri: str) -> bytes:
        return self.impl(uri).read_bytes(uri)

    def write_bytes(self, uri: str, data: bytes, create_only: bool = False, tmp_dir: str | None = None) -> None:
        self.impl(uri).write_bytes(uri, data, create_only=create_only, tmp_dir=tmp_dir)

    def delete(self, uri: str) -> None:
        self.impl(uri).delete(uri)

    def delete_prefix(self, uri: str) -> list[str]:
        return self.impl(uri).delete_prefix(uri)

    def exists(self, uri: str) -> bool:
        return self.impl(uri).exists(uri)

    def list_dirs(self, prefix: str) -> list[str]:
        return self.impl(prefix).list_dirs(prefix)

    def list_since(self, prefix: str, since: datetime | None) -> list[Listed]:
        return self.impl(prefix).list_since(prefix, since)

    def storage_options(self, uri: str) -> dict[str, str] | None:
        return self.impl(uri).storage_options(uri)
