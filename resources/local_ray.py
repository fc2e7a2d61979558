"""The embedded Ray cluster of one Dagster instance (`LocalCluster`): started on loopback with `ray start --head`,
recorded in `<state_dir>/cluster.json`, reused by every step and run, stopped by the PIDs of its own processes; and
the environment of every Ray process and driver. Standard library only: `curation run` starts the cluster before it
imports Dagster, so the two overlap (`resources/engine.py` runs the tasks on it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Environment of every Ray worker, here and in the cluster (deploy/base/raycluster.yaml sets the same on the head and
# workers: tests/test_raycluster.py): one polars thread per task (a task is the unit of parallelism: Ray runs one per
# CPU, and polars ignores OMP_NUM_THREADS), no usage reporting, and freed memory returned at once. polars allocates
# through jemalloc, which keeps freed pages for seconds by default: a runner that ran a large task would hold its
# memory into the next tasks (measured: 843 of 1,986 MB still resident after a frame was dropped; 72 MB with decay 0,
# for about 7 % more CPU in dedup's tasks), so its RSS would be its predecessors' and not its own.
WORKER_ENV = {
    "POLARS_MAX_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0",
}
# ... and of every Ray process we start on loopback and of every driver: loopback only.
RAY_ENV = {
    **WORKER_ENV,
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Ray 2.60 turns token auth on for `ray start` whenever ~/.ray/auth_token exists (any earlier `ray.init()` writes
    # one), and then refuses drivers without the token: the embedded cluster listens on loopback only, so auth is off
    # on both sides, whatever the home directory holds.
    "RAY_AUTH_MODE": "disabled",
}
STOP_GRACE_S = 5.0
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


# Ports for a cluster's listeners: free ones between Ray's worker ports (10002-19999) and the kernel's ephemeral range
# (32768-60999 here). A port the kernel hands out for port 0 is ephemeral: an outgoing loopback connection (S3, gRPC)
# can take it before Ray binds it, and a Ray agent that cannot bind fails the whole `ray start` (seen under load).
PORTS = range(20000, 32768)
START_ATTEMPTS = 3
_RANDOM = random.SystemRandom()  # not the module's generator: forked processes would inherit one state and collide


def _free_port() -> int:
    for _ in range(100):
        port = _RANDOM.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} on 127.0.0.1")


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=2):
        return True
    return False


def adopt_orphans() -> None:
    """Make this process the subreaper of its descendants (Linux): `ray start` exits once the cluster's daemons run,
    and they are re-parented to this process instead of init, so that, reaped at `stop`, their CPU time counts as this
    command's (`/usr/bin/time curation run` sees the whole cluster's work, not only the drivers')."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def _gone(pid: int) -> bool:
    """Whether `pid` has exited; reaps it when it is a child of this process (a daemon it adopted). A zombie that is
    another's child has exited too (its reaper, often init, may take seconds), unless only its main thread has (a
    process whose other threads still run shows as a zombie: a Ray worker shutting down)."""
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return True
    if zombie:  # reaped after it is seen exited, not before: a child reaped first could exit unreaped in between
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return zombie and threads <= 1


@dataclass
class LocalCluster:
    """The embedded Ray cluster of one Dagster instance, described by `<state_dir>/cluster.json`."""

    state_dir: Path

    @property
    def temp_dir(self) -> str:
        # Ray's socket paths must stay under 108 bytes: a short directory named after the state dir.
        return f"/tmp/ray-curation-{hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]}"

    @property
    def _state(self) -> Path:
        return self.state_dir / "cluster.json"

    def address(self) -> str | None:
        """The GCS address of the recorded cluster if it is up, else None."""
        if not self._state.is_file():
            return None
        address = json.loads(self._state.read_text())["address"]
        return address if self.pids() and _listening(address) else None

    def start(self, num_cpus: int, labels: dict[str, str] | None = None) -> tuple[str, bool]:
        """(address, started now): the running cluster, or a new one with `num_cpus` CPUs (and node `labels`, e.g. the
        zone label KubeRay's pinned worker groups carry). Under a file lock, so concurrent steps of one instance start
        one cluster."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "cluster.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            address = self.address()
            if address:
                return address, False
            self._starting.touch()
            try:
                for attempt in range(1, START_ATTEMPTS + 1):
                    self.stop()  # leftovers of a cluster that died half-way
                    try:
                        return self._start(num_cpus, labels or {}), True
                    except RuntimeError:
                        # a port taken between our check and Ray's bind, a node that timed out under load: new ports
                        if attempt == START_ATTEMPTS:
                            raise
            finally:
                self._starting.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    @property
    def _starting(self) -> Path:
        return self.state_dir / "starting"

    def starting(self) -> bool:
        """Whether a process is starting the cluster now: its start's mark is there and the start's lock is held (a
        mark without the lock is a start that died; the lock without the mark, a check of a running cluster)."""
        if not self._starting.is_file():
            return False
        try:
            with open(self.state_dir / "cluster.lock") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except FileNotFoundError:
            pass
        return False

    def start_in_background(self, num_cpus: int) -> subprocess.Popen:
        """`start(num_cpus)` in a child process, so that the caller starts no thread (it may fork workers) while the
        cluster starts beside it; a step that needs the cluster meanwhile runs its tasks in its own process until it
        is up (`RayEngine.map`, `starting`)."""
        code = (
            "import sys, pathlib, resources.local_ray as r; "
            "r.LocalCluster(pathlib.Path(sys.argv[1])).start(int(sys.argv[2]))"
        )
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        return subprocess.Popen([sys.executable, "-c", code, str(self.state_dir), str(num_cpus)], env=env)

    def _start(self, num_cpus: int, labels: dict[str, str]) -> str:
        """`ray start --head` on loopback; records and returns the GCS address."""
        port = _free_port()
        # Every fixed default port (client server 10001, dashboard 8265, its agent 52365, ...) is replaced by a free
        # one, so two instances' clusters (or a test's) never collide.
        fixed = ("ray-client-server", "dashboard", "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export")
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            f"--port={port}",
            *(f"--{name}-port={_free_port()}" for name in fixed),
            f"--num-cpus={num_cpus}",
            *([f"--labels={','.join(f'{k}={v}' for k, v in labels.items())}"] if labels else []),
            "--include-dashboard=false",
            # no autoscaler monitor (a fixed local node) and no log monitor (drivers take no worker logs:
            # log_to_driver=False): about 1 CPU s less per cluster and a faster start (measured on Ray 2.60)
            "--no-monitor",
            "--include-log-monitor=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        done = subprocess.run(cmd, env={**os.environ, **RAY_ENV}, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"ray start failed: {done.stderr.strip().splitlines()[-3:]}")
        address = f"127.0.0.1:{port}"
        self._state.write_text(json.dumps({"address": address, "num_cpus": num_cpus, "temp_dir": self.temp_dir}))
        return address

    def pids(self) -> list[int]:
        """PIDs of this cluster's processes: those whose command line names its temp dir or its GCS address (the
        client server), and their children (Ray's agents rename themselves `ray::...`). Nothing else on the machine is
        ever matched."""
        mine: set[int] = set()
        parents: dict[int, int] = {}
        # the Ray client server names only the GCS address, not the temp dir
        state = json.loads(self._state.read_text()) if self._state.is_file() else {}
        marks = [self.temp_dir.encode(), *([f"--address={state['address']}".encode()] if "address" in state else [])]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                pid = int(proc.name)
                cmdline = (proc / "cmdline").read_bytes()
                if any(mark in cmdline for mark in marks):
                    mine.add(pid)
                parents[pid] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        mine |= {pid for pid, parent in parents.items() if parent in mine}
        return sorted(mine)

    def stop(self) -> list[int]:
        """Stop this cluster by its own PIDs (the raylet killed, then every other process but the GCS, then the GCS:
        SIGTERM, and SIGKILL after a grace period); never `ray stop`, which kills every Ray process on the machine.
        Returns the PIDs signalled."""
        pids = self.pids()
        name = {p: os.path.basename(_cmdline(p).split(b"\0")[0]) for p in pids}
        raylet = [p for p in pids if name[p] == b"raylet"]
        gcs = [p for p in pids if name[p] == b"gcs_server"]
        rest = [p for p in pids if p not in raylet and p not in gcs]
        # In order. The raylet first, killed: it ignores SIGCHLD, so the workers and agents it stops on a SIGTERM are
        # reaped by the kernel with their CPU time discarded, and `/usr/bin/time curation run` missed the runners'
        # work whenever they died before it (measured: 24.9 of 36.1 CPU s counted). Killed, it leaves them to this
        # process (their subreaper in `curation run`), which reaps them. Then they are killed too: a runner holds
        # nothing to save (a task's result is returned before it ends), and on a SIGTERM each took 0.5 s to exit, at
        # the end of every `curation run`. The GCS last, asked first: the agents report to it as they exit.
        for group, signals in (
            (raylet, (signal.SIGKILL,)),
            (rest, (signal.SIGKILL,)),
            (gcs, (signal.SIGTERM, signal.SIGKILL)),
        ):
            for sig in signals:
                for pid in group:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + STOP_GRACE_S
                while time.monotonic() < deadline and not all([_gone(p) for p in group]):
                    time.sleep(0.01)  # a killed process is gone in a few ms: three groups at 50 ms polls took 0.16 s
                if all(_gone(p) for p in group):
                    break
        with contextlib.suppress(FileNotFoundError):
            self._state.unlink()
        return pids
