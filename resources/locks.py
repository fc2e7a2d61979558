"""One writer per asset partition at a time, across processes and machines: a second writer waits for the first.

The lock kind follows the store that holds the data root (`lock_for`):
- local: an exclusive `flock` on `<staging root>/_locks/<name>.lock` (released by the kernel when its holder dies,
  so a killed run never blocks its rerun);
- S3: a lease object `<partition folder>/_lock` (`S3Lease`).

`writer_lock` is the wait loop. Every clock is injectable (`time.time` for lease expiry, `time.monotonic` and
`time.sleep` for the wait), so tests drive expiry and timeouts without waiting for the wall clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from resources.store import Store

LEASE_S = 120.0  # an S3 lease lives this long unless renewed; its holder renews it every LEASE_S / 3
POLL_S = 0.2  # a waiting writer tries again this often


class Lock(Protocol):
    def try_acquire(self) -> bool: ...

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

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class S3Lease:
    """A lease on S3: the object `uri`, created with If-None-Match (of racing creators exactly one wins), renewed
    every LEASE_S / 3 while held and deleted on release. A holder that dies stops renewing; once its lease has
    expired (by `clock`, wall-clock seconds) the next writer deletes it and competes again. (Two waiters breaking
    the same stale lease at once can both delete, but only one of them then creates the new one.)"""

    LEASE_S = LEASE_S

    def __init__(self, store: Store, uri: str, clock: Callable[[], float] = time.time):
        self.store, self.uri, self.clock, self.token = store, uri, clock, uuid.uuid4().hex
        self._stop, self._renewer = None, None

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "expires": self.clock() + self.LEASE_S}).encode()

    def try_acquire(self) -> bool:
        try:
            self.store.write_bytes(self.uri, self._body(), create_only=True)
        except FileExistsError:
            try:
                held = json.loads(self.store.read_bytes(self.uri))
            except FileNotFoundError:
                return False  # released in between: compete again
            if held.get("expires", 0) < self.clock():
                self.store.delete(self.uri)  # its holder died: break the lease
            return False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return True

    def renew(self) -> None:
        """Push the lease's expiry LEASE_S ahead (what the renewer thread does every LEASE_S / 3)."""
        self.store.write_bytes(self.uri, self._body())

    def _renew(self) -> None:
        while not self._stop.wait(self.LEASE_S / 3):
            self.renew()

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        self.store.delete(self.uri)


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
    raise TimeoutError once `timeout_s` has passed without it."""
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
