"""Reliability: crash safety, determinism, write-once protected versions and one writer per asset partition.

The pipeline runs as real run workers (processes running `curation run`, forked by tests/workers.py) on the bundled
`web` and `books` sources with a two-source recipe, on throw-away instances and data roots. The worker scenarios are
background jobs (tests/background.py): they run while the session's other tests do.
"""

import functools
import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from curation_assets.cli import main as cli_main
from curation_assets.config import load_config
from curation_assets.config.settings import Settings
from curation_assets.core.frames import FileSetOutput
from curation_assets.defs.jobs import ASSETS
from resources import build_resources
from resources.store import ObjectStore
from resources.versions import PROTECTED, ProtectedVersionError
from tests.background import background, clean_env, workers
from tests.helpers import instance_home, local_settings, mini_config, s3_server


def worker_env(tmp_path: Path, root, home: Path, **extra) -> dict[str, str]:
    """The environment of a run worker on the web + books config, its own data root and instance; its partitions one
    at a time and without Ray (CURATION_WORKERS=0), so every write happens in the worker itself (the faults of Ray
    workers: tests/resources/test_engine.py)."""
    instance_home(home)
    return clean_env(**mini_config(tmp_path / "config"), CURATION_DATA_ROOT=root, DAGSTER_HOME=home, **extra)


def worker(tmp_path: Path, root: Path, home: Path, *crash_in: str):
    """`curation run` in a run worker, SIGKILLed in the middle of writing the asset `crash_in` when given: its exit
    code and what it printed."""
    log = tmp_path / f"{home.name}-{len(list(tmp_path.glob(home.name + '-*.log')))}.log"
    task = ["crash", crash_in[0], "run"] if crash_in else ["cli", "run"]
    code = workers.run(task, worker_env(tmp_path, root, home), log)
    return code, log.read_text(errors="replace")


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of every asset partition's current version, by `<asset>/<partition>/<path in version>`."""
    out = {}
    for manifest in sorted(root.glob("*/*/_latest.json")):
        version = manifest.parent / json.loads(manifest.read_text())["version"]
        for f in sorted(p for p in version.rglob("*") if p.is_file()):
            out[f"{manifest.parent.relative_to(root)}/{f.relative_to(version)}"] = hashlib.sha256(
                f.read_bytes()
            ).hexdigest()
    return out


def versions_of(root: Path, asset: str) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob(f"{asset}/*/*") if p.is_dir()}


def assert_nothing_partial(root: Path) -> None:
    """Every file under the root is complete: no temp files, Parquet files read, JSON parses; every version
    folder is one that a manifest published (now or before)."""
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        assert not f.name.startswith(".tmp"), f
        if f.suffix == ".parquet":
            pq.ParquetFile(f).read()
        elif f.suffix == ".json":
            json.loads(f.read_text())


@background.job("crash_and_rerun", cost=45)
def crash_and_rerun(tmp_path: Path) -> None:
    # An undisturbed run: the reference. (That two clean runs write the same bytes - another instance, another data
    # root - is tests/test_pipeline.py's S3 run against the session's local run, every file of every asset.)
    code, output = worker(tmp_path, tmp_path / "clean", tmp_path / "home-clean")
    assert code == 0, output[-5000:]
    reference = snapshot(tmp_path / "clean")
    assert {k.split("/")[0] for k in reference} == set(ASSETS)

    # Crash safety: one worker dies in each asset's write in turn; each rerun resumes on the same instance and root.
    # The outputs of the reruns are the undisturbed run's, byte for byte (so each rerun is deterministic, too).
    root, home = tmp_path / "crashed", tmp_path / "home-c"
    for asset in ASSETS:
        before = versions_of(root, asset)
        code, output = worker(tmp_path, root, home, asset)
        assert code == -9, (asset, code, output[-3000:])
        assert versions_of(root, asset) == before, f"{asset}: a version appeared although its writer died"
        assert_nothing_partial(root)
    code, output = worker(tmp_path, root, home)
    assert code == 0, output[-3000:]
    assert snapshot(root) == reference, "after the crashes, the outputs differ from an undisturbed run"
    assert_nothing_partial(root)


@pytest.mark.slow
@pytest.mark.background("crash_and_rerun")
def test_a_worker_killed_in_the_middle_of_each_assets_write_leaves_nothing_partial_and_the_rerun_is_identical():
    background.result("crash_and_rerun")  # the scenario and its assertions: crash_and_rerun above


def materialize(io, asset: str, partition: str | None, payload: bytes) -> str:
    """One version of `asset` through the IO manager (a file set, like tokenized's); returns its version."""
    ctx = dg.build_output_context(asset_key=dg.AssetKey(asset), partition_key=partition, run_id=os.urandom(16).hex())
    io.handle_output(ctx, FileSetOutput(files=iter([("data.bin", payload)])))
    return io.manifest(dg.AssetKey(asset), partition)["version"]


def io_manager(root: str, endpoint: str | None = None):
    settings = Settings(data_root=root, s3_endpoint=endpoint)
    return build_resources(settings, load_config().costs.model_dump())["io_manager"].model_copy(
        update={"keep_versions": 1}
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_versions_are_write_once_and_protected_versions_survive_pruning_and_removal(where, tmp_path, request, capsys):
    endpoint = request.getfixturevalue("s3_endpoint") if where == "s3" else None
    root = str(tmp_path / "data") if where == "local" else f"s3://curation/protect-{os.urandom(4).hex()}"
    io = io_manager(root, endpoint)
    store = ObjectStore(endpoint_url=endpoint)

    # A config change or a rerun writes beside: every materialization is a new version, none overwritten.
    part = {"tokenized": None, "filtered": "web"}  # tokenized is not partitioned (its folder is _all)
    made = {a: [materialize(io, a, p, f"{a} v{i}".encode()) for i in range(3)] for a, p in part.items()}
    assert PROTECTED == ("synthetic", "tokenized")
    if where == "local":  # pruning (keep_versions=1 here) removes old versions of filtered, never of tokenized
        assert io.versions(dg.AssetKey("tokenized"), None) == made["tokenized"]
        assert io.versions(dg.AssetKey("filtered"), "web") == made["filtered"][-1:]
    first = f"{root}/tokenized/_all/{made['tokenized'][0]}/data.bin"

    # Overwriting a version's file is refused by the store itself.
    with pytest.raises(FileExistsError):
        store.write_bytes(first, b"overwritten", create_only=True)
    assert store.read_bytes(first) == b"tokenized v0"

    # Removing: protected assets and current versions are refused, through the API and the CLI.
    for asset in PROTECTED:
        with pytest.raises(ProtectedVersionError, match="protected"):
            io.remove_version(dg.AssetKey(asset), part.get(asset, "web"), made["tokenized"][0], reason="disk full")
    with pytest.raises(ProtectedVersionError, match="current version"):
        io.remove_version(dg.AssetKey("filtered"), "web", made["filtered"][-1], reason="disk full")
    env = {"CURATION_DATA_ROOT": root, **({"CURATION_S3_ENDPOINT": endpoint} if endpoint else {})}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert cli_main(["remove-version", "tokenized", "_all", made["tokenized"][0], "--reason", "x"]) == 2
        assert "refused: tokenized versions are protected" in capsys.readouterr().err
        assert store.read_bytes(first) == b"tokenized v0"
        if where == "s3":  # locally the old filtered versions were pruned already; on S3 remove one explicitly
            old = made["filtered"][0]
            assert cli_main(["remove-version", "filtered", "web", old, "--reason", "ticket 7: superseded"]) == 0
            assert old not in io.versions(dg.AssetKey("filtered"), "web")
            record = json.loads(store.read_bytes(f"{root}/filtered/web/_removed/{old}.json"))
            assert record["reason"] == "ticket 7: superseded" and record["files"] == [
                f"{root}/filtered/web/{old}/data.bin"
            ]
    assert io.load_files(dg.AssetKey("tokenized"), None)["data.bin"].endswith(f"{made['tokenized'][-1]}/data.bin")


def two_writers(tmp_path: Path, where: str) -> None:
    """Two run workers (two instances, as two machines sharing the data root) materialize raw[web] at once with
    slow writes: the second waits for the first (flock locally, a lease object on S3), their write windows do not
    overlap, and the published version is complete."""
    log = tmp_path / "windows.jsonl"
    if where == "s3":
        endpoint = s3_server()
        root, extra = f"s3://curation/concurrent-{os.urandom(4).hex()}", {"CURATION_S3_ENDPOINT": endpoint}
    else:
        root, extra = tmp_path / "data", {}
    runs = [
        workers.submit(
            ["raw-slowly", str(log)], worker_env(tmp_path, root, tmp_path / f"home-{i}", **extra), tmp_path / f"{i}.log"
        )
        for i in range(2)
    ]
    codes = [r.result(timeout=600) for r in runs]
    outputs = [(tmp_path / f"{i}.log").read_text(errors="replace") for i in range(2)]
    assert codes == [0, 0], [o[-3000:] for o in outputs]
    windows = sorted((w["start"], w["end"]) for w in map(json.loads, log.read_text().splitlines()))
    assert len(windows) == 2
    (s1, e1), (s2, e2) = windows
    assert e1 <= s2, f"the writes of raw[web] interleaved: {windows}"
    assert any("another run is writing raw.web: waiting for it" in o for o in outputs)
    store = ObjectStore(endpoint_url=extra.get("CURATION_S3_ENDPOINT"))
    manifest = json.loads(store.read_bytes(f"{root}/raw/web/_latest.json"))
    published = {x.key for x in store.list_since(f"{root}/raw/web/{manifest['version']}", None)}
    assert published == {u.split(f"/{manifest['version']}/")[1] for u in manifest["parts"] + manifest["dropped"]}
    assert not store.exists(f"{root}/raw/web/_lock")  # released
    if where == "local":
        assert_nothing_partial(root)


for _where in ("local", "s3"):
    # light: the writers mostly sleep (a second per file written)
    background.job(f"two_writers_{_where}", cost=25, light=True)(lambda tmp, where=_where: two_writers(tmp, where))


@pytest.mark.parametrize(
    "where", [pytest.param(w, marks=pytest.mark.background(f"two_writers_{w}")) for w in ("local", "s3")]
)
def test_two_runs_of_the_same_partition_never_write_at_the_same_time(where):
    background.result(f"two_writers_{where}")  # the scenario and its assertions: two_writers above


@functools.cache
def small_books() -> tuple[tuple[str, bytes], ...]:
    """The bundled books shards (JSONL.zst and Parquet), each cut to its first 50 documents: two shards as before,
    small enough that three runs through the fault-injecting proxy stay quick."""
    import io

    import polars as pl
    import zstandard

    books = load_config().source("books")
    out = []
    for path in sorted(Path(load_config().resolve_uri(books.uris[0])).parent.glob("part-*")):
        if path.name.endswith(".jsonl.zst"):
            lines = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30).splitlines()
            data = zstandard.ZstdCompressor().compress(b"\n".join(lines[:50]) + b"\n")
        else:
            buf = io.BytesIO()
            pl.read_parquet(path).head(50).write_parquet(buf)
            data = buf.getvalue()
        out.append((path.name, data))
    assert [n.split(".", 1)[1] for n, _ in out] == ["jsonl.zst", "parquet"]
    return tuple(out)


def curate_books_on_s3(tmp_path, endpoint: str, root: str) -> dg.ExecuteInProcessResult:
    import yaml

    from curation_assets.defs import build_definitions
    from curation_assets.defs.jobs import ANNOTATE_SOURCE, CURATE_SOURCE, INGEST_SOURCE

    sources = tmp_path / "s3-sources.yaml"
    sources.write_text(
        yaml.safe_dump({"sources": [{"name": "books", "uris": ["s3://curation/faults-in/books/*"], "licence": "t"}]})
    )
    recipe = tmp_path / "s3-recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"books": 1}}}))
    store = ObjectStore(endpoint_url=endpoint)
    for name, data in small_books():
        store.write_bytes(f"s3://curation/faults-in/books/{name}", data)
    settings = local_settings(data_root=root, s3_endpoint=endpoint, sources=str(sources), recipe=str(recipe))
    defs = build_definitions(load_config(settings.sources, settings.recipe), settings)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["books"])
        for job in (INGEST_SOURCE, ANNOTATE_SOURCE):
            ingest = defs.resolve_job_def(job).execute_in_process(
                partition_key="books", instance=instance, raise_on_error=False
            )
            if not ingest.success:
                return ingest
        return defs.resolve_job_def(CURATE_SOURCE).execute_in_process(
            partition_key="books", instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("filtered")]
        )


@pytest.mark.s3
def test_throttling_and_dropped_connections_are_retried_and_a_permanent_error_leaves_no_partial_output(
    tmp_path, s3_proxy
):
    # Transient: the first attempt of every request is answered 503 SlowDown or dropped unanswered.
    seen: dict[tuple[str, str], int] = {}

    def flaky(method: str, path: str):
        n = seen[method, path] = seen.get((method, path), 0) + 1
        if n == 1 and "faults-" in path:
            return (503, "SlowDown") if len(seen) % 2 else "reset"
        return None

    s3_proxy.policy = flaky
    root = "s3://curation/faults-out"
    result = curate_books_on_s3(tmp_path, s3_proxy.endpoint, root)
    assert result.success, [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    kinds = {f if f == "reset" else f[1] for _, _, f in s3_proxy.injected}
    puts = {p for m, p, _ in s3_proxy.injected if m == "PUT"}
    assert kinds == {"reset", "SlowDown"} and puts and {m for m, _, _ in s3_proxy.injected} >= {"GET", "PUT"}
    io = io_manager(root, s3_proxy.endpoint)
    s3_proxy.policy = lambda m, p: None
    clean = curate_books_on_s3(tmp_path, s3_proxy.endpoint, "s3://curation/faults-clean")
    assert clean.success
    for asset in ("raw", "filtered"):
        got = io.scan(dg.AssetKey(asset), "books").collect()
        want = io_manager("s3://curation/faults-clean", s3_proxy.endpoint).scan(dg.AssetKey(asset), "books").collect()
        assert got.equals(want), asset

    # Permanent: every write of raw's second part is denied. The step fails and says what was refused; nothing
    # of that version stays in the bucket.
    s3_proxy.policy = lambda m, p: (
        (403, "AccessDenied") if m == "PUT" and "/raw/books/" in p and "part-00001" in p else None
    )
    root = "s3://curation/faults-denied"
    result = curate_books_on_s3(tmp_path, s3_proxy.endpoint, root)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "raw" and "AccessDenied" in str(failure.step_failure_data.error)
    assert "faults-denied/raw/books/" in str(failure.step_failure_data.error)
    s3_proxy.policy = lambda m, p: None
    assert ObjectStore(endpoint_url=s3_proxy.endpoint).expand(f"{root}/raw/*") == []


def test_local_writes_are_assembled_beside_the_root_never_under_it(tmp_path, monkeypatch):
    """Every local write the resources make (manifests, the LLM result cache) is a temp file in the staging
    directory beside the data root, renamed into place: nothing half-written is ever listed under the root."""
    root = tmp_path / "data"
    store = build_resources(Settings(data_root=str(root)), load_config().costs.model_dump())["store"]
    assert store.staging_dir == str(tmp_path / ".data.staging")
    renamed = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append((src, dst)), real(src, dst)))
    store.write_bytes(f"{root}/_synthetic_cache/ab/abc.json", b"{}")
    ((src, dst),) = renamed
    assert Path(src).parent == tmp_path / ".data.staging" and dst == f"{root}/_synthetic_cache/ab/abc.json"


@pytest.mark.s3
def test_an_expired_s3_lease_of_a_dead_writer_is_broken_and_a_live_one_is_waited_for(s3_endpoint):
    root = f"s3://curation/lease-{os.urandom(4).hex()}"
    io = io_manager(root, s3_endpoint).model_copy(update={"lock_timeout_s": 1.0})
    store = ObjectStore(endpoint_url=s3_endpoint)
    lock = f"{root}/tokenized/web/_lock"
    store.write_bytes(lock, json.dumps({"token": "dead", "expires": time.time() - 1}).encode())
    materialize(io, "tokenized", "web", b"after a dead writer")  # the stale lease is broken
    assert not store.exists(lock)
    store.write_bytes(lock, json.dumps({"token": "alive", "expires": time.time() + 60}).encode())
    with pytest.raises(TimeoutError, match="tokenized.web stayed locked"):
        materialize(io, "tokenized", "web", b"while another writes")
    assert json.loads(store.read_bytes(lock))["token"] == "alive"
