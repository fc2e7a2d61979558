"""One writer per asset partition at a time, across processes and machines: a second writer waits for the first,
and a writer that lost its lock publishes nothing.

The lock kind follows the store that holds the data root (`lock_for`):
- local: an exclusive `flock` on `<staging root>/_locks/<name>.lock` (released by the kernel when its holder dies,
  so a killed run never blocks its rerun; a paused holder keeps it, so the others wait);
- S3: a lease object `<partition folder>/_lock` (`S3Lease`), fenced by its ETag: every write and delete of it is
  conditional on the object being the one expected, so a holder paused past its expiry whose lease was taken over
  can neither renew over nor delete the new holder's lease.

`writer_lock` is the wait loop; the block calls `lock.assert_held()` right before it publishes (raises `LockLost`).
Every clock is injectable (`time.time` for lease expiry, `time.monotonic` and `time.sleep` for the wait), so tests
drive expiry and timeouts without waiting for the wall clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from resources.store import S3Store, Store

log = logging.getLogger(__name__)

LEASE_S = 120.0  # an S3 lease lives this long unless renewed; its holder renews it every LEASE_S / 3
POLL_S = 0.2  # a waiting writer tries again this often


class LockLost(RuntimeError):
    """The writer no longer holds its lock (another writer may hold it now): it must not publish."""


class Lock(Protocol):
    def try_acquire(self) -> bool: ...

    def assert_held(self) -> None:
        """Raise `LockLost` unless this holder still holds the lock: called right before publishing."""
        ...

    def release(self) -> None: ...


class FileLock:
    """An exclusive, non-blocking `flock` on `path` (created if missing)."""

    def __init__(self, path: str):
        self.file = open(path, "a+")  # noqa: SIM115 - held until release()

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def assert_held(self) -> None:
        """An flock is held until release or death, but only excludes writers that open the same file: once the
        lock file is deleted or replaced, the next writer locks a new one, so the holder has lost it."""
        try:
            same = os.path.samestat(os.fstat(self.file.fileno()), os.stat(self.file.name))
        except FileNotFoundError:
            same = False
        if not same:
            raise LockLost(f"{self.file.name} was deleted or replaced while locked: another writer may hold it")

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class _Refused(Exception):
    """S3 refused a conditional request: the lease object is not (or no longer) the one the request named."""


# 412: If-Match / If-None-Match failed; 404: no such object (released); 409: a concurrent write won the race
_REFUSED = {"PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"}


class S3Lease:
    """A lease on S3: the object `uri` holding `{"token", "expires"}` (`clock` wall-clock seconds). Created with
    If-None-Match: * (of racing creators exactly one wins); once expired, replaced by the next writer with If-Match
    on the ETag it read (of racing breakers exactly one wins, and a holder's renewal in between makes it fail).
    While held it is renewed every RENEW_S with If-Match on the ETag of the holder's own last write, and deleted on
    release the same way: a write or delete that finds another object there is refused, never applied, and tells
    the holder it lost the lease (`LockLost` from `renew` / `assert_held`)."""

    LEASE_S = LEASE_S
    RENEW_S = LEASE_S / 3

    def __init__(self, store: S3Store, uri: str, clock: Callable[[], float] = time.time):
        self.store, self.uri, self.clock, self.token = store, uri, clock, uuid.uuid4().hex
        self.etag: str | None = None  # of the lease object this holder wrote last
        self.lost = False
        self._mutex = threading.Lock()  # one conditional write at a time: the renewer and assert_held share the ETag
        self._stop, self._renewer = None, None

    def _call(self, op: str, **kwargs: Any) -> dict:
        """One S3 request on the lease object; `_Refused` when its condition does not hold."""
        bucket, key = self.store.split(self.uri)
        client = self.store.client
        try:
            return getattr(client, op)(Bucket=bucket, Key=key, **kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _REFUSED:
                raise _Refused(f"{op} {self.uri}") from e
            raise

    def _put(self, **condition: str) -> None:
        body = json.dumps({"token": self.token, "expires": self.clock() + self.LEASE_S}).encode()
        self.etag = self._call("put_object", Body=body, **condition)["ETag"]

    def try_acquire(self) -> bool:
        try:
            self._put(IfNoneMatch="*")
        except _Refused:
            if not self._take_over_expired():
                return False
        self.lost = False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return True

    def _take_over_expired(self) -> bool:
        """Replace the lease object if it has expired (its holder died or was paused past it), in one write
        conditional on the object read: a renewal or another breaker in between makes it fail."""
        try:
            held = self._call("get_object")
            if json.loads(held["Body"].read()).get("expires", 0) >= self.clock():
                return False  # alive
            self._put(IfMatch=held["ETag"])
            return True
        except _Refused:
            return False  # released, renewed or taken over in between: try again

    def renew(self) -> None:
        """Push the lease's expiry LEASE_S ahead if the lease object is still the one this holder wrote last (what
        the renewer thread does every RENEW_S); otherwise raise `LockLost` and never write."""
        with self._mutex:
            if self.lost:
                raise LockLost(f"{self.uri}: lease lost")
            try:
                self._put(IfMatch=self.etag)
            except _Refused:
                self.lost = True
                raise LockLost(f"{self.uri}: the lease expired and another writer took it over") from None

    def assert_held(self) -> None:
        """Renew now: its If-Match is the proof that nobody took the lease over, whatever this process's clock and
        renewer did in between (a holder paused past its expiry learns here that it lost the lease)."""
        self.renew()

    def _renew(self) -> None:
        while not self._stop.wait(self.RENEW_S):
            try:
                self.renew()
            except LockLost:
                return  # the writer learns it from assert_held
            except (BotoCoreError, ClientError) as e:  # failed past botocore's retries: the next tick tries again
                log.warning(f"renewing {self.uri} failed ({e}): retrying in {self.RENEW_S:.0f} s")

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        with contextlib.suppress(_Refused):  # not ours any more: it is the new holder's
            self._call("delete_object", IfMatch=self.etag)


def lock_for(
    store: Store, name: str, partition_uri: str, staging_root: str | None, clock: Callable[[], float] = time.time
) -> Lock:
    """The writer lock of the asset partition `name` (`<asset>.<partition>`) stored in `store`: an flock under the
    local staging root, or a lease object in the partition folder `partition_uri` on S3."""
    if store.kind == "local":
        path = Path(staging_root) / "_locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path))
    return S3Lease(store, f"{partition_uri}/_lock", clock)


@contextlib.contextmanager
def writer_lock(
    lock: Lock,
    name: str,
    timeout_s: float,
    log_to=None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold `lock` for the block: try every POLL_S, warn `log_to` once that another run is writing `name`, and
    raise TimeoutError once `timeout_s` has passed without it. The block calls `lock.assert_held()` right before
    it publishes."""
    deadline, warned = monotonic() + timeout_s, False
    while not lock.try_acquire():
        if not warned and log_to is not None:
            log_to.warning(f"another run is writing {name}: waiting for it")
            warned = True
        if monotonic() > deadline:
            raise TimeoutError(f"{name} stayed locked for {timeout_s:.0f} s")
        sleep(POLL_S)
    try:
        yield
    finally:
        lock.release()
