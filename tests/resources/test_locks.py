"""resources/locks.py: the flock, the S3 lease and its fencing, and the wait loop, driven by a fake clock (no
wall-clock waits); races on S3 are sequenced by the test proxy (a request is held until the rival has acted)."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from resources.locks import LEASE_S, POLL_S, FileLock, LockLost, S3Lease, lock_for, writer_lock
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
    assert LEASE_S == S3Lease.LEASE_S == 3 * S3Lease.RENEW_S == 120.0 and POLL_S == 0.2


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


def test_a_holder_whose_lock_file_was_replaced_has_lost_the_lock(tmp_path):
    path = tmp_path / "x.lock"
    holder = FileLock(str(path))
    assert holder.try_acquire()
    holder.assert_held()
    path.unlink()  # e.g. the staging directory cleaned up while a run writes
    other = FileLock(str(path))
    assert other.try_acquire()  # a new file: the holder's flock excludes nobody any more
    with pytest.raises(LockLost, match="deleted or replaced"):
        holder.assert_held()
    other.assert_held()
    holder.release()
    other.release()


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
        # tries at +0, +30, ... +120 (expires == now: still valid); +150 takes it over
        assert clock.now == expires + 30
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
    lease = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    assert lease.try_acquire() and lease_body(store, uri)["token"] == lease.token
    lease.release()


@pytest.fixture
def via_proxy(s3_proxy):
    """The store through the test proxy, and `.act(fn, before)`: run `fn` once, in front of the first request of
    the lease for which `before(methods)` holds (`methods`: the HTTP methods of the lease requests so far, this
    one last); the request waits until `fn` returns, then goes on to S3. `.methods()`: those methods."""

    def methods():
        return [m for m, p in s3_proxy.log if "/_lock" in p]

    def act(fn, before):
        def policy(m, path):
            if "/_lock" in path and before(methods()):
                s3_proxy.policy = lambda m, p: None
                fn()

        s3_proxy.policy = policy

    return types.SimpleNamespace(store=ObjectStore(endpoint_url=s3_proxy.endpoint), act=act, methods=methods)


@pytest.mark.s3
def test_a_lease_released_between_the_refused_create_and_the_read_means_try_again(s3, via_proxy):
    store, _, uri = s3
    store.write_bytes(f"{uri}/_lock", json.dumps({"token": "other", "expires": 0}).encode())
    racing = S3Lease(via_proxy.store.impl(uri), f"{uri}/_lock")
    # the holder releases right after our create was refused, before we read its lease
    via_proxy.act(lambda: store.delete(f"{uri}/_lock"), before=lambda methods: methods[-1] == "GET")
    assert not racing.try_acquire()
    assert not store.exists(f"{uri}/_lock")
    assert racing.try_acquire()  # the next try competes and wins
    racing.release()


@pytest.mark.s3
@pytest.mark.parametrize("rival", ["holder renews", "another writer takes over"])
def test_an_expired_lease_that_changes_between_a_writers_read_and_its_takeover_is_left_alone(s3, via_proxy, rival):
    """The takeover replaces exactly the expired lease it read (If-Match): a holder that resumed and renewed in
    between keeps its lease, and of two writers breaking the same expired lease only the first gets it."""
    store, impl, uri = s3
    clock = FakeClock()
    holder = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    assert holder.try_acquire()
    clock.now += LEASE_S + 1  # the holder was paused past its expiry
    other = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    rival_lease, act = (holder, holder.renew) if rival == "holder renews" else (other, other.try_acquire)
    writer = S3Lease(via_proxy.store.impl(uri), f"{uri}/_lock", clock=clock.time)
    # the writer has read the lease as expired; its next request (the takeover) reaches S3 after the rival acted
    via_proxy.act(act, before=lambda methods: methods[-2:-1] == ["GET"])
    assert not writer.try_acquire()
    assert lease_body(store, uri)["token"] == rival_lease.token
    assert via_proxy.methods() == ["PUT", "GET", "PUT"]  # create (refused), read, takeover (refused)
    rival_lease.assert_held()
    if rival_lease is other:
        holder.release()  # refused: the lease is the other writer's
    rival_lease.release()
    assert not store.exists(f"{uri}/_lock")


@pytest.mark.s3
def test_an_expired_lease_is_taken_over_in_the_first_try(s3):
    """One try, no wait: so a lock timeout shorter than a few slow S3 round trips cannot fail the writer that
    follows a dead one (issue 20 item 14)."""
    store, impl, uri = s3
    store.write_bytes(f"{uri}/_lock", json.dumps({"token": "dead", "expires": time.time() - 1}).encode())
    lease = S3Lease(impl, f"{uri}/_lock")
    with writer_lock(lease, "tokenized.web", 0, sleep=lambda s: pytest.fail("waited for an expired lease")):
        assert lease_body(store, uri)["token"] == lease.token


# -- S3: fencing a holder that was paused past its expiry (issue 20 item 10) -----------------------------------


@pytest.mark.s3
def test_a_paused_holder_whose_lease_was_taken_over_neither_renews_nor_deletes_it_nor_publishes(s3):
    """A holder stopped (SIGSTOP) past its expiry resumes after another writer took its lease over: its renewal
    and its release are refused by S3 (If-Match on its own last write), and the `assert_held` before publishing
    tells it that it lost the lease."""
    store, impl, uri = s3
    clock, published = FakeClock(), []
    paused = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    new = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    with (
        pytest.raises(LockLost, match="another writer took it over"),
        writer_lock(paused, "tokenized.web", 60, monotonic=clock.monotonic, sleep=clock.sleep),
    ):
        clock.now += LEASE_S + 1  # stopped: no renewal while the clock passes its expiry
        assert new.try_acquire()
        taken = lease_body(store, uri)
        assert taken["token"] == new.token
        paused.assert_held()  # resumed: what the writer calls right before it publishes (a conditional renewal)
        published.append("manifest")  # never reached
    assert published == [] and paused.lost
    assert lease_body(store, uri) == taken  # neither overwritten by its renewal nor deleted by its release
    with pytest.raises(LockLost):
        paused.renew()  # and it stays lost: the renewer thread's next tick writes nothing
    new.assert_held()
    new.release()
    assert not store.exists(f"{uri}/_lock")


@pytest.mark.s3
def test_a_holder_paused_past_its_expiry_that_nobody_took_over_still_holds_its_lease(s3):
    """Fencing is by the lease object, not by the holder's clock: nobody wrote in between, so `assert_held`
    renews it."""
    store, impl, uri = s3
    clock = FakeClock()
    paused = S3Lease(impl, f"{uri}/_lock", clock=clock.time)
    assert paused.try_acquire()
    clock.now += 10 * LEASE_S
    paused.assert_held()
    assert lease_body(store, uri) == {"token": paused.token, "expires": clock.now + LEASE_S}
    paused.release()
    assert not store.exists(f"{uri}/_lock")


@pytest.mark.s3
def test_the_renewer_thread_stops_at_its_first_refused_renewal(s3, via_proxy):
    """The renewer's tick is what overwrote the new holder's lease in the incident: refused now, and the last."""

    class Renewing(S3Lease):
        RENEW_S = 0.01

    store, _, uri = s3
    holder = Renewing(via_proxy.store.impl(uri), f"{uri}/_lock")
    taken = json.dumps({"token": "new", "expires": time.time() + LEASE_S}).encode()
    # another writer takes the lease over just before the holder's first renewal reaches S3
    via_proxy.act(lambda: store.write_bytes(f"{uri}/_lock", taken), before=lambda methods: methods == ["PUT"] * 2)
    assert holder.try_acquire()
    holder._renewer.join(timeout=60)  # a generous bound: it ends right after its second request
    assert not holder._renewer.is_alive() and holder.lost
    holder.release()
    assert via_proxy.methods() == ["PUT", "PUT", "DELETE"]  # create, the refused renewal, the refused delete
    assert store.read_bytes(f"{uri}/_lock") == taken


@pytest.mark.s3
def test_of_several_creators_of_a_lease_exactly_one_wins(s3):
    store, impl, uri = s3
    leases = [S3Lease(impl, f"{uri}/_lock") for _ in range(4)]
    won = [lease for lease in leases if lease.try_acquire()]
    assert won == leases[:1] and lease_body(store, uri)["token"] == leases[0].token
    won[0].release()
