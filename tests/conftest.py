"""Session fixtures: the one shared run of the bundled sample, the shared development corpus, the loopback S3 server
and an S3 proxy that injects faults; and the hooks that start the background jobs (tests/background.py).

The test pyramid: tests/core/ (the pure cores, one module each, seconds), tests/steps/ (one asset materialized
against stand-in upstreams), tests/resources/ (persistence), and at the top the graph, the deployment and the UI.
Every test that only reads what the whole graph produces on the bundled sample reads `sample_run`: one `curation
run` into a throw-away data root and DAGSTER_HOME, made once per session, in the background. Runs that change config,
data or the instance are background jobs of their own (tests/background.py), so they overlap the lighter tests.

Ray is where it is the subject: the S3 run (every step's tasks through Ray; it must write the bytes the sample run
writes without Ray) and tests/resources/test_engine.py (an external head, a worker killed mid-task). Every other run uses CURATION_WORKERS=0 (the
steps' tasks in their own process, through the same `run_task`): a step test is about the step, and each Ray job
starts worker processes of its own (a few CPU seconds each on this 2-core machine). The processes that use Ray share
one embedded cluster (`CURATION_RAY_DIR`, tests/helpers.py `ray_dir`).
"""

from __future__ import annotations

import logging
import time
import types
from pathlib import Path

import _pytest.logging
import pytest

# helpers that assert (their failures show the compared values, as in a test module)
pytest.register_assert_rewrite("tests.helpers", "tests.core.reading", "tests.podsecurity")

from tests.background import background, clean_env, workers
from tests.helpers import corpus_yaml as _corpus_yaml
from tests.helpers import (
    find_shared_corpus,
    free_port,
    instance_home,
    ray_dir,
    restore_environment,
    s3_server,
    session_environment,
    stop_ray,
    stop_s3_server,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _under_logging_lock(enter):
    def locked(self):
        with logging._lock:
            return enter(self)

    return locked


# pytest's log capture iterates logging's dict of loggers at every phase of every test (`catching_logs.__enter__`)
# while the background jobs' Dagster runs, threads of this process, create loggers: "RuntimeError: dictionary changed
# size during iteration" at a test's setup (seen once in CI). logging creates loggers under its module lock.
_pytest.logging.catching_logs.__enter__ = _under_logging_lock(_pytest.logging.catching_logs.__enter__)

_STARTED = pytest.StashKey[float]()
_SAVED_ENV = pytest.StashKey[dict]()


# --- background jobs --------------------------------------------------------------------------------------------
@pytest.hookimpl(trylast=True)  # after the tmp_path plugin's
def pytest_configure(config):
    config.addinivalue_line("markers", "background(name): the test reads the result of a background job")
    # the S3 test credentials and one embedded Ray cluster for the whole session (tests.helpers.ray_dir)
    base = config._tmp_path_factory.getbasetemp()
    config.stash[_SAVED_ENV] = session_environment(base / "ray", base / "chaos")


def _needs(item) -> set[str]:
    names = {m.args[0] for m in item.iter_markers("background")}
    return names | {f for f in getattr(item, "fixturenames", ()) if f in background.jobs}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """The tests that need a background job run after all the others (so that the jobs have the session to finish),
    in the order their jobs are expected to finish (`Background.expected_ends`); ties keep the collection order."""
    needs = {item: _needs(item) for item in items}
    ends = background.expected_ends(set().union(*needs.values()) if needs else set())
    due = {item: max((ends[j] for j in needs[item]), default=-1.0) for item in items}
    items[:] = sorted(items, key=lambda it: due[it])


def pytest_collection_finish(session):
    session.config.stash[_STARTED] = time.monotonic()
    if session.config.option.collectonly:
        return
    needed = set().union(*(_needs(item) for item in session.items)) if session.items else set()
    factory = session.config._tmp_path_factory
    background.start(needed, tmp=lambda name: factory.mktemp(f"bg-{name}", numbered=True))


def pytest_sessionfinish(session):
    workers.close()
    stop_s3_server()
    stop_ray()


def pytest_unconfigure(config):
    if _SAVED_ENV in config.stash:
        restore_environment(config.stash[_SAVED_ENV])


def pytest_terminal_summary(terminalreporter, config):
    """When each background job ran (seconds since collection finished), for whoever tunes the suite's wall time."""
    if background.started and _STARTED in config.stash:
        terminalreporter.write_sep("-", "background jobs (start -> end, s after collection)")
        for line in background.summary(config.stash[_STARTED]):
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _ray_driver_of_the_session():
    """After each test module, this process is a Ray driver of the session's cluster or of none. A step run in this
    process connects it to a cluster as a driver (`RayEngine.connect`, once per process); a module that connects it
    to a cluster of its own and then stops that cluster would leave a driver that Ray kills (exit 1, no report) once
    it notices the cluster is gone, and the next module's steps would find Ray "initialized" on a dead cluster. A
    connection to the session's cluster is kept: every new connection is a new Ray job, whose tasks need worker
    processes of their own (a few CPU seconds each to start)."""
    yield
    import json
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    state = ray_dir() / "cluster.json"
    session = json.loads(state.read_text())["address"] if state.exists() else None
    if ray.get_runtime_context().gcs_address != session:
        ray.shutdown()


# --- the shared run of the bundled sample -----------------------------------------------------------------------
@background.job("sample_run", cost=40, first=True)  # first: most tests that wait wait for it
def _sample_run(tmp: Path) -> types.SimpleNamespace:
    """`curation run` of the embedded default (bundled sources, recipe and thresholds) into `tmp/data`, recorded in
    the instance at `tmp/home`; its output (the table and the mixture) in `tmp/run.log`. Without Ray, partitions one
    at a time (CURATION_WORKERS=0: on this 2-core machine the session already runs jobs side by side; the pool of
    `curation run` and Ray are exercised by the S3 run, tests/test_pipeline.py, which must write the same bytes)."""
    home, root, log = tmp / "home", tmp / "data", tmp / "run.log"
    instance_home(home)
    env = clean_env(DAGSTER_HOME=home, CURATION_DATA_ROOT=root)
    code = workers.run(["cli", "run"], env, log)
    assert code == 0, f"curation run of the bundled sample exited {code}:\n{log.read_text()[-5000:]}"
    return types.SimpleNamespace(home=home, root=root, log=log, env=env)


@pytest.fixture(scope="session")
def sample_run() -> types.SimpleNamespace:
    """The session's one run of the whole graph on the bundled sample: `.home` (DAGSTER_HOME), `.root` (data root),
    `.log` (what `curation run` printed), `.env` (its environment). Read it, never write to it: a test that changes
    config, data or the instance makes a run of its own (or stages the upstreams it needs: `helpers.stage`)."""
    return background.result("sample_run")


# --- the shared development corpus -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    path = find_shared_corpus()
    if path is None:
        pytest.skip("the shared development corpus (../shared/corpus) is not on this machine")
    return path


@pytest.fixture
def corpus_yaml(shared_corpus, tmp_path):
    """A copy of a tests/fixtures YAML whose `../../../shared/corpus` URIs point at the corpus actually found."""
    return lambda name: _corpus_yaml(name, shared_corpus, tmp_path)


# --- S3 on loopback ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's threaded server, in a process of its own) on loopback, with a `curation` bucket."""
    return s3_server()


S3_ERROR = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'


@pytest.fixture
def s3_proxy(s3_endpoint):
    """A loopback HTTP proxy in front of the S3 server: `.endpoint`, `.log` (every request as (method, path)) and
    `.policy`, a function (method, path) -> None (forward) | "reset" (drop the connection unanswered) |
    (status, code) (answer with that S3 error), so a test can inject faults and prove which calls were made."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    target = urlsplit(s3_endpoint)
    proxy = types.SimpleNamespace(log=[], policy=lambda method, path: None, injected=[])

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            proxy.log.append((self.command, self.path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fault = proxy.policy(self.command, self.path)
            if fault is not None:
                proxy.injected.append((self.command, self.path, fault))
            if fault == "reset":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault is not None:
                status, code = fault
                data = S3_ERROR.format(code=code, message=f"injected by the test proxy: {code}").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
            else:
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy.endpoint = f"http://127.0.0.1:{server.server_port}"
    yield proxy
    server.shutdown()


@pytest.fixture
def s3_request_log(s3_proxy):
    """(endpoint, log): the proxy without faults, to prove which S3 calls were (not) made."""
    return s3_proxy.endpoint, s3_proxy.log
