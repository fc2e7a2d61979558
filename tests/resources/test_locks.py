"""resources/locks.py: the flock, the S3 lease and the wait loop, driven by a fake clock (no wall-clock waits)."""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from resources.locks import LEASE_S, POLL_S, FileLock, S3Lease, lock_for, writer_lock
from resources.store import LocalStore, ObjectStore


class FakeClock:
    """`time`/`monotonic` read `now`; `sleep(s)` advances it by `step` (default: s) and runs `on_sleep`."""

    def __init__(self, step: float | None = None, on_sleep=None):
        self.now, self.step, self.on_sleep, self.sleeps, self.slept = 1_000_000.0, step, on_sleep, 0, []

    def time(self) -> float:
        return self.now

    monotonic = time

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.slept.append(s)
        self.now += self.step if self.step is not None else s
        if self.on_sleep:
            self.on_sleep()


def test_constants_are_unchanged():
    assert LEASE_S == S3Lease.LEASE_S == 120.0 and POLL_S == 0.2


# -- local: flock ---------------------------------------------------------------------------------------------


def test_lock_for_a_local_root_is_an_flock_under_the_staging_root(tmp_path):
    lock = lock_for(LocalStore(), "raw.web", str(tmp_path / "data" / "raw" / "web"), str(tmp_path / ".data.staging"))
    assert isinstance(lock, FileLock) and lock.file.name == str(tmp_path / ".data.staging" / "_locks" / "raw.web.lock")
    assert not (tmp_path / "data").exists()  # nothing is created under the data root
    lock.file.close()


def test_an_flock_excludes_a_second_holder_until_released(tmp_path):
    path = str(tmp_path / "x.lock")
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_the_kernel_releases_the_flock_of_a_killed_holder(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time\n"
                f"f = open({path!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                "print('held', flush=True); time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(path)
        assert not lock.try_acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert lock.try_acquire()  # the dead holder's lock went with its process
    lock.release()


def test_the_wait_loop_warns_once_and_times_out_on_the_injected_clock(tmp_path, caplog):
    path = str(tmp_path / "x.lock")
    holder = FileLock(path)
    assert holder.try_acquire()
    clock, log = FakeClock(step=1.0), logging.getLogger("test.locks")
    with (
        caplog.at_level(logging.WARNING, logger="test.locks"),
        pytest.raises(TimeoutError, match="raw.web stayed locked for 60 s"),
        writer_lock(FileLock(path), "raw.web", 60, log, monotonic=clock.monotonic, sleep=clock.sleep),
    ):
        pytest.fail("entered while another holds the lock")
    assert [r.getMessage() for r in caplog.records] == ["another run is writing raw.web: waiting for it"]
    # one try per POLL_S of sleep (the fake clock moves 1 s per sleep) until the deadline had passed
    assert clock.slept == [POLL_S] * 61 and clock.now == 1_000_000.0 + 61
    # released by its holder while a writer waits: the writer goes in at its next try
    waiting = FileLock(path)
    clock = FakeClock(on_sleep=holder.release)
    with writer_lock(waiting, "raw.web", 60, monotonic=clock.monotonic, sleep=clock.sleep):
        assert clock.sleeps == 1 and not FileLock(path).try_acquire()
    assert FileLock(path).try_acquire()  # released on exit


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    lock = FileLock(str(tmp_path / "x.lock"))
    with pytest.raises(RuntimeError), writer_lock(lock, "raw.web", 1):
        raise RuntimeError("the write failed")
    assert FileLock(str(tmp_path / "x.lock")).try_acquire()


# -- S3: the lease --------------------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_endpoint):
    store = ObjectStore(endpoint_url=s3_endpoint)
    uri = f"s3://curation/lease-{os.urandom(4).hex()}/tokenized/web"
    return store, store.impl(uri), uri


def lease_body(store, uri) -> dict:
    return json.loads(store.read_bytes(f"{uri}/_lock"))


@pytest.mark.s3
def test_lock_for_an_s3_root_is_a_lease_object_in_the_partition_folder(s3):
    store, impl, uri = s3
    clock = FakeClock()
    lease = lock_for(impl, "tokenized.web", uri, None, clock=clock.time)
    assert isinstance(lease, S3Lease) and lease.uri == f"{uri}/_lock"
    assert lease.try_acquire()
    assert lease_body(store, uri) == {"token": lease.token, "expires": clock.now + LEASE_S}
    clock.now += 50
    lease.renew()  # what the renewer thread does every LEASE_S / 3
    assert lease_body(store, uri)["expires"] == clock.now + LEASE_S
    lease.release()
    assert not store.exists(f"{uri}/_lock")


@pytest.mark.s3
def test_a_dead_holders_lease_is_broken_once_the_clock_passes_its_expiry(s3):
    store, impl, uri = s3
    clock = FakeClock(step=30.0)
    expires = clock.now + LEASE_S
    store.write_bytes(f"{uri}/_lock", json.dumps({"token": "dead", "expires": expires}).encode())
    lease = lock_for(impl, "tokenized.web", uri, None, clock=clock.time)
    with writer_lock(lease, "tokenized.web", 3600, monotonic=clock.monotonic, sleep=clock.sleep):
        # tries at +0, +30, ... +120 (expires == now: still valid); +150 breaks it; +180 creates the new one
        assert clock.now == expires + 60
        assert lease_body(store, uri)["token"] == lease.token
    assert not store.exists(f"{uri}/_lock")


@pytest.mark.s3
def test_a_live_holders_lease_is_waited_for_and_never_broken(s3):
    store, impl, uri = s3
    holder = S3Lease(impl, f"{uri}/_lock", clock=(holder_clock := FakeClock()).time)
    assert holder.try_acquire()
    # The waiter's clock runs 30 s per try; the holder renews as it would every LEASE_S / 3 of the same time.
    clock = FakeClock(step=30.0)

    def holder_renews():
        holder_clock.now = clock.now
        holder.renew()

    clock.on_sleep = holder_renews
    waiter = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    with (
        pytest.raises(TimeoutError, match="tokenized.web stayed locked for 600 s"),
        writer_lock(waiter, "tokenized.web", 600, monotonic=clock.monotonic, sleep=clock.sleep),
    ):
        pytest.fail("entered while the holder is alive")
    assert clock.now - 1_000_000.0 > LEASE_S  # far past the first expiry: only renewal kept the lease
    assert lease_body(store, uri)["token"] == holder.token
    holder.release()
    clock.on_sleep = None
    with writer_lock(waiter, "tokenized.web", 600, monotonic=clock.monotonic, sleep=clock.sleep):
        assert lease_body(store, uri)["token"] == waiter.token


@pytest.mark.s3
def test_an_unexpired_lease_is_not_broken_at_its_expiry_instant(s3):
    store, impl, uri = s3
    clock = FakeClock()
    store.write_bytes(f"{uri}/_lock", json.dumps({"token": "other", "expires": clock.now}).encode())
    assert not S3Lease(impl, f"{uri}/_lock", clock=clock.time).try_acquire()
    assert lease_body(store, uri)["token"] == "other"  # expires < now breaks it, expires == now does not
    clock.now += 0.001
    assert not S3Lease(impl, f"{uri}/_lock", clock=clock.time).try_acquire()  # this try breaks it...
    assert not store.exists(f"{uri}/_lock")
    lease = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    assert lease.try_acquire()  # ...and the next one competes and wins
    lease.release()


@pytest.mark.s3
def test_a_lease_released_between_the_refused_create_and_the_read_means_try_again(s3):
    store, impl, uri = s3

    class ReleasedInBetween(type(impl)):
        def write_bytes(self, u, data, create_only=False, tmp_dir=None):
            try:
                super().write_bytes(u, data, create_only=create_only)
            except FileExistsError:
                self.delete(u)  # the holder releases right after our create was refused
                raise

    store.write_bytes(f"{uri}/_lock", json.dumps({"token": "other", "expires": 0}).encode())
    racing = ReleasedInBetween(impl.endpoint_url, impl.region)
    assert not S3Lease(racing, f"{uri}/_lock").try_acquire()
    assert not store.exists(f"{uri}/_lock")
    lease = S3Lease(racing, f"{uri}/_lock")
    assert lease.try_acquire()
    lease.release()


@pytest.mark.s3
def test_of_several_creators_of_a_lease_exactly_one_wins(s3):
    store, impl, uri = s3
    leases = [S3Lease(impl, f"{uri}/_lock") for _ in range(4)]
    won = [lease for lease in leases if lease.try_acquire()]
    assert won == leases[:1] and lease_body(store, uri)["token"] == leases[0].token
    won[0].release()
