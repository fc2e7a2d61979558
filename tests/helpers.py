"""What several test modules share: where the shared corpus is, the loopback S3 server, reading an instance's
materializations and checks, and stand-in upstreams taken from another run's persisted outputs.

Imported as `tests.helpers` (the repository root is on `pythonpath`); the fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def _origin_checkout() -> list[Path]:
    """The checkout this one was cloned from, when it is a local path: CI clones main into a temp directory, and
    `../shared` is next to the original checkout, not next to the clone."""
    url = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    return [Path(url).resolve()] if url and "://" not in url and ":" not in url.split("/")[0] else []


def find_shared_corpus() -> Path | None:
    """The shared development corpus: $CURATION_SHARED_CORPUS, else ../shared/corpus next to the checkout or next to
    the checkout it was cloned from."""
    candidates = [Path(p) for p in (os.environ.get("CURATION_SHARED_CORPUS"),) if p] + [
        root.parent / "shared" / "corpus" for root in [REPO, *_origin_checkout()]
    ]
    return next((p for p in candidates if (p / "manifest.json").is_file()), None)


def corpus_yaml(name: str, corpus: Path, out_dir: Path) -> str:
    """A copy of the tests/fixtures YAML `name` whose `../../../shared/corpus` URIs point at `corpus`."""
    out = out_dir / name
    out.write_text((FIXTURES / name).read_text().replace("../../../shared/corpus", str(corpus)))
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the loopback S3 server -------------------------------------------------------------------------------------
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # moto serves S3 Express directory buckets (`name--use1-az4--x-s3`) as plain buckets and has no CreateSession:
    # botocore must sign them like any bucket.
    "AWS_S3_DISABLE_EXPRESS_SESSION_AUTH": "true",
}
_MOTO = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the test session closes it
server.stop()
"""
_s3_lock = threading.Lock()
_s3: dict[str, object] = {}


def s3_server() -> str:
    """The endpoint of the session's S3 server (moto, in a process of its own so that it answers at full speed
    while this process runs tests), with a `curation` bucket; started on first use, stopped when the session ends.
    The AWS_* variables of S3_ENV are the session's (`session_environment`)."""
    with _s3_lock:
        if "endpoint" not in _s3:
            import boto3

            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", _MOTO, str(port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # one line per request
                text=True,
            )
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the moto server did not start (exit {proc.wait()})")
            endpoint = f"http://127.0.0.1:{port}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="curation")
            _s3.update(endpoint=endpoint, proc=proc)
            atexit.register(stop_s3_server)
        return _s3["endpoint"]


def stop_s3_server() -> None:
    with _s3_lock:
        proc = _s3.pop("proc", None)
        _s3.pop("endpoint", None)
        if proc is not None:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def session_environment(ray_state_dir: Path, chaos_dir: Path) -> dict[str, str | None]:
    """Set what every process of the session inherits - this one, the run workers, the UI's servers and the Ray
    cluster's workers (whose environment is that of whoever starts the cluster, so it is set before anything can):
    the test credentials of the loopback S3 server (S3_ENV), the session's Ray cluster (CURATION_RAY_DIR, unless the
    caller names one) and the fault-injection directory of every Ray worker of the session (CURATION_CHAOS_DIR: inert
    until a test arms a `kill-once*` file in it, resources/engine.py). Returns the values it replaced, for
    `restore_environment`."""
    chaos_dir.mkdir(parents=True, exist_ok=True)
    wanted = {
        **S3_ENV,
        **({} if "CURATION_RAY_DIR" in os.environ else {"CURATION_RAY_DIR": str(ray_state_dir)}),
        "CURATION_CHAOS_DIR": str(chaos_dir),
    }
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    return saved


def restore_environment(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --- the session's embedded Ray cluster ---------------------------------------------------------------------------
# CPUs of the session's Ray cluster. Each Ray job (every process that runs steps: a run worker, this process) starts
# up to this many worker processes of its own, a few CPU seconds each; on this 2-core machine more slots only add
# that overhead (the crash-and-rerun scenario alone: 69 CPU s at 2, 81 at 4).
RAY_CPUS = int(os.environ.get("CURATION_TEST_RAY_CPUS", "2"))


def ray_dir() -> Path:
    """Where the session's one embedded Ray cluster is recorded (CURATION_RAY_DIR, set by tests/conftest.py): every
    run of the session - in this process, in run workers, in the UI's servers - shares it, instead of each Dagster
    instance starting (and stopping) one of its own."""
    return Path(os.environ["CURATION_RAY_DIR"])


def ensure_ray() -> str:
    """Start the session's Ray cluster unless it is up (under the cluster's file lock); its address. A `curation run`
    stops the cluster only when it started it, so runs started after this leave it up for the next."""
    from resources.local_ray import LocalCluster

    return LocalCluster(ray_dir()).start(RAY_CPUS)[0]


def stop_ray() -> None:
    """Stop the session's Ray cluster (by its own PIDs) and disconnect this process from it. `LocalCluster.stop`
    misses the cluster's Ray client server (`ray.util.client.server --address=<its GCS address>`: its command line
    does not name the cluster's temp dir, and it is re-parented to init), so that one is stopped by its address."""
    import signal
    import sys as _sys

    if "ray" in _sys.modules and _sys.modules["ray"].is_initialized():
        _sys.modules["ray"].shutdown()
    state = ray_dir() / "cluster.json" if "CURATION_RAY_DIR" in os.environ else None
    if state is None or not state.exists():
        return
    from resources.local_ray import LocalCluster

    marker = f"--address={json.loads(state.read_text())['address']}".encode()
    LocalCluster(ray_dir()).stop()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray.util.client.server" in (cmd := (proc / "cmdline").read_bytes()):
                if marker in cmd.split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def local_settings(**kw):
    """`Settings` of a local run in this session (in this process): no Ray unless `workers` is given (the steps' tasks
    in this process: a step test is about the step, tests/resources/test_engine.py about Ray), else the session's
    Ray cluster, never the one recorded in the repository's .curation/."""
    from curation_assets.config.settings import Settings

    return Settings(ray_dir=str(ray_dir()), **{"workers": 0, **kw})


# --- reading an instance --------------------------------------------------------------------------------------
def latest(instance, asset: str, partition: str | None) -> dict:
    """The metadata values of the latest materialization of `asset` (`partition`)."""
    import dagster as dg

    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None)
    (rec,) = instance.fetch_materializations(flt, limit=1).records
    return {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}


def check_results(instance) -> list[tuple[str, str, bool]]:
    """(asset, check, passed) of every check evaluation of every run of the instance."""
    import dagster as dg

    out = []
    for run_rec in instance.get_run_records():
        for ev in instance.get_records_for_run(
            run_rec.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records:
            data = ev.event_log_entry.dagster_event.event_specific_data
            out.append((data.asset_key.to_user_string(), data.check_name, data.passed))
    return out


def check_evaluation(result, check: str):
    """The evaluation of `check` in an ExecuteInProcessResult (checks run in their asset's own step)."""
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
    return evaluation


def instance_home(home: Path, coordinator: str | None = None) -> Path:
    """`home` made a DAGSTER_HOME with the embedded default's storage (deploy/local/dagster.yaml's
    `resources.instance` classes, at `home` itself rather than $DAGSTER_HOME: tests open instances by path) and
    telemetry off; `coordinator`: a run coordinator class of `dagster.core.run_coordinator` (None: Dagster's default)."""
    local = yaml.safe_load((REPO / "deploy" / "local" / "dagster.yaml").read_text())
    config = {k: local[k] for k in ("telemetry", "run_storage", "event_log_storage")}
    for storage in ("run_storage", "event_log_storage"):
        assert config[storage]["config"] == {"home": {"env": "DAGSTER_HOME"}}, config[storage]
        config[storage]["config"] = {"home": str(home)}
    if coordinator is not None:
        config["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": coordinator}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def open_instance(home: Path):
    """The persistent instance at DAGSTER_HOME `home` (read by the tests after a worker wrote it)."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(home))


# --- stand-in upstreams ----------------------------------------------------------------------------------------
def stage(from_root: Path, to_root: Path, asset: str, partition: str | None = None) -> None:
    """Make the current version of `asset[partition]` under the data root `from_root` the current one under
    `to_root`, without copying data: the copy of its manifest names the files by absolute path (a manifest's absolute
    paths are used as they are), so it reads the original files (never written: a step writes its own output under
    `to_root`)."""
    from resources.versions import resolved

    part = partition or "_all"
    manifest = json.loads((from_root / asset / part / "_latest.json").read_text())
    target = to_root / asset / part / "_latest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(resolved(manifest, str(from_root.resolve()))))


def mini_config(out_dir: Path, sources=("web", "books"), recipe_name: str = "web-books") -> dict[str, str]:
    """CURATION_SOURCES and CURATION_RECIPE of `sources` of the bundled sample (by default web and books: the
    quality model's background and reference) with equal recipe weights."""
    from curation_assets.config import load_config

    cfg = load_config()
    listed = [
        {"name": s, "uris": [cfg.resolve_uri(u) for u in cfg.source(s).uris], "licence": cfg.source(s).licence}
        for s in sources
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sources.yaml").write_text(yaml.safe_dump({"sources": listed}))
    weights = dict.fromkeys(sources, 1)
    (out_dir / "recipe.yaml").write_text(yaml.safe_dump({"recipe": {"name": recipe_name, "weights": weights}}))
    return {"CURATION_SOURCES": str(out_dir / "sources.yaml"), "CURATION_RECIPE": str(out_dir / "recipe.yaml")}


def snapshot(store, root: str, partitions: dict[str, list[str | None]]) -> dict[str, str]:
    """sha256 of every file of the current version of each asset partition under the data root `root` (a local
    directory or s3://), by `<asset>/<partition>/<path within the version>` (`data/part-00000.parquet`): `partitions`
    maps an asset to its partitions (None: unpartitioned). The files are the ones the manifest names (parts, dropped
    rows, side tables, a file set)."""
    import hashlib

    from resources.versions import resolved

    out = {}
    for asset, parts in partitions.items():
        for partition in parts:
            folder = f"{root.rstrip('/')}/{asset}/{partition or '_all'}"
            manifest = resolved(json.loads(store.read_bytes(f"{folder}/_latest.json")), root)
            uris = [*manifest.get("parts", []), *manifest.get("dropped", [])]
            uris += [*manifest.get("side", {}).values(), *manifest.get("files", {}).values()]
            within = f"/{manifest['version']}/"
            for uri in uris:
                out[f"{asset}/{partition or '_all'}/{uri.split(within, 1)[1]}"] = hashlib.sha256(
                    store.read_bytes(uri)
                ).hexdigest()
    return out


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    """Poll `predicate` until it is truthy (returns its value); TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(poll)
    return value
