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
    (chaos / "kill-once").write_text("chaos-b")
    pids = list(engine.map(worker_pid, range(3), ["a", "chaos-b", "c"]))
    assert (chaos / "killed").read_text() == "chaos-b"  # the worker of chaos-b died once after its work ...
    assert len(pids) == 3  # ... and Ray re-ran the task: every result is there


def test_stop_leaves_none_of_its_processes_and_forgets_the_cluster(tmp_path):
    local = LocalCluster(tmp_path / "ray")
    address, started = local.start(num_cpus=1)
    assert started and local.address() == address
    pids = local.stop()
    assert pids and not any(Path(f"/proc/{p}").exists() for p in pids)
    assert local.address() is None


# --- steps through the engine ----------------------------------------------------------------------------------------
SAMPLE = Path(__file__).resolve().parents[2] / "curation_assets" / "sample"
RUN_BOOKS = """
import dagster as dg
from curation_assets.config.settings import Settings
from curation_assets.defs import build_definitions, config_for
from curation_assets.steps.common import source_partitions
settings = Settings.from_env()
defs = build_definitions(config_for(settings), settings)
with dg.DagsterInstance.get() as instance:
    instance.add_dynamic_partitions(source_partitions.name, ["books"])
    for job in ("ingest_source", "curate_source"):
        assert defs.resolve_job_def(job).execute_in_process(partition_key="books", instance=instance).success, job
"""


def run_books(tmp: Path, name: str, ray: dict[str, str]) -> Path:
    """ingest_source + curate_source of the bundled books (no quality model: no background source) in a process of
    its own, through the Ray cluster `ray` names; returns the data root."""
    home, root = tmp / f"home-{name}", tmp / f"root-{name}"
    home.mkdir()
    (tmp / "sources.yaml").write_text(f"sources:\n  - name: books\n    uris: ['{SAMPLE}/books/*']\n    licence: x\n")
    (tmp / "recipe.yaml").write_text("recipe:\n  name: books\n  weights: {books: 1}\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CURATION_RAY")},
        "DAGSTER_HOME": str(home),
        "CURATION_DATA_ROOT": str(root),
        "CURATION_SOURCES": str(tmp / "sources.yaml"),
        "CURATION_RECIPE": str(tmp / "recipe.yaml"),
        **ray,
    }
    subprocess.run([sys.executable, "-c", RUN_BOOKS], env=env, check=True, capture_output=True)
    return root


def outputs(root: Path, asset: str) -> dict[str, bytes]:
    import json

    manifest = json.loads((root / asset / "books" / "_latest.json").read_text())
    files = [*manifest["parts"], *manifest["dropped"], *manifest.get("side", {}).values()]
    return {Path(f).name: Path(f).read_bytes() for f in files}


@pytest.fixture(scope="module")
def books_runs(cluster, tmp_path_factory):
    """The same two jobs through the embedded cluster (found by its state directory), through CURATION_RAY_ADDRESS
    (the `ray start --head` on loopback), and through the address with a filtered task's worker SIGKILLed."""
    local, address, chaos = cluster
    tmp = tmp_path_factory.mktemp("books")
    embedded = run_books(tmp, "embedded", {"CURATION_RAY_DIR": str(local.state_dir)})
    external = run_books(tmp, "external", {"CURATION_RAY_ADDRESS": address})
    (chaos / "kill-once").write_text("books rows")  # filtered's task labels are `<source> rows <first>-<last>`
    killed = run_books(tmp, "killed", {"CURATION_RAY_ADDRESS": address})
    return embedded, external, killed, chaos


def test_a_step_through_an_external_ray_head_writes_what_the_embedded_cluster_writes(books_runs):
    embedded, external, _, _ = books_runs
    for asset in ("raw", "filtered"):
        theirs, ours = outputs(embedded, asset), outputs(external, asset)
        assert theirs and theirs == ours, asset


def test_a_worker_killed_in_the_middle_of_a_filtered_task_is_retried_and_the_output_is_unchanged(books_runs):
    embedded, _, killed, chaos = books_runs
    assert (chaos / "killed").read_text() == "books rows"  # a filtered task's worker was SIGKILLed
    assert outputs(killed, "filtered") == outputs(embedded, "filtered")
