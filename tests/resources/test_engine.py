"""The Ray engine (resources/engine.py) on real Ray clusters on loopback: the embedded cluster's life cycle, results
in item order whatever the completion order, a task that fails for good naming its item, and a task whose worker is
SIGKILLed re-run by Ray."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.engine import CHAOS_DIR, RAY_ENV, LocalCluster, RayEngine

os.environ.update(RAY_ENV)  # Ray reads the loopback rule when it is imported: before `import ray`
import ray.cloudpickle  # noqa: E402


# The task functions below live in this test module, which Ray's workers cannot import: ship them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_inverse(item: int) -> tuple[int, int]:
    """Later items finish first: results must still come back in item order."""
    time.sleep(0.05 * (5 - item))
    return item * item, 1


def fail_on_three(item: int) -> tuple[int, int]:
    if item == 3:
        raise ValueError("a broken shard")
    return item, 1


def worker_pid(item: int) -> tuple[int, int]:
    return os.getpid(), 1


def listening_pids_and_addresses() -> list[tuple[int, str]]:
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        for part in line.split("pid=")[1:]:
            rows.append((int(part.split(",")[0]), local.rsplit(":", 1)[0]))
    return rows


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, monkeypatch_module):
    """A cluster of this module's own (`ray start --head` on loopback), with fault injection armed."""
    chaos = tmp_path_factory.mktemp("chaos")
    monkeypatch_module.setenv(CHAOS_DIR, str(chaos))
    monkeypatch_module.setenv("CURATION_CHAOS_MATCH", "chaos")
    local = LocalCluster(tmp_path_factory.mktemp("ray"))
    address, started = local.start(num_cpus=2)
    yield local, address, chaos
    local.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_local_cluster_listens_on_loopback_only_is_reused_and_stops_by_its_own_pids(cluster):
    local, address, _ = cluster
    assert address.startswith("127.0.0.1:")
    assert local.start(num_cpus=2) == (address, False)  # a second step of the instance reuses it
    pids = set(local.pids())
    assert pids
    addresses = {a for pid, a in listening_pids_and_addresses() if pid in pids}
    assert addresses and addresses <= {"127.0.0.1", "[::ffff:127.0.0.1]"}  # IPv4 loopback, also as mapped IPv6


def test_results_come_back_in_item_order_and_a_failed_task_names_its_item(cluster):
    _, address, _ = cluster
    engine = RayEngine(address=address, state_dir="unused")
    assert list(engine.map(slow_inverse, range(5), [f"shard-{i}" for i in range(5)])) == [0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError, match="^task shard-3 failed: ValueError: a broken shard$"):
        list(engine.map(fail_on_three, range(5), [f"shard-{i}" for i in range(5)]))


def test_a_task_whose_worker_is_killed_is_rerun_by_ray(cluster):
    _, address, chaos = cluster
    engine = RayEngine(address=address, state_dir="unused")
    pids = list(engine.map(worker_pid, range(3), ["a", "chaos-b", "c"]))
    assert (Path(chaos) / "killed").exists()  # the worker of chaos-b died once after its work ...
    assert len(pids) == 3  # ... and Ray re-ran the task: every result is there


def test_stop_leaves_none_of_its_processes_and_forgets_the_cluster(tmp_path):
    local = LocalCluster(tmp_path / "ray")
    address, started = local.start(num_cpus=1)
    assert started and local.address() == address
    pids = local.stop()
    assert pids and not any(Path(f"/proc/{p}").exists() for p in pids)
    assert local.address() is None
