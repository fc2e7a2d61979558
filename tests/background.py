"""Heavy work that starts when the test session starts, so that it runs beside the lighter tests instead of after them.

A test module (or the conftest) registers a job: `@background.job("name", cost=seconds)` on a function of one
argument, a fresh directory. A test that needs the job's result carries `@pytest.mark.background("name")` or takes
a fixture of the same name, and calls `background.result("name")`, which waits for the job and returns its value or
raises what it raised (assertions made inside a job fail the test that asks for it, with their traceback).

When collection is done (tests/conftest.py: `pytest_collection_finish`), the jobs that the selected tests need start
on `LANES` threads, the `first` ones first, then the most expensive; the tests that need a job run after all the
others, in the order their jobs should finish (`expected_ends`), so that the jobs have the whole session to finish.
Nothing starts under `--collect-only`, nor for jobs no selected test needs.

A job registered `light` (it mostly waits: sleeps, servers starting) starts at once on a thread of its own instead.
A job's heavy work runs in other processes (run workers forked by `Workers`, the moto server, dagster's own
servers): the lane threads mostly wait, and the session keeps its one thread for the tests it runs meanwhile.
Independent runs inside a job may run at once (`Workers.submit`).

`Workers` is the client of tests/workers.py: run workers forked from a server that has imported the code location
once, so a run costs its work, not ~3 s of imports.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LANES = int(os.environ.get("CURATION_TEST_LANES", "3"))  # background jobs at once: 2 cores, jobs often wait


# What a process of the session may have set for itself (Ray's loopback rule and one polars thread per Ray task, set
# by `RayEngine.connect` in its driver): a run worker starts without them, as `curation run` does.
DRIVER_ONLY = ("POLARS_MAX_THREADS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CURATION_* variable (the bundled embedded default) but the session's
    Ray cluster (CURATION_RAY_DIR) and no Ray unless `extra` asks for it (CURATION_WORKERS=0: every step runs its
    tasks in its own process; a run that proves the Ray path - the S3 run - gives a number of workers), plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_") and k not in DRIVER_ONLY}
    env["PYTHONPATH"] = str(REPO)
    env["CURATION_WORKERS"] = "0"
    if "CURATION_RAY_DIR" in os.environ:
        env["CURATION_RAY_DIR"] = os.environ["CURATION_RAY_DIR"]
    return env | {k: str(v) for k, v in extra.items() if v is not None}


class Workers:
    """Run workers forked by tests/workers.py (see there). Thread-safe; started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._futures: dict[str, Future] = {}
        self._ids = itertools.count()

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "workers.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=clean_env(),
            text=True,
            bufsize=1,
        )
        ready = proc.stdout.readline()
        if not ready.startswith('{"ready"'):
            proc.kill()
            raise RuntimeError(f"tests/workers.py did not start: {ready!r} (exit {proc.wait()})")
        threading.Thread(target=self._answers, args=(proc,), name="workers-answers", daemon=True).start()
        return proc

    def _answers(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._futures.pop(answer["id"], None)
            if future is not None:
                future.set_result(answer["returncode"])
        with self._lock:  # the server is gone: nothing pending will be answered
            pending, self._futures = self._futures, {}
        for future in pending.values():
            future.set_exception(RuntimeError(f"tests/workers.py exited ({proc.wait()}) before answering"))

    def submit(self, task: list[str], env: dict[str, str], output: Path, cwd: Path | None = None) -> Future:
        """Fork a run worker for `task` (see tests/workers.py) with exactly `env`; its stdout and stderr go to
        `output`. The future's result is the worker's exit code (-9: killed)."""
        future: Future = Future()
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            rid = str(next(self._ids))
            self._futures[rid] = future
            request = {"id": rid, "task": task, "env": env, "output": str(output), "cwd": str(cwd or REPO)}
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        return future

    def run(self, task: list[str], env: dict[str, str], output: Path, cwd: Path | None = None, timeout=900) -> int:
        return self.submit(task, env, output, cwd).result(timeout=timeout)

    def call(self, tmp: Path, target: str, *args: str) -> object:
        """`module:function(*args)` in a run worker (tests/workers.py `call`): its JSON result, decoded; what it
        printed, in the assertion when it fails."""
        out, log = tmp / f"{target.rpartition(':')[2]}.json", tmp / f"{target.rpartition(':')[2]}.log"
        code = self.run(["call", target, str(out), *args], clean_env(), log)
        assert code == 0, log.read_text()[-3000:]
        return json.loads(out.read_text())

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Job:
    name: str
    fn: Callable[[Path], object]
    cost: float
    light: bool = False  # mostly waits (sleeps, another process's work): runs on a thread of its own, not a lane
    first: bool = False  # takes the first lane before any other (what most waiting tests wait for)
    future: Future = field(default_factory=Future)
    started: float | None = None  # time.monotonic() when a lane took it, and when it finished
    finished: float | None = None


class Background:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.started: list[str] = []
        self.tmp: Callable[[str], Path] = lambda name: Path(tempfile.mkdtemp(prefix=f"curation-{name}-"))
        self._queue: list[Job] = []
        self._lock = threading.Lock()

    def job(self, name: str, cost: float, light: bool = False, first: bool = False):
        """Register `fn(tmp: Path)` as the background job `name`; `cost`: its expected seconds (jobs start most
        expensive first, after the `first` ones); `light`: the job mostly waits, so it starts at once on a thread of
        its own instead of taking a lane."""

        def register(fn: Callable[[Path], object]) -> Callable[[Path], object]:
            self.jobs[name] = Job(name, fn, cost, light, first)
            return fn

        return register

    def _order(self, names) -> list[Job]:
        return sorted((self.jobs[n] for n in names), key=lambda j: (not j.first, -j.cost))

    def expected_ends(self, names, lanes: int = LANES) -> dict[str, float]:
        """When each of the jobs `names` should finish if they all start now (their costs; the lanes filled in start
        order): the order in which the tests that wait for them should run."""
        ends, free = {}, [0.0] * max(1, lanes)
        for job in self._order(names):
            if job.light:
                ends[job.name] = job.cost
                continue
            lane = free.index(min(free))
            free[lane] += job.cost
            ends[job.name] = free[lane]
        return ends

    def start(self, names: set[str], tmp: Callable[[str], Path] | None = None, lanes: int = LANES) -> None:
        """Start the jobs `names`: the light ones on threads of their own, the others on `lanes` threads, the `first`
        ones first, then the most expensive first."""
        if tmp is not None:
            self.tmp = tmp
        todo = self._order(n for n in names if n not in self.started)
        self.started += [job.name for job in todo]
        for job in todo:
            if job.light:
                threading.Thread(target=self._run, args=(job,), name=f"background-{job.name}", daemon=True).start()
        heavy = [job for job in todo if not job.light]
        with self._lock:
            self._queue.extend(heavy)
        for _ in range(min(lanes, len(heavy))):
            threading.Thread(target=self._lane, name="background-lane", daemon=True).start()

    def _lane(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.pop(0)
            self._run(job)

    def _run(self, job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        job.started = time.monotonic()
        try:
            value = job.fn(self.tmp(job.name))
        except BaseException as e:
            job.finished = time.monotonic()
            job.future.set_exception(e)
        else:
            job.finished = time.monotonic()
            job.future.set_result(value)

    def result(self, name: str, timeout: float = 1800):
        """The job's value (starting it here if the session did not), or what it raised."""
        job = self.jobs[name]
        if name not in self.started:  # e.g. a test run by its node id on its own: run it now, in this thread
            self.started.append(name)
            self._run(job)
        return job.future.result(timeout=timeout)

    def summary(self, since: float) -> list[str]:
        """One line per job the session started: when it started and finished (seconds into the session)."""
        lines = []
        for name in self.started:
            job = self.jobs[name]
            if job.started is None:
                lines.append(f"{name}: not started")
                continue
            end = f"{job.finished - since:6.1f} s" if job.finished is not None else "   (running)"
            outcome = "" if job.finished is None else " failed" if job.future.exception() else ""
            lines.append(f"{name}: {job.started - since:6.1f} s -> {end}{outcome}")
        return lines


background = Background()
workers = Workers()
