"""Run workers for the tests: real processes, each with its own instance and data root, forked from a server that has
imported the code location once.

`python tests/workers.py` is the server. Each request on its stdin (one JSON line: `id`, `task`, `env`, `cwd`,
`output`) forks one child, which replaces its environment with `env`, sends its stdout and stderr to `output`, runs
the task and exits; when the child is gone the server answers on its stdout (one JSON line: `id`, `returncode`,
negative for a signal: -9 for SIGKILL). Forking saves every run the ~3 s of importing Dagster, polars and the steps;
the child is still a process of its own (its own instance and SQLite connections, killable in the middle of a write),
as the run worker of `curation run` is. The product itself forks its step processes the same way (the local
executor is a forkserver with the location preloaded).

Tasks:
- `["cli", ARG...]`        `curation ARG...` (`curation_assets.cli.main`), e.g. `["cli", "run"]`
- `["crash", ASSET, ARG...]` the same, SIGKILLed halfway through writing ASSET's version: in the middle of its
                           second file (half its bytes written), or just before publishing a single-file version
- `["raw-slowly", LOG]`    raw[web] only, each file write taking a second; appends the window of each publish (start,
                           end) to LOG as a JSON line
- `["call", MODULE:FUNCTION, OUT, ARG...]`  FUNCTION(*ARG) of a test module, its JSON result written to OUT (heavy
                           computations of the in-process tests, moved off the session's thread)

Each child leads a process group of its own. When the server's stdin closes (the test session ends), it kills the
groups of the children still running (a job nobody waited for) and exits.
"""

import json
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def die_while_writing(asset: str) -> None:
    from resources.versions import Version

    write, commit = Version.write, Version.commit

    def ours(version) -> bool:
        return Path(version.final).parts[-3] == asset

    def dying_write(self, name: str, data: bytes) -> str:
        if ours(self) and len(self.written) == 1:
            target = os.path.join(self.staging, name) if self.staging else None
            if target:
                os.makedirs(os.path.dirname(target), exist_ok=True)  # a table's folder (`dropped/part-00000.parquet`)
                with open(target, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, name, data)

    def dying_commit(self) -> None:
        if ours(self):
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self)

    Version.write = dying_write
    Version.commit = dying_commit


def raw_slowly(log: str) -> int:
    import dagster as dg

    from curation_assets.defs import defs
    from curation_assets.defs.jobs import INGEST_SOURCE
    from resources.io_manager import ParquetIOManager
    from resources.versions import Version

    write, publish = Version.write, ParquetIOManager._publish

    def slow_write(self, name: str, data: bytes) -> str:
        time.sleep(1.0)
        return write(self, name, data)

    def logged_publish(self, context, obj, partition, lock):
        start = time.time()
        publish(self, context, obj, partition, lock)
        with open(log, "a") as f:
            f.write(json.dumps({"asset": context.asset_key.to_user_string(), "start": start, "end": time.time()}))
            f.write("\n")

    Version.write, ParquetIOManager._publish = slow_write, logged_publish
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("source", ["web"])
        job = defs().resolve_job_def(INGEST_SOURCE)
        result = job.execute_in_process(partition_key="web", instance=instance, asset_selection=[dg.AssetKey("raw")])
    return 0 if result.success else 1


def run_task(task: list[str]) -> int:
    from curation_assets.cli import main

    kind, *args = task
    if kind == "cli":
        return main(args)
    if kind == "crash":
        die_while_writing(args[0])
        return main(args[1:] or ["run"])
    if kind == "raw-slowly":
        return raw_slowly(args[0])
    if kind == "call":
        import importlib

        module, _, name = args[0].partition(":")
        Path(args[1]).write_text(json.dumps(getattr(importlib.import_module(module), name)(*args[2:])))
        return 0
    raise ValueError(f"unknown task {task!r}")


def child(request: dict) -> None:
    """In the forked child: take the request's environment, directory and output file, run the task, exit."""
    code = 1
    try:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(request.get("cwd") or REPO)
        os.environ.clear()
        os.environ.update(request["env"])
        code = run_task(request["task"])
        code = code if isinstance(code, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def preload() -> None:
    """Import what a run needs, without running anything (no instance, no polars work, no threads of our own)."""
    import dagster  # noqa: F401

    import curation_assets.cli
    import curation_assets.defs  # noqa: F401  (the steps, jobs, sensors, deployment, resources)
    import resources.io_manager
    import resources.versions  # noqa: F401


def serve() -> None:
    preload()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    children: dict[int, str] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if readable:
            data = os.read(0, 1 << 16)
            if not data:  # the session is over: what still runs, nobody waits for
                for pid in children:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                for pid in children:
                    os.waitpid(pid, 0)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not line.strip():
                    continue
                request = json.loads(line)
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    child(request)
                children[pid] = request["id"]
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            rid = children.pop(pid, None)
            if rid is not None:
                print(json.dumps({"id": rid, "returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
