"""resources/instance.py: the embedded default's run and event log storage, on real SQLite files under a throw-away
DAGSTER_HOME (deploy/local/dagster.yaml's config): Dagster's own files and readers, WAL with unsynced commits, a
bounded set of open shards, and forked processes (the job workers of `curation run`) on connections of their own."""

import sqlite3
import subprocess
import sys
import textwrap

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from resources.instance import OPEN_SHARDS, LocalSqliteEventLogStorage, LocalSqliteRunStorage
from tests.helpers import REPO, instance_home, open_instance, wait_for


@dg.op
def one() -> int:
    return 1


@dg.job
def tiny():
    one()


def test_runs_are_dagsters_own_files_in_wal_with_normal_sync_and_few_open_shards(tmp_path):
    home = instance_home(tmp_path / "home")
    with open_instance(home) as instance:
        events, runs = instance.event_log_storage, instance.run_storage
        assert isinstance(events, LocalSqliteEventLogStorage) and isinstance(runs, LocalSqliteRunStorage)
        ids = [tiny.execute_in_process(instance=instance).run_id for _ in range(OPEN_SHARDS + 3)]
        assert len(events._engines) <= OPEN_SHARDS  # the oldest runs' connections were closed
        with events.run_connection(ids[-1]) as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        with runs.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        ours = {run_id: [e.dagster_event_type for e in instance.all_logs(run_id)] for run_id in ids}
    # Dagster's stock classes read the same files: an instance could go back to the default config; a run's shard
    # has the tables, indexes and alembic stamp of one Dagster creates
    stock_events = SqliteEventLogStorage(str(home / "history" / "runs"))
    with stock_events.run_connection("made-by-dagster"):
        pass

    def schema(shard: str) -> list:
        with sqlite3.connect(home / "history" / "runs" / f"{shard}.db") as conn:
            tables = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str)
            return [tables, conn.execute("SELECT version_num FROM alembic_version").fetchall()]

    assert schema(ids[0]) == schema("made-by-dagster")
    stock_runs = SqliteRunStorage.from_local(str(home / "history"))
    for run_id in ids:
        assert [e.dagster_event_type for e in stock_events.get_logs_for_run(run_id)] == ours[run_id]
        (run,) = stock_runs.get_runs(dg.RunsFilter(run_ids=[run_id]))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert dg.DagsterEventType.RUN_SUCCESS in ours[run_id]


def test_a_forked_child_writes_through_connections_of_its_own_and_leaves_its_parents_open(tmp_path):
    """A child forked from a process that used the storage (as `curation run` forks its job workers) opens its own
    connections; its parent's stay usable after the child exits."""
    home = instance_home(tmp_path / "home")
    script = textwrap.dedent(
        f"""
        import os
        import dagster as dg
        from tests.resources.test_instance import tiny

        def connections(instance):  # the DB-API connections the storages hand out now
            with instance.event_log_storage.index_connection() as a, instance.run_storage.connect() as b:
                return {{id(a.connection.dbapi_connection), id(b.connection.dbapi_connection)}}

        with dg.DagsterInstance.from_config({str(home)!r}) as instance:
            tiny.execute_in_process(instance=instance)
            parents = connections(instance)
            pid = os.fork()
            if pid == 0:  # the child: the same storage objects, inherited; runs while its parent runs
                own = not connections(instance) & parents
                ok = all(tiny.execute_in_process(instance=instance).success for _ in range(3))
                os._exit(0 if own and ok else 1)
            assert all(tiny.execute_in_process(instance=instance).success for _ in range(3))
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert connections(instance) == parents
            runs = instance.get_runs()
            assert len(runs) == 7 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            for run in runs:
                assert instance.all_logs(run.run_id)[-1].dagster_event_type == dg.DagsterEventType.RUN_SUCCESS
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_the_live_log_of_a_run_gets_the_events_its_writer_commits(tmp_path):
    """The UI streams a run's events through `watch` (a watchdog on the run's files); the writer's connection stays
    open, so its commits go to the shard's WAL and not to the `.db` file until a checkpoint: both are watched."""
    home = instance_home(tmp_path / "home")
    with open_instance(home) as instance:
        run = instance.get_run_by_id(tiny.execute_in_process(instance=instance).run_id)
        seen: list[str] = []

        def callback(entry, _cursor) -> None:
            seen.append(entry.message)

        instance.event_log_storage.watch(run.run_id, None, callback)
        try:
            instance.report_engine_event("after the watch began", run)
            wait_for(lambda: "after the watch began" in seen, 120, "the watched run's new event")
        finally:
            instance.event_log_storage.end_watch(run.run_id, callback)
