"""The Ray engine (resources/engine.py) on real Ray clusters on loopback, in one background job on a head of its own
(`engine_runs`): the cluster's life cycle; results in item order whatever the completion order, a task that fails
for good naming its item, a task whose worker is SIGKILLed re-run by Ray; steps through the external head, one of
them with a worker killed mid-task, writing what the session's embedded cluster writes. And `workers=0`: no Ray."""

import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from curation_assets.config import DEFAULT_THRESHOLDS
from resources.engine import CHAOS_DIR, RUNNER, Progress, RayEngine, TaskRunner, TaskStats, code_version
from resources.local_ray import RAY_ENV, LocalCluster, _gone
from resources.ray_zones import RAY_ZONE_LABEL
from tests.background import background
from tests.helpers import ensure_ray, latest, open_instance, ray_dir

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


def fail_while_another_writes(item: tuple[int, str]) -> tuple[int, int]:
    """Item 0 fails; item 1 (in flight on the other runner) writes `late` in `folder` after item 0 has failed."""
    k, folder = item
    if k == 0:
        Path(folder, "failed").touch()
        raise ValueError("a broken shard")
    while not Path(folder, "failed").exists():
        time.sleep(0.01)
    time.sleep(0.5)  # well after the failure reached the driver: without the wait, the step would be gone by now
    Path(folder, "late").touch()
    return k, 1


def worker_pid(item: int) -> tuple[int, int]:
    return os.getpid(), 1


def end_start(item: tuple[int, str]) -> tuple[int, int]:
    """The task at index 1 ends the cluster start that `STARTING`'s holder simulates (removes its mark)."""
    index, state = item
    if index == 1:
        (Path(state) / "starting").unlink()
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


def armed(name: str, label: str) -> Path:
    """Arm a kill-once drill (resources/engine.py `_chaos`) in the session's chaos directory; the file a task renames
    it to when it fires."""
    chaos = Path(os.environ[CHAOS_DIR])
    (chaos / f"kill-once-{name}").write_text(label)
    return chaos / f"killed-{name}"


def burn(item: int) -> tuple[int, int]:
    """About `item` x 10^5 additions of CPU work."""
    return sum(range(item * 100_000)), 1


def test_workers_zero_runs_the_tasks_in_this_process_without_ray():
    engine = RayEngine(workers=0, state_dir="unused")
    assert list(engine.map(worker_pid, range(3), ["a", "b", "c"])) == [os.getpid()] * 3
    progress, lines = Progress(total=2), []
    assert len(list(engine.map(burn, [20, 20], ["x", "y"], lines.append, progress))) == 2
    md = progress.metadata()
    assert md["tasks"] == 2 and md["task_cpu_s"] > 0 and 0 < md["task_cpu_share"]
    assert re.fullmatch(r"y: 2/2 tasks done, 1 docs in [\d.]+ s \(CPU [\d.]+ s\), peak RSS \d+ MB", lines[-1])


def test_progress_rolls_up_the_tasks_cpu_and_its_share_of_their_wall_time():
    """A share below 1: the tasks waited for a core (or for I/O), e.g. more busy processes than CPUs on the node."""
    tasks = [TaskStats("a", 2.0, 10, 2**20, 1.5), TaskStats("b", 1.0, 5, 2**21, 0.75)]
    md = Progress(total=2, tasks=tasks).metadata()
    assert (md["task_cpu_s"], md["task_cpu_share"], md["task_max_seconds"]) == (2.25, 0.75, 2.0)
    assert (md["task_max_peak_rss_mb"], md["tasks"]) == (2.0, 2)
    assert Progress(total=0).metadata()["task_cpu_share"] == 0.0


# --- a cluster of its own, and steps through it ------------------------------------------------------------------
SAMPLE = Path(__file__).resolve().parents[2] / "curation_assets" / "sample"
SOURCE = "novels"  # the bundled books under a name no other run of the session uses (task labels name the source)
RUN_BOOKS = f"""
import os, sys
import dagster as dg
from curation_assets.config.settings import Settings
from curation_assets.defs import build_definitions, config_for
from curation_assets.steps.common import TRACE_TAG, source_partitions
settings = Settings.from_env()
defs = build_definitions(config_for(settings), settings)
tags = {{TRACE_TAG: "1"}} if sys.argv[1:] == ["traced"] else None
with dg.DagsterInstance.get() as instance:
    instance.add_dynamic_partitions(source_partitions.name, ["{SOURCE}"])
    for job in ("ingest_source", "annotate_source", "curate_source"):
        result = defs.resolve_job_def(job).execute_in_process(partition_key="{SOURCE}", instance=instance, tags=tags)
        assert result.success, job
"""


def run_books(tmp: Path, name: str, ray: dict[str, str], traced: bool = False) -> Path:
    """ingest_source, annotate_source and curate_source of the bundled books (no quality model: no background
    source) in a process of its own, through the Ray cluster `ray` names (`traced`: with the run tag
    curation/trace); returns the data root (its Dagster home is `home-<name>` beside it)."""
    home, root = tmp / f"home-{name}", tmp / f"root-{name}"
    home.mkdir()
    (tmp / "sources.yaml").write_text(f"sources:\n  - name: {SOURCE}\n    uris: ['{SAMPLE}/books/*']\n    licence: x\n")
    (tmp / "recipe.yaml").write_text(f"recipe:\n  name: books\n  weights: {{{SOURCE}: 1}}\n")
    # the bundled thresholds, with books' per-source settings under the source's name
    (tmp / "thresholds.yaml").write_text(re.sub(r"\bbooks\b", SOURCE, DEFAULT_THRESHOLDS.read_text()))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CURATION_RAY", "CURATION_WORKERS"))},
        "DAGSTER_HOME": str(home),
        "CURATION_DATA_ROOT": str(root),
        "CURATION_SOURCES": str(tmp / "sources.yaml"),
        "CURATION_RECIPE": str(tmp / "recipe.yaml"),
        "CURATION_THRESHOLDS": str(tmp / "thresholds.yaml"),
        **ray,
    }
    cmd = [sys.executable, "-c", RUN_BOOKS, *(["traced"] if traced else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def outputs(root: Path, asset: str) -> dict[str, bytes]:
    import json

    manifest = json.loads((root / asset / SOURCE / "_latest.json").read_text())
    files = [*manifest["parts"], *manifest["dropped"], *manifest.get("side", {}).values()]  # relative to the root
    return {Path(f).relative_to(Path(f).parents[1]).as_posix(): (root / f).read_bytes() for f in files}


REPO = Path(__file__).resolve().parents[2]
UNIT = """
import json, sys, tempfile
from resources.cost_guard import CrossZoneTransferError
from resources.engine import RUNNER, RayEngine
from tests.resources import test_engine as t
engine = RayEngine(address=sys.argv[1], state_dir="unused")
labels = [f"shard-{i}" for i in range(5)]
out = {"ordered": list(engine.map(t.slow_inverse, range(5), labels))}
try:
    out["failed"] = list(engine.map(t.fail_on_three, range(5), labels))
except RuntimeError as e:
    out["failed"] = str(e)
# a failed step returns once its tasks still in flight have ended: none writes after the step cleaned up
import os, tempfile
folder = tempfile.mkdtemp()
try:
    list(engine.map(t.fail_while_another_writes, [(0, folder), (1, folder)], ["fails", "writes late"]))
except RuntimeError as e:
    out["late"] = [str(e), os.path.exists(f"{folder}/late")]
killed = t.armed("unit", "chaos-b")
out["pids"] = list(engine.map(t.worker_pid, range(3), ["a", "chaos-b", "c"]))
out["killed"] = killed.read_text()
# idle runners exit (an autoscaling cluster can then scale down), and the next step starts the pool again
import ray, time
named = lambda: sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(RUNNER))
out["runners"] = named()
for runner in engine._runners():
    runner.linger.options(max_task_retries=0).remote(1)
deadline = time.monotonic() + 60
while named() and time.monotonic() < deadline:
    time.sleep(0.5)
out["after_idle"] = named()
out["again"] = sorted(set(engine.map(t.worker_pid, range(4), ["a", "b", "c", "d"])))
# drivers running at once start at different runners: the runner of a one-task step, per driver slot
import os
from resources.engine import DRIVER_SLOT
out["first_runner"] = {}
for slot in ("0", "1", "2"):
    os.environ[DRIVER_SLOT] = slot
    out["first_runner"][slot] = next(iter(engine.map(t.worker_pid, [0], ["one"])))
# the cost guard's zone rule for Ray workers: the node is in use1-az4
out["zones"] = {}
for zone, override in (("use1-az4", None), ("use1-az6", None), ("use1-az6", "migration")):
    try:
        RayEngine(address=sys.argv[1], state_dir="unused", data_zone=zone).connect(override)
        out["zones"][f"{zone} {override}"] = "ok"
    except CrossZoneTransferError as e:
        out["zones"][f"{zone} {override}"] = str(e)
# a local data root: every node of this cluster is this machine, where the tasks write; probed as if it were another
# machine's, the node sees the file the driver wrote there
local = RayEngine(address=sys.argv[1], state_dir="unused", data_root=tempfile.mkdtemp())
local.connect()
out["local_root"] = {"connect": "ok", "unseen": local._unseen(ray.nodes()), "left": os.listdir(local.data_root)}
print("UNIT " + json.dumps(out))
"""

# A step of the embedded cluster while another process starts it (holds the start's lock, its mark there): its tasks
# run in its own process until the start ends (the second task ends it), then on the cluster's runners
STARTING = """
import json, subprocess, sys
from resources.engine import Progress, RayEngine
from tests.resources import test_engine as t
state = sys.argv[1]
hold = (
    "import fcntl, pathlib, sys, time; s = pathlib.Path(sys.argv[1]); f = open(s / 'cluster.lock', 'a+'); "
    "fcntl.flock(f, fcntl.LOCK_EX); (s / 'starting').touch(); print('held', flush=True)\\n"
    "while (s / 'starting').exists(): time.sleep(0.01)"
)
holder = subprocess.Popen([sys.executable, "-c", hold, state], stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline() == "held\\n"
progress = Progress(total=4)
pids = list(RayEngine(state_dir=state).map(t.end_start, [(i, state) for i in range(4)], "abcd", progress=progress))
holder.wait()
print("STARTING " + json.dumps({"driver": __import__("os").getpid(), "pids": pids, "metadata": progress.metadata()}))
"""


@background.job("engine_runs", cost=65)
def _engine_runs(tmp: Path) -> types.SimpleNamespace:
    """A Ray head of its own (`ray start --head` on loopback, as an operator's cluster): checked for loopback-only
    listeners and reuse; plain tasks through it from a driver process of their own; the same two jobs through the
    session's embedded cluster (found by its state directory) and through CURATION_RAY_ADDRESS with a filtered task's
    worker SIGKILLed (and workers of tasks that write parts); then the head is stopped."""
    ensure_ray()  # the session's cluster, for the embedded run
    local = LocalCluster(tmp / "ray")
    address, started = local.start(num_cpus=2, labels={RAY_ZONE_LABEL: "use1-az4"})  # as a zone-pinned worker group
    out = types.SimpleNamespace(address=address, started=started, again=local.start(num_cpus=2), local=local)
    out.pids = set(local.pids())
    out.listening = {a for pid, a in listening_pids_and_addresses() if pid in out.pids}
    try:
        # a driver of its own (so this process never becomes one): the engine's contract on plain tasks
        done = subprocess.run(
            [sys.executable, "-c", UNIT, address], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        (unit,) = [line for line in done.stdout.decode().splitlines() if line.startswith("UNIT ")]
        out.unit = json.loads(unit.removeprefix("UNIT "))
        done = subprocess.run(
            [sys.executable, "-c", STARTING, str(tmp / "ray")],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        (starting,) = [line for line in done.stdout.decode().splitlines() if line.startswith("STARTING ")]
        out.starting = json.loads(starting.removeprefix("STARTING "))
        # traced: its tasks on Ray record traces of their own, and it writes what the untraced external run writes
        out.embedded = run_books(tmp, "embedded", {"CURATION_RAY_DIR": str(ray_dir())}, traced=True)
        # filtered's task labels are `<source> annotated part <n>` (pass 1: scores and ledger rows, nothing written)
        out.killed = armed("novels", f"{SOURCE} annotated part")
        # tasks that write their part into the staging version before they are killed: a pass-2 task of filtered
        # (`<source> annotated part <n> (pass 2)`), annotated's task (`<source> rows <first>-<last>`) and raw's task
        # of the second shard (`<source> <shard>`); only this source's (a drill is armed for the whole session:
        # another test's task must not fire it)
        out.killed_pass_2 = armed("novels-pass-2", f"{SOURCE} annotated part * (pass 2)")
        out.killed_annotated = armed("novels-annotated", f"{SOURCE} rows")
        out.killed_raw = armed("novels-raw", f"{SOURCE} part-00001")
        out.external = run_books(tmp, "external", {"CURATION_RAY_ADDRESS": address})
    finally:
        out.stopped = local.stop()
    return out


@pytest.fixture(scope="module")
def engine_runs():
    return background.result("engine_runs")


def test_results_come_back_in_item_order_and_a_failed_task_names_its_item(engine_runs):
    assert engine_runs.unit["ordered"] == [0, 1, 4, 9, 16]  # later items finished first
    assert engine_runs.unit["failed"] == "task shard-3 failed: ValueError: a broken shard"
    # the task in flight beside the failed one had written its file when the failure reached the step
    assert engine_runs.unit["late"] == ["task fails failed: ValueError: a broken shard", True]


def test_a_runner_whose_code_is_not_its_drivers_refuses_to_start():
    """Ray puts the driver's working directory first on a worker's sys.path: a runner that imported another copy of
    the code than its driver's (the version in its pool's name) fails at its creation, naming the cause."""
    TaskRunner(code_version())
    with pytest.raises(RuntimeError, match="working directory .* holds another copy"):
        TaskRunner("0123456789ab")


def test_the_runner_pool_is_shared_exits_when_idle_and_comes_back(engine_runs):
    unit = engine_runs.unit
    assert len(unit["runners"]) == 2 and all(re.fullmatch(rf"{RUNNER}-[0-9a-f]{{12}}-[01]", n) for n in unit["runners"])
    assert unit["after_idle"] == []  # exited on purpose: not restarted
    assert len(unit["again"]) == 2 and not set(unit["again"]) & set(unit["pids"])  # new runner processes


def test_a_step_runs_its_tasks_in_its_own_process_while_another_starts_the_cluster_then_on_ray(engine_runs):
    """`curation run` starts the embedded cluster beside its own start-up: a step that finds the start under way does
    not wait on its lock, it runs its tasks through `run_task` in its own process until the cluster is up."""
    out = engine_runs.starting
    driver, pids = out["driver"], out["pids"]
    assert pids[:2] == [driver, driver]  # the start ended during the second task
    assert driver not in pids[2:] and set(pids[2:]) <= set(engine_runs.unit["again"])  # the pool's runners
    assert out["metadata"]["task_engine"] == "ray" and out["metadata"]["tasks_in_process"] == 2
    assert out["metadata"]["tasks"] == 4


def test_drivers_running_at_once_start_their_tasks_at_different_runners(engine_runs):
    """Two steps of one task each (two job workers of `curation run`) do not queue on one runner while the other
    idles: each driver slot starts at its own runner, round the pool."""
    first = engine_runs.unit["first_runner"]
    assert first["0"] != first["1"] and first["2"] == first["0"]  # a pool of 2 runners
    assert {first["0"], first["1"]} == set(engine_runs.unit["again"])


def test_a_task_whose_worker_is_killed_is_rerun_by_ray(engine_runs):
    assert engine_runs.unit["killed"] == "chaos-b"  # the worker of chaos-b died once after its work ...
    assert len(engine_runs.unit["pids"]) == 3  # ... and Ray re-ran the task: every result is there


def test_a_data_root_in_another_zone_than_the_ray_workers_is_refused_unless_overridden(engine_runs):
    zones = engine_runs.unit["zones"]
    assert zones["use1-az4 None"] == "ok" and zones["use1-az6 migration"] == "ok"
    assert "use1-az4" in zones["use1-az6 None"] and "curation/allow-transfer" in zones["use1-az6 None"]


def test_a_local_data_root_is_accepted_when_every_node_sees_it(engine_runs):
    """A node on another machine must see the local data root (a shared mount): probed with a file the driver wrote
    there (the refusal's wording: test_raycluster.py, local_root_problems)."""
    assert engine_runs.unit["local_root"] == {"connect": "ok", "unseen": [], "left": []}


def test_the_local_cluster_listens_on_loopback_only_is_reused_and_stops_by_its_own_pids(engine_runs):
    assert engine_runs.address.startswith("127.0.0.1:") and engine_runs.started
    assert engine_runs.again == (engine_runs.address, False)  # a second step of the instance reuses it
    assert engine_runs.pids and engine_runs.listening
    assert engine_runs.listening <= {"127.0.0.1", "[::ffff:127.0.0.1]"}  # IPv4 loopback, also as mapped IPv6
    # stopped by its own PIDs: none of them is left, and the state is forgotten
    assert set(engine_runs.stopped) >= engine_runs.pids
    assert all(_gone(p) for p in engine_runs.stopped)  # exited (a zombie left to its reaper, init, has)
    assert engine_runs.local.address() is None


def test_a_step_through_an_external_ray_head_writes_what_the_embedded_cluster_writes(engine_runs):
    for asset in ("raw", "filtered"):
        theirs, ours = outputs(engine_runs.embedded, asset), outputs(engine_runs.external, asset)
        assert theirs and theirs == ours, asset


def test_a_worker_killed_in_the_middle_of_a_filtered_task_is_retried_and_the_output_is_unchanged(engine_runs):
    assert engine_runs.killed.read_text() == f"{SOURCE} annotated part"  # a filtered task's worker was SIGKILLed ...
    # ... and the workers of a filtered pass-2 task, of an annotated task and of a raw task, after each wrote its
    # part: Ray re-ran them
    assert engine_runs.killed_pass_2.read_text() == f"{SOURCE} annotated part * (pass 2)"
    assert engine_runs.killed_annotated.read_text() == f"{SOURCE} rows"
    assert engine_runs.killed_raw.read_text() == f"{SOURCE} part-00001"
    for asset in ("raw", "annotated", "filtered"):  # ... and no trace of any is left
        assert outputs(engine_runs.external, asset) == outputs(engine_runs.embedded, asset), asset


def test_a_traced_step_on_ray_links_a_trace_of_each_of_its_tasks(engine_runs):
    """The run tag curation/trace: the step's own trace and, in a folder the materialization links, each task's trace
    from the Ray worker that ran it, showing the core's work there (its output: the test above)."""
    with open_instance(engine_runs.embedded.parent / "home-embedded") as instance:
        for asset, work in (("raw", "read_shard"), ("annotated", "annotate_batch"), ("filtered", "apply_decisions")):
            md = latest(instance, asset, SOURCE)
            manifest = json.loads((engine_runs.embedded / asset / SOURCE / "_latest.json").read_text())
            traces = [engine_runs.embedded / t for t in manifest["task_traces"]]
            assert md["trace"] == str(engine_runs.embedded / manifest["trace"])
            assert md["task_traces"] == str(Path(md["uri"], "tasks")) == str(traces[0].parent)
            details = md["details"]
            assert details["tasks"] - details["tasks_in_process"] == len(traces) >= 1, asset  # one per task on Ray
            names = set()
            for n, path in enumerate(traces):
                assert path.name.startswith(f"{n:05d}-{SOURCE}-"), path.name  # its place and its label
                events = json.loads(path.read_text())["traceEvents"]
                names |= {e["name"].split(" (")[0] for e in events if e.get("ph") == "X"}
            assert work in names, (asset, sorted(names)[:20])


ORPHAN = """
import os, resource, subprocess, sys
from pathlib import Path
from resources.local_ray import _gone, adopt_orphans
adopt_orphans()
# a daemon as `ray start` leaves one: started by a process that exits at once; it burns 0.5 s of CPU and exits
burn = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass\\n"
starter = f"import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {burn!r}]).pid)"
pid = int(subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True).stdout)
parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
while not _gone(pid):
    pass
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(parent == os.getpid(), usage.ru_utime + usage.ru_stime)
"""


def test_the_command_that_starts_a_cluster_adopts_its_daemons_and_counts_their_cpu():
    """`curation run` calls `adopt_orphans` before it starts the embedded cluster: the daemons `ray start` leaves
    behind become its children (not init's) and `stop` reaps them, so their CPU time is in the command's own
    (what `/usr/bin/time curation run` reports)."""
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    adopted, children_cpu = done.stdout.split()
    assert adopted == "True" and float(children_cpu) >= 0.45, done.stdout
