"""The run and event log storage of the embedded default instance (`deploy/local/dagster.yaml`): Dagster's SQLite
storage (`<DAGSTER_HOME>/history/runs.db`, and a database per run under `history/runs/` plus `index.db`; the same
files, readable by the stock classes) with its connections kept open.

Dagster's `SqliteEventLogStorage` makes an engine and opens a connection for every event it stores and every read:
closing the last connection to a WAL database checkpoints it, and every commit is synced, so a run of two steps
(about 45 events, each mirrored to the index when it is an asset or check event) cost about 6,500 `fdatasync` calls
per `curation run` of the bundled sample (strace), about 1 s of its 15 s. Here a process keeps one open connection per
recent shard (the index and the runs it writes), so WAL checkpoints happen as SQLite schedules them (every 1,000
pages), and commits use `synchronous=NORMAL`: SQLite's documented setting for WAL, where a power cut may lose the
last committed events but never corrupts a database. The data root's write-once versions do not depend on it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import dagster._check as check
import sqlalchemy as db
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._config import StringSource
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from sqlalchemy.pool import StaticPool
from watchdog.events import PatternMatchingEventHandler
from watchdog.observers import Observer

# shards with an open connection per process: the index and the latest runs touched (a `dagster dev` webserver reads
# many runs' logs; older shards' connections close, and reopen when read again)
OPEN_SHARDS = 8
_INHERITED: list = []  # a forked child's copies of its parent's engines: kept, never closed (the parent uses them)


class LocalSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with one open connection per recent shard (its `_db_lock` serializes their use across
    the storage's threads) and `synchronous=NORMAL` commits."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._pid = os.getpid()
        super().__init__(base_dir, inst_data)

    @classmethod
    def config_type(cls):
        return {"home": StringSource}  # the instance's DAGSTER_HOME: logs where Dagster's default puts them

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> LocalSqliteEventLogStorage:
        return cls(os.path.join(config_value["home"], "history", "runs"), inst_data)

    def _engine(self, shard: str) -> db.engine.Engine:
        if self._pid != os.getpid():  # a fork's copy: its connections belong to the parent
            _INHERITED.extend(self._engines.values())
            self._engines, self._pid = OrderedDict(), os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = db.create_engine(
                create_db_conn_string(self._base_dir, shard),
                poolclass=StaticPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _wal_unsynced)
        self._engines[shard] = engine
        while len(self._engines) > OPEN_SHARDS:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock:
            check.str_param(shard, "shard")
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: db.engine.Engine, for_index_shard: bool = False) -> None:
        """Dagster's shard set-up, without reading its alembic scripts (two loads of 90 migration files, 26 of the
        34 ms a run's new shard took) where the outcome is known: a shard at the head revision is left as it is, and
        an empty file gets the tables and the head stamp, as Dagster's would. Anything else (an older shard, another
        process creating the same one) goes to Dagster's own, which migrates and retries."""
        with contextlib.suppress(db.exc.DBAPIError), engine.connect() as conn:
            context = MigrationContext.configure(conn)
            if context.get_current_revision() == _scripts().get_current_head():
                return
            if not db.inspect(conn).get_table_names():
                SqlEventLogStorageMetadata.create_all(conn)
                context.stamp(_scripts(), "head")
                conn.commit()
                return
        super()._initdb(engine, for_index_shard)

    def watch(self, run_id: str, cursor: str | None, callback) -> None:
        """Dagster's `watch` (the UI's live logs of a run), told of the run's WAL file too."""
        if not self._obs:
            self._obs = Observer()
            self._obs.start()
        handler = _WalWatchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (handler, self._obs.schedule(handler, self._base_dir, recursive=True))

    def dispose(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
        super().dispose()


class _WalWatchdog(SqliteEventLogStorageWatchdog):
    """Dagster's watchdog of a run's shard reads new events when the file changes; with the writer's connection kept
    open, a commit changes only the shard's WAL (`<run_id>.db-wal`) until a checkpoint, so it watches both."""

    def __init__(self, storage: LocalSqliteEventLogStorage, run_id: str, callback, cursor: str | None):
        super().__init__(storage, run_id, callback, cursor)
        PatternMatchingEventHandler.__init__(self, patterns=[self._log_path, f"{self._log_path}-wal"])

    def on_modified(self, event) -> None:
        self._process_log()


def _wal_unsynced(dbapi_connection, _record) -> None:
    # WAL from the start (Dagster switches a new shard to WAL after creating its tables, in a synced rollback
    # journal: about 60 syncs per run)
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class LocalSqliteRunStorage(SqliteRunStorage):
    """`SqliteRunStorage` (`<home>/history/runs.db`) with its connections kept open in a pool (Dagster's opens one
    per query) and `synchronous=NORMAL` commits."""

    def __init__(self, conn_string: str, inst_data=None):
        self._engine, self._pid = _pooled_engine(conn_string), os.getpid()
        super().__init__(conn_string, inst_data)

    @classmethod
    def config_type(cls):
        return {"home": StringSource}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> LocalSqliteRunStorage:
        return cls.from_local(os.path.join(config_value["home"], "history"), inst_data)

    @contextmanager
    def connect(self) -> Iterator[db.engine.Connection]:
        if self._pid != os.getpid():  # a fork's copy: its connections belong to the parent
            _INHERITED.append(self._engine)
            self._engine, self._pid = _pooled_engine(self._conn_string), os.getpid()
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self._engine.dispose()
        super().dispose()


def _pooled_engine(conn_string: str) -> db.engine.Engine:
    """An engine with SQLAlchemy's pool for a SQLite file (QueuePool): a connection goes back to it, open, after each
    use, whichever thread used it."""
    engine = db.create_engine(conn_string)
    db.event.listen(engine, "connect", _wal_unsynced)
    return engine


@functools.cache
def _scripts() -> ScriptDirectory:
    """Dagster's alembic scripts of the event log, read once per process."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))
