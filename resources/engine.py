"""The data-parallel engine of the heavy steps: Ray. A step (the Dagster step process, or a step pod in the cluster) is
the Ray driver; each task runs a pure core on one shard and returns its result (or what it wrote: a part of the
step's staging version, `resources.versions.PartSink`); the step consumes the results in shard order (never
completion order), so the output is the same whatever the number of workers.

- Locally: one embedded Ray cluster per Dagster instance (`resources/local_ray.py`), started on demand on loopback
  (`ray start --head`) with `workers` CPUs (default: the machine's cores), recorded in
  `<DAGSTER_HOME>/ray/cluster.json`, reused by every step and run, and stopped by the PIDs of its own processes
  (`curation ray-stop`; `curation run` stops the one it started).
- In the cluster: `address` (`CURATION_RAY_ADDRESS`) points at the KubeRay RayCluster of `deploy/`.

Ray binds and connects on 127.0.0.1 only here (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` for every Ray process and
driver; ../shared/notes/ray.md): by default it rewrites loopback to the machine's own address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import gc
import hashlib
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from resources.cost_guard import OVERRIDE_TAG, CrossZoneTransferError
from resources.local_ray import RAY_ENV, LocalCluster, _libc
from resources.ray_zones import foreign_nodes, local_root_problems, ray_node_zones, worker_zone_problems
from resources.store import kind_of

# Tasks whose worker died (SIGKILL, OOM, a node lost) are re-run by Ray; an exception raised by the core is not.
MAX_RETRIES = 3
NAMESPACE = "curation"
# A runner idle this long exits (the next step starts the pool again), so that an autoscaling cluster can scale its
# workers down: a live actor keeps its node busy.
RUNNER_IDLE_S = 600.0
RUNNER = "curation-runner"  # the runner pool's actor names: `<RUNNER>-<code version>-<index>`
_SEES_ROOT: set[tuple[str, str]] = set()  # (node ID, local data root) that a probe found the root on
DRIVER_SLOT = "CURATION_DRIVER_SLOT"  # which of the drivers running at once this process is (unset: its PID)


@dataclass
class TaskStats:
    """What each task reported: its label, seconds, documents, the peak RSS of the task (not of the worker) and the
    CPU seconds of its worker process while it ran."""

    label: str
    seconds: float
    docs: int
    peak_rss_bytes: int
    cpu_seconds: float = 0.0
    trace: bytes | None = None  # the task's own Viztracer trace (Chrome trace-event JSON) in a traced run


@dataclass
class StepTrace:
    """A traced step (run tag `curation/trace`): the Viztracer of the step's own process and, in item order, the
    stats of its tasks that ran on Ray, each carrying the task's own trace (`RayEngine.map(traces=...)`). The IO
    manager stores them beside the output: `trace.json` and `tasks/<n>-<label>.json`."""

    tracer: object
    tasks: list[TaskStats] = field(default_factory=list)


@functools.cache
def _peak_rss_reset() -> None:
    # A runner lives for many tasks: what an earlier task freed goes back to the system first (glibc keeps freed
    # arenas otherwise), so that a task's peak is its own memory plus the worker's baseline, not its predecessors'.
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the peak below is this task's, not the worker's.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# Fault injection for the reliability tests (and chaos drills on a real cluster): with CURATION_CHAOS_DIR set in the
# workers' environment, a file `<dir>/kill-once<suffix>` holding a label pattern arms it (a substring, `*` matching
# anything: `books rows * (pass 2)`): the first task whose label contains it SIGKILLs its own worker after its work
# and before its result is returned (renaming the file to `killed<suffix>` first, so exactly one task fires per armed
# file; several drills may be armed at once).
CHAOS_DIR = "CURATION_CHAOS_DIR"


def _chaos(label: str) -> None:
    where = os.environ.get(CHAOS_DIR)
    if not where:
        return
    for armed in sorted(Path(where).glob("kill-once*")):
        try:
            match = armed.read_text()
        except FileNotFoundError:  # another task fired first
            continue
        if not match or not fnmatch.fnmatchcase(label, f"*{match}*"):
            continue
        try:
            armed.rename(armed.with_name("killed" + armed.name.removeprefix("kill-once")))
        except FileNotFoundError:  # another task fired first
            continue
        os.kill(os.getpid(), signal.SIGKILL)


# Calls shorter than this are left out of traces (a step's and its tasks'): per-record helpers would otherwise make a
# trace of a few MB of input weigh 100 MB, and a step's time is in its batch-level calls.
MIN_TRACED_US = 50


def run_task(fn: Callable, item: object, label: str, traced: bool = False) -> tuple[object, TaskStats]:
    """Run `fn(item)` in a Ray worker and measure it (`traced`: under a Viztracer of its own, whose trace the stats
    carry). `fn` returns (result, documents processed)."""
    _peak_rss_reset()
    tracer = None
    if traced:
        from viztracer import VizTracer

        # not registered as the process's global tracer: the runner keeps no tracer (nor its buffer) past the task
        tracer = VizTracer(verbose=0, min_duration=MIN_TRACED_US, register_global=False)
        tracer.start()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result, docs = fn(item)
    finally:
        if tracer is not None:
            tracer.stop()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    trace = trace_json(tracer) if tracer is not None else None
    _chaos(label)
    return result, TaskStats(label, seconds, int(docs), _peak_rss(), cpu, trace)


def trace_json(tracer) -> bytes:
    """A stopped Viztracer's Chrome trace-event JSON (what Perfetto and chrome://tracing open): a task's, a step's."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="trace-") as tmp:
        tracer.save(output_file=f"{tmp}/trace.json", verbose=0)
        return Path(tmp, "trace.json").read_bytes()


class TaskRunner:
    """One long-lived worker process of the cluster's runner pool (a detached Ray actor, one CPU). Every step of every
    run - each a Ray job of its own - sends its tasks to the same runners, so imports, fastText models and tiktoken
    encodings load once per runner, not once per step: Ray never lends a plain task's worker process to another job,
    and starting one costs a few CPU seconds, more than many of a small step's tasks. A runner killed mid-task is
    restarted by Ray and the call re-run (max_task_retries)."""

    def __init__(self, version: str | None = None) -> None:
        # Ray puts the driver's working directory first on its workers' sys.path: a copy of this code there (another
        # checkout) would run in the runners while the driver runs its own; refused, naming both, instead.
        if version is not None and code_version() != version:
            raise RuntimeError(
                f"this runner imported code version {code_version()} from {Path(__file__).resolve().parents[1]}, "
                f"its driver runs {version}: Ray puts the driver's working directory ({os.getcwd()}) on its workers' "
                "sys.path, and it holds another copy of curation_assets/resources; run from another directory"
            )
        self.last_used = time.monotonic()
        self.idle_s = RUNNER_IDLE_S
        self.lingering = False

    async def run(self, fn: Callable, item: object, label: str, traced: bool = False) -> tuple[object, TaskStats]:
        # synchronous work inside an async method: it holds the event loop, so a runner runs one task at a time
        result = run_task(fn, item, label, traced)
        self.last_used = time.monotonic()
        return result

    async def linger(self, idle_s: float) -> None:
        """Exit once no task has come for `idle_s` seconds (the shortest any driver asked for); one watch per
        runner. An exit on purpose is not restarted."""
        import asyncio

        import ray

        self.idle_s = min(self.idle_s, idle_s)
        if self.lingering:
            return
        self.lingering = True
        while time.monotonic() - self.last_used < self.idle_s:
            await asyncio.sleep(min(5.0, self.idle_s / 4))
        ray.actor.exit_actor()


@functools.cache
def code_version() -> str:
    """A digest of the Python sources of `curation_assets` and `resources`: a runner pool serves one version of the
    code, so an edited module never runs in a runner that imported the old one."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in ("curation_assets", "resources"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class Progress:
    """The roll-up of a step's tasks, for its log and metadata."""

    total: int
    tasks: list[TaskStats] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    engine: str = "in_process"  # where the tasks ran: "ray" (a cluster's workers) or "in_process" (the step's own)
    in_process: int = 0  # tasks run in the step's own process (all with "in_process"; with "ray", while it started)

    def metadata(self) -> dict[str, object]:
        wall = time.perf_counter() - self.started
        docs = sum(t.docs for t in self.tasks)
        cpu, busy = sum(t.cpu_seconds for t in self.tasks), sum(t.seconds for t in self.tasks)
        return {
            "task_engine": self.engine,
            "tasks": len(self.tasks),
            "tasks_in_process": self.in_process,
            "task_docs_per_s": round(docs / wall, 1) if wall > 0 else 0.0,
            "task_max_peak_rss_mb": round(max((t.peak_rss_bytes for t in self.tasks), default=0) / 2**20, 1),
            "task_max_seconds": round(max((t.seconds for t in self.tasks), default=0.0), 3),
            # the tasks' CPU time, and its share of their wall time: below 1, tasks waited for a core (more processes
            # than CPUs on the node: another step's driver, another job's tasks) or for I/O
            "task_cpu_s": round(cpu, 3),
            "task_cpu_share": round(cpu / busy, 3) if busy > 0 else 0.0,
        }


class RayEngine(dg.ConfigurableResource):
    """Runs a step's per-shard tasks on Ray: `map(fn, items)` yields `fn(item)`'s results in item order.

    `address`: an existing cluster (`CURATION_RAY_ADDRESS`, e.g. the KubeRay head `ray-head:6379`); None = the
    embedded cluster of this instance under `state_dir`, with `workers` CPUs (`CURATION_WORKERS`; None = every core;
    0 = no Ray: tasks run in the calling process, in order, through the same `run_task`).

    The tasks run on the cluster's runner pool (`TaskRunner`): `workers` runners (None: one per CPU the cluster has
    now; in an autoscaling cluster set `workers` to its maximum, so that pending runners scale it up), named after
    the code version and shared by every step and run of that code. Runners of another code version are stopped
    when a step of this one starts.
    """

    address: str | None = None
    workers: int | None = None
    state_dir: str
    # the AZ of the data root when it is zonal: every worker must be in it (the cost guard's zone rule)
    data_zone: str | None = None
    # the data root: a local directory must be seen by every node that runs tasks (they write there), probed at connect
    data_root: str | None = None

    def connect(self, override: str | None = None) -> None:
        """Join the cluster (once per process), starting the embedded one if it is not up. With a local directory as
        the data root, a cluster with a node on another machine that does not see it is refused (RuntimeError, no
        override: its tasks' parts would be lost); a cluster whose workers are not all in the data root's zone is
        refused (CrossZoneTransferError) unless `override` (the run's transfer-override reason) is given."""
        if self.address is None or self.address.startswith(("127.0.0.1:", "localhost:")):
            # the driver's side of the loopback rule: read by Ray when it is imported, so set before the import
            os.environ.update(RAY_ENV)
        import ray

        if not ray.is_initialized():
            address = self.address or LocalCluster(Path(self.state_dir)).start(self.workers or os.cpu_count() or 1)[0]
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        nodes = ray.nodes()
        if self.data_root is not None and kind_of(self.data_root) == "local":
            strays = local_root_problems(self._unseen(foreign_nodes(nodes, socket.gethostname())), self.data_root)
            if strays:
                raise RuntimeError("; ".join(strays))
        problems = worker_zone_problems(ray_node_zones(nodes), self.data_zone)
        if problems and not override:
            raise CrossZoneTransferError("; ".join(problems) + f" (override with the run tag {OVERRIDE_TAG})")

    def _unseen(self, nodes: list) -> list:
        """Of `nodes` (on other machines), those on which a file this process has just written under the local data
        root is not there: one probe task pinned to each node, once per process and node."""
        import uuid

        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in nodes if (n["NodeID"], self.data_root) not in _SEES_ROOT]
        if not nodes:
            return []
        marker = Path(self.data_root, f".ray-probe-{uuid.uuid4().hex}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        try:
            probe = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
            refs = [
                probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(marker)
                )
                for n in nodes
            ]
            seen = ray.get(refs)
        finally:
            marker.unlink(missing_ok=True)
        _SEES_ROOT.update((n["NodeID"], self.data_root) for n, ok in zip(nodes, seen, strict=True) if ok)
        return [n for n, ok in zip(nodes, seen, strict=True) if not ok]

    def map(
        self,
        fn: Callable[[object], tuple[object, int]],
        items: Iterable[object],
        labels: Iterable[str],
        log: Callable[[str], None] | None = None,
        progress: Progress | None = None,
        override: str | None = None,
        traces: list[TaskStats] | None = None,
    ) -> Iterator[object]:
        """`fn(item)` for every item as Ray tasks (one CPU each), results yielded in item order; at most twice the
        cluster's CPUs in flight, so the driver holds a bounded number of results. `fn` must be importable (a module
        function) and return (result, documents). A task that fails for good raises, naming its item's label.
        With `traces` (a traced step), each task on Ray runs under a Viztracer of its own and its stats, trace
        included, are appended there in item order; a task run in this process is in the step's own trace."""
        pairs = zip(items, labels)  # noqa: B905 - labels may be an endless generator
        if self.workers == 0:  # in this process, in order
            for item, label in pairs:
                yield self._run_here(fn, item, label, log, progress)
            return
        if self._cluster_starting():
            # Another process is starting the embedded cluster (`curation run` starts it beside its own start-up; `ray
            # start` takes 3-8 s here): rather than wait on the start's lock, the step runs its tasks in its own
            # process, through the same `run_task`, until the cluster is up, and sends the rest to Ray. Results are
            # yielded in item order either way, so the output does not depend on where each task ran.
            for item, label in pairs:
                yield self._run_here(fn, item, label, log, progress)
                if not self._cluster_starting():
                    break
            else:
                return
        self.connect(override)  # first: it sets the loopback environment Ray reads when it is imported
        import ray

        if progress is not None:
            progress.engine = "ray"
        free = self._runners()  # runners with no task of this step in flight, the first to take a task last
        # Drivers running at once (one per job worker of `curation run`) share the runners but do not see each
        # other's tasks: each starts at a runner of its own (its slot), so that two steps of one task each do not
        # queue on the same runner while another idles.
        slot = os.environ.get(DRIVER_SLOT, "")
        turn = int(slot if slot.isdigit() else os.getpid()) % len(free)
        free = (free[turn:] + free[:turn])[::-1]
        running: dict = {}  # ref -> its runner
        queue: deque = deque()  # (label, ref) in item order, not yet yielded
        window = 2 * len(free)  # results the driver may hold

        def settle(block: bool) -> None:
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1 if block else len(running), timeout=None if block else 0)
            free.extend(running.pop(ref) for ref in ready)

        try:
            for item, label in pairs:
                while not free:  # each task goes to an idle runner: a slow shard never holds the others back
                    settle(block=True)
                runner = free.pop()
                ref = runner.run.remote(fn, item, label, traces is not None)
                running[ref] = runner
                queue.append((label, ref))
                settle(block=False)
                while queue and (queue[0][1] not in running or len(queue) > window):  # in item order
                    head_label, head = queue.popleft()
                    if head in running:
                        free.append(running.pop(head))  # collected below: its runner is idle once it returns
                    yield self._collect(head_label, head, log, progress, traces)
            while queue:
                head_label, head = queue.popleft()
                running.pop(head, None)
                yield self._collect(head_label, head, log, progress, traces)
        finally:
            # A failed (or abandoned) step: its tasks still in flight may write (a part of the staging version, a
            # scratch file). Wait for them, so that none writes after the step has deleted what it staged.
            pending = list(set(running) | {ref for _, ref in queue})
            if pending:
                with contextlib.suppress(ray.exceptions.RayError):
                    ray.wait(pending, num_returns=len(pending))

    def _cluster_starting(self) -> bool:
        """Whether this process has not joined a cluster yet and another is starting the embedded one."""
        ray = sys.modules.get("ray")
        if self.address is not None or (ray is not None and ray.is_initialized()):
            return False
        return LocalCluster(Path(self.state_dir)).starting()

    @staticmethod
    def _run_here(fn: Callable, item: object, label: str, log, progress: Progress | None) -> object:
        result, stats = run_task(fn, item, label)
        if progress is not None:
            progress.in_process += 1
        RayEngine._record(stats, log, progress)
        return result

    def _runners(self) -> list:
        """This code version's runner pool (created where missing), after stopping the pools of other versions."""
        import ray

        size = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        prefix = f"{RUNNER}-{code_version()}-"
        for named in ray.util.list_named_actors(all_namespaces=True):
            if (
                named["namespace"] == NAMESPACE
                and named["name"].startswith(RUNNER)
                and not named["name"].startswith(prefix)
            ):
                with contextlib.suppress(ValueError):  # stopped by another driver meanwhile
                    ray.kill(ray.get_actor(named["name"], namespace=NAMESPACE), no_restart=True)
        runner = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=MAX_RETRIES)(TaskRunner)
        options = dict(namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
        runners = [runner.options(name=f"{prefix}{i}", **options).remote(code_version()) for i in range(size)]
        for r in runners:  # not retried: its call ends only when the runner exits on purpose
            r.linger.options(max_task_retries=0).remote(RUNNER_IDLE_S)
        return runners

    @staticmethod
    def _collect(label: str, ref, log, progress: Progress | None, traces: list[TaskStats] | None) -> object:
        import ray

        try:
            result, stats = ray.get(ref)
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None) or e  # the core's own exception, without Ray's wrapping
            raise RuntimeError(f"task {label} failed: {type(cause).__name__}: {cause}") from e
        if traces is not None:
            traces.append(stats)
        RayEngine._record(dataclasses.replace(stats, trace=None), log, progress)  # the roll-up holds no trace
        return result

    @staticmethod
    def _record(stats: TaskStats, log, progress: Progress | None) -> None:
        if progress is not None:
            progress.tasks.append(stats)
            if log:
                log(
                    f"{stats.label}: {len(progress.tasks)}/{progress.total} tasks done, {stats.docs} docs in "
                    f"{stats.seconds:.2f} s (CPU {stats.cpu_seconds:.2f} s), "
                    f"peak RSS {stats.peak_rss_bytes / 2**20:.0f} MB"
                )
