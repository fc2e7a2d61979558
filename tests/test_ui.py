"""The location used the way an operator uses it: through a real `dagster-webserver` process.

A background job (tests/background.py: it starts with the session and runs beside the other tests) starts a standalone
`dagster code-server start` and a `dagster-webserver` whose workspace loads it through a `grpc_server` entry (the
shape deploy/ runs in the cluster), against a throw-away DAGSTER_HOME (DefaultRunCoordinator: runs launch without a
daemon) and a throw-away CURATION_DATA_ROOT. Through GraphQL it registers the `books` partition and runs
`ingest_source` for it; then
- test_graphql_curate_books: the location `curation` is LOADED with exactly the eleven assets, the run succeeded, `raw`
  partition `books` is materialized by that run with rows_in / rows_out / tokens_est > 0, and
  raw's checks records_accounted and drop_rate (and any other check on raw) passed against that materialization;
- test_browser_asset_pages: headless Debian chromium, driven by playwright, renders raw's partitions view with `books`
  materialized by that run and its metadata, raw's checks tab with both checks Succeeded, and the catalog and the
  lineage graph with all nine assets.
"""

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from curation_assets.defs.jobs import ASSETS as GRAPH_ASSETS
from tests.background import background, clean_env
from tests.helpers import instance_home

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "curation"
STAGES = ("ingest", "curate", "dedup", "synthesize", "mix")  # the asset groups, in pipeline order
REPOSITORY = "__repository__"  # the repository name of a `Definitions` location
ASSETS = set(GRAPH_ASSETS)
PARTITION = "books"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
LOAD_TIMEOUT = 180  # s: the webserver and the location's code server come up
RUN_TIMEOUT = 300  # s: ingest_source for one bundled source


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webserver:
    def __init__(self, port: int, proc: subprocess.Popen, log: Path, data_root: Path):
        self.port, self.proc, self.log, self.data_root = port, proc, log, data_root
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def gql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        req = urllib.request.Request(
            f"{self.url}/graphql",
            method="POST",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.load(resp)
        assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
        return body["data"]


WORKSPACE_Q = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } } } }
    ... on PythonError { message } } }"""


def _wait_loaded(ws: Webserver) -> None:
    """/server_info answers, then the location reaches LOADED; a load error fails at once with its message."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        if ws.proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {ws.proc.returncode}:\n{ws.log_tail()}")
        try:
            with urllib.request.urlopen(f"{ws.url}/server_info", timeout=5) as resp:
                if resp.status == 200:
                    entries = ws.gql(WORKSPACE_Q)["workspaceOrError"].get("locationEntries") or []
                    entry = next((e for e in entries if e["name"] == LOCATION), None)
                    if entry and entry["loadStatus"] == "LOADED":
                        err = entry["locationOrLoadError"]
                        if err and err["__typename"] == "PythonError":
                            raise RuntimeError(
                                f"location {LOCATION!r} failed to load:\n{err['message']}\n"
                                + "".join(err["stack"][-12:])
                            )
                        assert err and err["__typename"] == "RepositoryLocation", entry
                        return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"location {LOCATION!r} not LOADED after {LOAD_TIMEOUT}s:\n{ws.log_tail()}")
        time.sleep(0.25)


def _kill_group_but_trackers(pgid: int) -> list[int]:
    """SIGKILL every process of group `pgid` but its multiprocessing resource trackers, which are left to unlink the
    named semaphores the runs' executors (a forkserver context) registered with them: once every other holder of
    their pipe is gone they clean up and exit (killed with the rest, they left 8 `sem.mp-*` in /dev/shm per UI
    run). Returns the trackers' PIDs."""
    trackers: set[int] = set()
    for _ in range(100):  # again, for what a dying server forked meanwhile, until only trackers and zombies are left
        alive = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
                pid = int(stat.parent.name)
                if int(group) != pgid or state == "Z" or pid in trackers:
                    continue
                if b"multiprocessing.resource_tracker" in (stat.parent / "cmdline").read_bytes():
                    trackers.add(pid)
                    continue
                os.kill(pid, signal.SIGKILL)
                alive += 1
            except (OSError, ValueError):
                continue
        if not alive:
            break
        time.sleep(0.05)
    return sorted(trackers)


def _reap_trackers(trackers: list[int]) -> None:
    """Wait (at most 10 s) for the spared trackers to finish their clean-up, then kill what is left."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in trackers):
        time.sleep(0.1)
    for pid in trackers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_webserver(tmp: Path) -> Webserver:
    """A standalone `dagster code-server start` and a `dagster-webserver` that loads it from a grpc_server entry (the
    cluster's shape), on a throw-away DAGSTER_HOME (DefaultRunCoordinator: runs launch without a daemon) and data
    root; returns once the location is LOADED. The processes are killed by `Webserver.stop` (or at exit)."""
    home = tmp / "dagster_home"
    data_root = tmp / "curation_data"
    instance_home(home, coordinator="DefaultRunCoordinator")
    data_root.mkdir()
    # the bundled embedded default: no CURATION_* overrides leak in from the caller's environment (but the session's
    # Ray cluster, which the runs' steps use)
    env = clean_env()
    env.update(
        DAGSTER_HOME=str(home),
        CURATION_DATA_ROOT=str(data_root),
        PYTHONUNBUFFERED="1",
        DAGSTER_DISABLE_TELEMETRY="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    # the cluster's shape: a standalone gRPC code server, and a webserver that loads it from a grpc_server entry
    grpc_port, port = _free_port(), _free_port()
    workspace = home / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: {LOCATION}\n"
    )
    log = home / "webserver.log"
    procs: list[subprocess.Popen] = []

    def stop() -> None:
        # SIGTERM does not stop these servers promptly and their children (run workers) share their process groups
        for proc in procs:
            trackers = _kill_group_but_trackers(proc.pid)
            proc.wait(timeout=30)
            _reap_trackers(trackers)
        procs.clear()

    atexit.register(stop)
    try:
        with open(home / "code-server.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dagster"),
                        "code-server",
                        "start",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(grpc_port),
                        "-m",
                        "curation_assets.defs",
                        "--location-name",
                        LOCATION,
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + LOAD_TIMEOUT
        while subprocess.run(
            [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(grpc_port)], capture_output=True, env=env
        ).returncode:
            assert time.monotonic() < deadline, (home / "code-server.log").read_text()[-4000:]
            time.sleep(0.5)
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        ws = Webserver(port, procs[-1], log, data_root)
        ws.stop = stop
        _wait_loaded(ws)
        return ws
    except BaseException:
        stop()
        raise


ADD_PARTITION_M = """
mutation($repo: RepositorySelector!, $def: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $def, partitionKey: $key) {
    __typename ... on AddDynamicPartitionSuccess { partitionsDefName partitionKey }
    ... on PythonError { message } ... on UnauthorizedError { message } } }"""


def run_books(webserver: Webserver) -> tuple[str, object, float]:
    """Register partition `books` and run ingest_source for it through GraphQL; (run_id, final status, seconds)."""
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient

    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    added = webserver.gql(ADD_PARTITION_M, {"repo": repo, "def": "source", "key": PARTITION})["addDynamicPartition"]
    assert added == {
        "__typename": "AddDynamicPartitionSuccess",
        "partitionsDefName": "source",
        "partitionKey": PARTITION,
    }, added

    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver.port)
    t0 = time.monotonic()
    run_id = client.submit_job_execution(
        "ingest_source", repository_location_name=LOCATION, tags={"dagster/partition": PARTITION}
    )
    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    while (status := client.get_run_status(run_id)) not in done:
        if time.monotonic() - t0 > RUN_TIMEOUT:
            break
        time.sleep(0.5)
    return run_id, status, time.monotonic() - t0


@background.job("ui_books_run", cost=45, light=True)  # light: it waits for servers and a run to come up
def _ui_books_run(tmp: Path) -> tuple[Webserver, tuple[str, object, float]]:
    """The servers come up and the books run is launched while the session's other tests run."""
    ws = start_webserver(tmp)
    try:
        return ws, run_books(ws)
    except BaseException:
        ws.stop()
        raise


@pytest.fixture(scope="module")
def webserver(ui_books_run) -> Webserver:
    ws, _ = ui_books_run
    yield ws
    ws.stop()


@pytest.fixture(scope="module")
def ui_books_run():
    return background.result("ui_books_run")


@pytest.fixture(scope="module")
def books_run(ui_books_run) -> tuple[str, object, float]:
    return ui_books_run[1]


ASSET_KEYS_Q = """
query($repo: RepositorySelector!) { repositoryOrError(repositorySelector: $repo) { __typename
  ... on Repository { assetNodes { assetKey { path } partitionDefinition { name } } }
  ... on PythonError { message } } }"""

RUN_Q = """
query($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { status tags { key value }
    eventConnection(afterCursor: null) { events { __typename
      ... on ExecutionStepFailureEvent { stepKey error { message } }
      ... on AssetCheckEvaluationEvent { evaluation { checkName success partition assetKey { path } } } } } } } }"""

MATERIALIZATIONS_Q = """
query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { __typename
  ... on Asset { assetMaterializations(partitions: $partitions) { runId partition
    metadataEntries { label __typename
      ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } } } } } }"""

CHECK_EXECUTIONS_Q = """
query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 5) {
    runId status evaluation { success targetMaterialization { runId } } } }"""


def test_graphql_curate_books(webserver, books_run):
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    nodes = webserver.gql(ASSET_KEYS_Q, {"repo": repo})["repositoryOrError"]["assetNodes"]
    keys = sorted("/".join(n["assetKey"]["path"]) for n in nodes)
    assert keys == sorted(ASSETS)
    assert {"/".join(n["assetKey"]["path"]): (n["partitionDefinition"] or {}).get("name") for n in nodes} == {
        "raw": "source",
        "annotated": "source",
        "quality_model": None,
        "filtered": "source",
        "dedup_signatures": "source",
        "dedup_clusters": None,
        "decontam_index": None,
        "deduped": "source",
        "synthetic": "source",
        "mixed": None,
        "tokenized": None,
    }

    run_id, status, seconds = books_run
    run = webserver.gql(RUN_Q, {"id": run_id})["runOrError"]
    failures = [
        (e["stepKey"], (e["error"] or {}).get("message"))
        for e in run["eventConnection"]["events"]
        if e["__typename"] == "ExecutionStepFailureEvent"
    ]
    assert status.value == "SUCCESS", (
        f"ingest_source[{PARTITION}] ended {status.value} after {seconds:.0f}s; step failures: {failures}\n"
        f"webserver log tail:\n{webserver.log_tail()}"
    )
    assert {t["key"]: t["value"] for t in run["tags"]}["dagster/partition"] == PARTITION

    # raw[books]: one materialization, from this run, with the step metadata
    (mat,) = webserver.gql(MATERIALIZATIONS_Q, {"key": {"path": ["raw"]}, "partitions": [PARTITION]})["assetOrError"][
        "assetMaterializations"
    ]
    assert (mat["runId"], mat["partition"]) == (run_id, PARTITION)
    md = {e["label"]: e.get("intValue", e.get("floatValue")) for e in mat["metadataEntries"]}
    for label in ("rows_in", "rows_out", "tokens_est"):  # raw counts no token: its estimate is labelled as one
        assert isinstance(md.get(label), int) and md[label] > 0, (label, md)
    assert md["rows_out"] <= md["rows_in"]

    # raw's checks: evaluated in this run and passed, both in the run's events and in the check-execution API. The check
    # specs are unpartitioned, so an evaluation carries partition None (or the run's partition if they become partitioned)
    evals = {
        e["evaluation"]["checkName"]: e["evaluation"]
        for e in run["eventConnection"]["events"]
        if e["__typename"] == "AssetCheckEvaluationEvent" and e["evaluation"]["assetKey"]["path"] == ["raw"]
    }
    assert {"records_accounted", "drop_rate"} <= set(evals), evals
    failed = {name: ev for name, ev in evals.items() if not ev["success"]}
    assert not failed, f"checks of raw failed: {failed}"
    for check in ("records_accounted", "drop_rate"):
        assert evals[check]["success"] is True and evals[check]["partition"] in (None, PARTITION), evals[check]
        (ex,) = webserver.gql(CHECK_EXECUTIONS_Q, {"key": {"path": ["raw"]}, "check": check})["assetCheckExecutions"]
        assert ex["runId"] == run_id and ex["status"] == "SUCCEEDED" and ex["evaluation"]["success"] is True, ex
        assert ex["evaluation"]["targetMaterialization"]["runId"] == run_id, ex

    # the IO manager wrote under the throw-away data root, not the repo's default
    assert any(webserver.data_root.rglob("*.parquet")), list(webserver.data_root.rglob("*"))[:20]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's `chromium` package (.ci/run does it when run as root "
            "or with sudo); playwright's own browser downloads are not used"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.browser
def test_browser_asset_pages(webserver, books_run, browser, tmp_path):
    from playwright.sync_api import expect

    run_id, status, _ = books_run
    assert status.value == "SUCCESS", f"ingest_source[{PARTITION}] ended {status.value}; see test_graphql_curate_books"
    # the UI greets a new instance with a "Join the Dagster community" modal over every page; mark it seen
    assert webserver.gql("mutation { setNuxSeen }")["setNuxSeen"] is True

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    step = "start"

    def visit(name: str, path: str) -> None:
        nonlocal step
        step = name
        page.goto(f"{webserver.url}{path}", wait_until="domcontentloaded")

    try:
        # raw's partitions view on books: the partition is materialized by this run, with the step metadata
        visit("raw_partition", f"/assets/raw?view=partitions&partition={PARTITION}")
        expect(page.get_by_text("Materialized (1)", exact=True)).to_be_visible()  # books is the only partition
        expect(page.get_by_text("Missing (0)", exact=True)).to_be_visible()
        expect(page.get_by_text(PARTITION, exact=True).first).to_be_visible()
        expect(page.get_by_text("Latest materialization", exact=True)).to_be_visible()
        expect(page.get_by_text(run_id[:8], exact=True)).to_be_visible()  # the run link shows the short run id
        expect(page.get_by_text("ingest_source", exact=False).first).to_be_visible()
        for label in ("rows_in", "rows_out", "tokens_est"):
            expect(page.get_by_text(label, exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp_path / "raw_partition.png"), full_page=True)

        # raw's checks tab: both checks succeeded
        visit("raw_checks", "/assets/raw?view=checks")
        expect(page.get_by_text(re.compile(r"^Checks \(\d+\)$"))).to_be_visible()
        for check in ("records_accounted", "drop_rate"):
            row = page.locator("span").filter(has=page.locator(f'[title="{check}"]'))
            expect(row.first).to_contain_text("Succeeded")
        page.screenshot(path=str(tmp_path / "raw_checks.png"), full_page=True)

        # the catalog lists the nine assets, each linking to its page
        visit("catalog", "/assets")
        for asset in sorted(ASSETS):
            expect(page.locator(f'a[href="/assets/{asset}"]').first).to_be_visible()
        page.screenshot(path=str(tmp_path / "catalog.png"), full_page=True)

        # the global lineage lays the stages out as columns, one group each, left to right in pipeline order
        visit("lineage", "/asset-groups")
        boxes = [page.get_by_text(group, exact=True).last for group in STAGES]
        for box in boxes:
            expect(box).to_be_visible()
        xs = [box.bounding_box()["x"] for box in boxes]
        assert xs == sorted(xs), dict(zip(STAGES, xs))
        page.screenshot(path=str(tmp_path / "lineage.png"), full_page=True)
        # each group's own lineage draws a node per asset of the stage: together, the nine assets
        drawn = []
        for group in STAGES:
            visit(f"group_{group}", f"/locations/{LOCATION}/asset-groups/{group}/lineage")
            nodes = page.locator('[class*="AssetNode_assetName"]')
            expect(nodes.first).to_be_visible()
            drawn += nodes.all_inner_texts()
        assert sorted(drawn) == sorted(ASSETS)
    except Exception:
        page.screenshot(path=str(tmp_path / f"failure_{step}.png"), full_page=True)
        raise
    finally:
        page.close()
    assert not page_errors, f"JavaScript errors in the UI: {page_errors}"


@pytest.mark.browser
def test_browser_step_pages_show_the_agreed_keys_and_no_share_out_of_range(
    webserver, books_run, browser, sample_run, tmp_path
):
    """Issue 17 item 6: the pages of `filtered` and `mixed`, with what the whole graph recorded for them (the
    shared sample run's latest materializations, reported into this webserver's instance), show at most MAX_KEYS
    metadata rows (the asset's definition metadata included), no `data_*`/`source_*`/per-reason key, and every share
    they render (funnel, mixture) lies within 0..100 %."""
    import dagster as dg
    from playwright.sync_api import expect

    from resources.metadata import MAX_KEYS
    from tests.helpers import open_instance

    assert books_run[1].value == "SUCCESS", "see test_graphql_curate_books"
    shown = {"filtered": PARTITION, "mixed": None}
    with open_instance(sample_run.home) as src, open_instance(webserver.log.parent) as dst:  # the webserver's home
        for asset, partition in shown.items():
            flt = dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
            )
            (rec,) = src.fetch_materializations(flt, limit=1).records
            m = rec.asset_materialization
            dst.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, metadata=m.metadata))
    assert webserver.gql("mutation { setNuxSeen }")["setNuxSeen"] is True

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        for asset in shown:
            page.goto(f"{webserver.url}/assets/{asset}", wait_until="domcontentloaded")
            table = page.locator('[class*="assetEventMetadataScrollContainer"] > table').first
            expect(table.get_by_text("rows_out", exact=True)).to_be_visible()
            expect(table.get_by_text("| ", exact=False)).to_have_count(0)  # the Markdown tables render as tables
            page.screenshot(path=str(tmp_path / f"{asset}.png"), full_page=True)
            keys = table.locator(":scope > tbody > tr > td:first-child").all_inner_texts()
            assert len(keys) <= MAX_KEYS, (asset, keys)
            assert not [k for k in keys if k.startswith(("data_", "source_", "dropped_", "tokens_dropped_", "share_"))]
            shares = [float(x) for x in re.findall(r"(-?[\d.]+)\s*%", table.inner_text())]
            assert shares and all(0 <= x <= 100 for x in shares), (asset, shares)
    except Exception:
        page.screenshot(path=str(tmp_path / "failure_step_pages.png"), full_page=True)
        raise
    finally:
        page.close()


RUNS_Q = """
{ runsOrError { __typename ... on Runs { results { runId status jobName tags { key value } } } } }"""
ARTIFACTS = REPO / ".curation" / "test-artifacts"  # screenshots kept after the run (tmp_path is cleaned up)


@pytest.mark.browser
def test_browser_launches_one_source_partition_and_the_run_succeeds(webserver, books_run, browser, tmp_path):
    """What an operator does: open `raw`, Materialize…, pick the `books` partition, Launch 1 run; the toast names
    the run, which succeeds and materializes raw[books]. The run page is saved as a screenshot artefact."""
    from playwright.sync_api import expect

    assert books_run[1].value == "SUCCESS"  # the partition exists and the location works (previous tests)
    webserver.gql("mutation { setNuxSeen }")
    before = {r["runId"] for r in webserver.gql(RUNS_Q)["runsOrError"]["results"]}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        page.goto(f"{webserver.url}/assets/raw", wait_until="domcontentloaded")
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Launch runs to materialize raw")).to_be_visible()
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_role("menuitem").filter(has_text=PARTITION).first.click()
        page.keyboard.press("Escape")  # close the partition menu, keep the dialog
        launch = dialog.get_by_role("button", name="Launch 1 run")
        expect(launch).to_be_enabled()
        expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "launch_dialog.png"))
        launch.click()
        toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))
        expect(toast).to_be_visible()
        short = toast.inner_text().split()[-1]

        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            runs = [r for r in webserver.gql(RUNS_Q)["runsOrError"]["results"] if r["runId"] not in before]
            assert len(runs) <= 1, runs  # exactly the run the button launched
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            assert time.monotonic() < deadline, f"run {short} not finished after {RUN_TIMEOUT}s: {runs}"
            time.sleep(0.5)
        (run,) = runs
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert run["runId"].startswith(short) and run["status"] == "SUCCESS", (run, webserver.log_tail())
        assert tags["dagster/partition"] == PARTITION and run["jobName"] == "__ASSET_JOB"

        page.goto(f"{webserver.url}/runs/{run['runId']}", wait_until="domcontentloaded")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        expect(page.get_by_text(re.compile("Finished execution of run")).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "launched_run.png"))
        mats = webserver.gql(MATERIALIZATIONS_Q, {"key": {"path": ["raw"]}, "partitions": [PARTITION]})
        assert run["runId"] in {m["runId"] for m in mats["assetOrError"]["assetMaterializations"]}
        page.goto(f"{webserver.url}/asset-groups", wait_until="domcontentloaded")
        for group in STAGES:
            expect(page.get_by_text(group, exact=True).last).to_be_visible()
        page.wait_for_timeout(2000)  # node colours (materialization status) load after the names; for the picture
        page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure_launch.png"), full_page=True)
        raise
    finally:
        page.close()
