"""`curation run|table|versions|remove-version|prune|validate|sql|paths|sources`: the graph on a persistent instance.

`run` registers every configured source as a `source` partition and runs the jobs, each as soon as the ones it
needs are done (`defs.jobs.job_graph`): `ingest_source` per source, `annotate_source` per source (after its raw) and
`train_quality_model` (after its sources' raw), `curate_source` per source (after its annotated and the model),
`dedupe_corpus`, `finish_source` per source, `build_mixture`; then prints the per-asset table. A job whose prerequisite
failed is not run (one line says so).
A job is skipped when the data root says its outputs are current: every asset's manifest records the config version it
was made with and its inputs (the content of each upstream version it read; raw: its source files' fingerprint), and
these equal what the job would use now (and this instance recorded no failed blocking check on them). The data root,
not the instance, is the record, so instances sharing a data root never serve each other's outputs made with another
config; re-running is fast and changes nothing; `--force` re-runs everything. Runs are recorded in the instance at
$DAGSTER_HOME, so `dagster dev` shows them. `validate` loads and checks the environment and every config file without
running anything (and without importing Dagster).

This module imports only the standard library at import time: Dagster, polars, the config models and `resources`
are imported inside the commands, so `curation --help` answers at once. `python -m curation_assets.cli` is an alias.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only (the module has `from __future__ import annotations`)
    from collections.abc import Callable

    import dagster as dg

    from curation_assets.config import CurationConfig
    from curation_assets.config.settings import Settings
    from resources.io_manager import ParquetIOManager
    from resources.store import ObjectStore

EXIT_CONFIG = 2  # a config or environment problem (the lines name the file and key), or a refused remove-version
ENVIRONMENT = """environment:
  CURATION_SOURCES, CURATION_RECIPE, CURATION_THRESHOLDS, CURATION_COSTS   the config files (default: the bundled ones)
  CURATION_DATA_ROOT   where outputs go (default .curation/data); CURATION_ENV  local (default) or k8s
  DAGSTER_HOME         the Dagster instance runs are recorded in (make run: .curation/dagster)
  CURATION_WORKERS     CPUs of the embedded Ray cluster (default: every core); CURATION_RAY_ADDRESS  an existing one
exit codes: 0 ok, 1 a job failed, 2 a config or environment problem (one line each: <file>: <key.path>: <message>)"""


def _asset_lists() -> dict[str, tuple[str, ...]]:
    from curation_assets.defs.jobs import JOB_ASSETS, SOURCE_JOBS

    return {
        "SOURCE_ASSETS": tuple(a for job in SOURCE_JOBS for a in JOB_ASSETS[job]),
        "ALL_ASSETS": tuple(a for assets in JOB_ASSETS.values() for a in assets),  # in rebuild order
    }


def __getattr__(name: str) -> Any:
    """`ALL_ASSETS` (in job order) and `SOURCE_ASSETS` (partitioned by source), computed on first use (they need the
    definitions, which import Dagster)."""
    if name in ("ALL_ASSETS", "SOURCE_ASSETS"):
        return _asset_lists()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _store(settings: Settings) -> ObjectStore:
    from resources.store import ObjectStore

    return ObjectStore(endpoint_url=settings.s3_endpoint, region=settings.region)


def data_root_problem(settings: Settings) -> str | None:
    """One line when the data root cannot be written (a path through a file, a directory we may not write, a bucket
    that does not exist or refuses us, an unreachable endpoint), found by writing and deleting an empty probe object
    where versions are written (the root, and locally its staging directory); None when it can. Before any run:
    otherwise the first step fails with a message about a `.staging` path the user never set."""
    from curation_assets.config.errors import short
    from resources.versions import staging_dir_for

    store, root = _store(settings), settings.data_root.rstrip("/")
    try:
        for where in filter(None, (root, staging_dir_for(root))):
            probe = f"{where}/.curation-write-probe-{os.getpid()}"
            store.write_bytes(probe, b"")
            store.delete(probe)
    except Exception as e:  # whatever the store raises is the reason: OSError, botocore's errors
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        return f"environment: CURATION_DATA_ROOT: {short(root, 200)} cannot be written ({reason})"
    return None


def io_manager(cfg: CurationConfig, settings: Settings) -> ParquetIOManager:
    """The IO manager the deployment builds for these settings (the data root's reader and writer)."""
    from curation_assets.defs.deployment import deployment

    return deployment(cfg, settings).resources["io_manager"]


def source_files(cfg: CurationConfig, store: ObjectStore, source: str) -> list[tuple[str, int]]:
    """(file, bytes) of every file `source`'s URIs match, listed once per `curation run`."""
    return [f for uri in cfg.source(source).uris for f in store.expand(cfg.resolve_uri(uri))]


def source_fingerprint(cfg: CurationConfig, source: str, matched: list[tuple[str, int]]) -> str:
    """The fingerprint of what raw reads for `source`: its config, raw's config version and every `matched` file
    (`source_files`; with its size and modification time locally). raw's manifest records it (run tag SOURCES_TAG)."""
    from curation_assets.config.versions import asset_versions as versions
    from resources.store import kind_of

    files = [f for f, _ in matched]
    stats = [(f, *((os.stat(f).st_size, os.stat(f).st_mtime_ns) if kind_of(f) == "local" else ())) for f in files]
    payload = [cfg.source(source).model_dump(mode="json"), versions(cfg)["raw"], stats]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def current_inputs(
    io: ParquetIOManager, graph, instance: dg.DagsterInstance, asset: str, partition: str | None
) -> dict[str, str]:
    """What `asset[partition]` would be made from now, as its manifest records `inputs`: label -> content of each
    upstream version Dagster would load (a fan-in: the mapped partitions that have been materialized)."""
    import dagster as dg

    key, inputs = dg.AssetKey(asset), {}
    for parent in graph.get(key).parent_keys:
        parent_def = graph.get(parent).partitions_def
        if parent_def is None or partition is not None:  # unpartitioned, or the same source (identity)
            partitions = [partition if parent_def is not None else None]
        else:
            mapped = graph.get_partition_mapping(key, parent).get_upstream_mapped_partitions_result_for_partitions(
                None, None, parent_def, dynamic_partitions_store=instance
            )
            partitions = mapped.partitions_subset.get_partition_keys()
        for p in partitions:
            if (m := io.manifest(parent, p)) is not None:
                inputs[io.label(parent, p)] = io.content(m)
    return inputs


def is_current(
    io: ParquetIOManager,
    graph,
    instance: dg.DagsterInstance,
    config_versions: dict[str, str],
    assets: tuple[str, ...],
    partition: str | None,
    sources: str | None,
) -> bool:
    """Whether the data root's manifests say each of `assets` (one job's, in order) is current for `partition`: made
    with today's config version from today's inputs (`sources`: the source fingerprint a root asset, raw, records),
    and no blocking check of its latest materialization in this instance failed (on the same data it fails again:
    the job runs and stops the stages after it, as it did)."""
    import dagster as dg

    from curation_assets.steps.common import failed_checks_of_latest

    for asset in assets:
        key = dg.AssetKey(asset)
        m = io.manifest(key, partition)
        want = current_inputs(io, graph, instance, asset, partition)
        if sources and not graph.get(key).parent_keys:
            want["sources"] = sources
        if m is None or m.get("config_version") != config_versions[asset] or m.get("inputs") != want:
            return False
        checks = [c.name for c in graph.get_check_keys_for_assets([key])]
        if failed_checks_of_latest(instance, asset, checks, [partition]):
            return False
    return True


# The terminal gets one line per run and, under a failed one, one line per failed step (its root cause); Dagster's
# per-event lines (hundreds per run, a failure's stack among them) stay in the instance's event log, where the UI
# shows them.
QUIET = {"console": {"config": {"log_level": "CRITICAL"}}}


def _execute(
    defs, instance: dg.DagsterInstance, job: str, partition: str | None, tags: dict
) -> tuple[bool, str, float, list[str]]:
    """(succeeded, run id, seconds, one line per failed step: its error) of one run of `job` for `partition`, in
    this process."""
    start = time.perf_counter()
    job_def = defs.resolve_job_def(job)
    config = {}
    if partition is not None and job_def.partitioned_config is not None:  # run_config replaces it: merge
        config = dict(job_def.partitioned_config.get_run_config_for_partition_key(partition))
    res = job_def.execute_in_process(
        run_config={**config, "loggers": QUIET},
        partition_key=partition,
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )
    failures = [
        f"{e.step_key}: {_root_cause(e.step_failure_data.error)}"
        for e in res.all_events
        if e.is_step_failure and e.step_failure_data.error is not None
    ]
    return res.success, res.run_id, time.perf_counter() - start, failures


def _root_cause(error) -> str:
    """The innermost error of a step failure, on one line, without its exception class's module path."""
    while error.cause is not None:
        error = error.cause
    message = " ".join(line.strip() for line in (error.message or "").strip().splitlines() if line.strip())
    head, sep, rest = message.partition(": ")
    return (rest if sep and "." in head and " " not in head else message)[:500]


_WORKER: dict[str, object] = {}  # a pool worker's definitions and instance, built once per process


def _init_worker(instance_ref, settings: Settings) -> None:
    import multiprocessing

    import dagster as dg

    from curation_assets.defs import build_definitions, config_for
    from resources.engine import DRIVER_SLOT

    # each job worker's tasks start at a runner of their own: its number among this process's children, the last
    # part of its name (`ForkProcess-N`), consecutive within a pool
    os.environ[DRIVER_SLOT] = multiprocessing.current_process().name.rpartition("-")[2].rpartition(":")[2]
    _WORKER["instance"] = dg.DagsterInstance.from_ref(instance_ref)  # its own connections, never the parent's
    if "defs" not in _WORKER:  # not inherited (a fork server's worker)
        _WORKER["defs"] = build_definitions(config_for(settings), settings)


def _execute_in_worker(job: str, partition: str | None, tags: dict) -> tuple[bool, str, float, list[str]]:
    if "exit" not in _WORKER:  # registered after the first run, so it runs before Ray's and Dagster's own handlers
        _WORKER["exit"] = atexit.register(_quick_exit)
    return _execute(_WORKER["defs"], _WORKER["instance"], job, partition, tags)


def _quick_exit() -> None:
    """A job worker's exit: its runs are recorded (the instance commits each event as it happens), so it leaves Ray
    and ends without tearing down the Dagster, Ray and polars modules it loaded (about 1.5 s per worker at the end
    of every `curation run`, measured)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _pool(size: int, instance: dg.DagsterInstance, settings: Settings, defs) -> Any:
    """`size` job workers. Forked from this process when it runs no other thread (`curation run`: Dagster's import,
    the definitions and the cluster's start, a child process, start none): they inherit the imported modules and
    `defs` and open the instance anew. Else (a caller with threads, e.g. the test session) forked from a fork
    server that imported the definitions' modules once, which each worker then builds. A spawned worker imported
    everything itself: about 3.5 CPU s each, while the Ray cluster starts."""
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    if threading.active_count() == 1:
        _WORKER["defs"] = defs
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["curation_assets.defs"])
    return ProcessPoolExecutor(
        size, mp_context=context, initializer=_init_worker, initargs=(instance.get_ref(), settings)
    )


def _stop_forkserver() -> None:
    """Stop and reap the job workers' fork server (it reaped the workers): their CPU time then counts as this
    command's, as `/usr/bin/time curation run` reports it. multiprocessing's own stop (CPython 3.8+, used by its
    tests); without it the server outlives the pool until this process exits, unreaped."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


def run(
    instance: dg.DagsterInstance,
    settings: Settings,
    force: bool,
    tags: dict[str, str] | None = None,
    on_first_job: Callable[[], None] | None = None,
) -> bool:
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    import dagster as dg

    from curation_assets.config.versions import asset_versions as versions
    from curation_assets.defs import build_definitions, config_for
    from curation_assets.defs.jobs import INGEST_SOURCE, JOB_ASSETS, critical_path, job_graph
    from curation_assets.steps.common import source_partitions
    from resources.io_manager import SOURCES_TAG

    cfg = config_for(settings)
    # Jobs run as soon as the jobs they need are done (not stage by stage: one source's curate_source need not wait
    # for another's raw), each in a worker process of its own (a Dagster run executes in process there), as many at
    # once as the CPUs allow, the longest remaining chain first; an ephemeral instance cannot be shared, so it runs
    # them in turn.
    sources = list(cfg.source_names)
    parallel = (
        1
        if instance.is_ephemeral or settings.workers == 0
        else max(1, min(settings.workers or os.cpu_count() or 1, len(sources)))
    )
    defs = build_definitions(cfg, settings)
    pool = _pool(parallel, instance, settings, defs) if parallel > 1 else None
    for _ in range(parallel if pool is not None else 0):  # started now, while this process reads the data root
        pool.submit(int)
    try:
        store = _store(settings)
        known = set(instance.get_dynamic_partitions(source_partitions.name))
        instance.add_dynamic_partitions(source_partitions.name, [s for s in cfg.source_names if s not in known])
        io, graph, v = io_manager(cfg, settings), defs.resolve_asset_graph(), versions(cfg)
        quality = cfg.quality_model_params
        every = job_graph(sources, (*quality.reference, *quality.background) if quality else None)
        jobs = dict(every)  # not started yet
        matched = {s: source_files(cfg, store, s) for s in sources}
        listings = {s: source_fingerprint(cfg, s, matched[s]) for s in sources}
        sizes = {s: sum(n for _, n in matched[s]) for s in sources}
        priority = critical_path(every, sizes)

        def succeeded(node: tuple[str, str | None]) -> None:
            """`node` is done (run or current). After a source's raw, its later jobs read raw, not the source's files:
            their cost follows raw's bytes from now on."""
            nonlocal priority
            done.add(node)
            job, source = node
            if job == INGEST_SOURCE and (m := io.manifest(dg.AssetKey("raw"), source)) is not None:
                sizes[source] = int(m.get("bytes") or sizes[source])
                priority = critical_path(every, sizes)

        done: set = set()
        failed: set = set()  # failed, or not run because a job it needs failed
        running: dict[Future, tuple[str, str | None]] = {}

        def name(node: tuple[str, str | None]) -> str:
            return f"{node[0]}[{node[1]}]" if node[1] else node[0]

        def start(node: tuple[str, str | None]) -> Future | None:
            """Run `node` (None: its outputs are current, as the data root records them, and it is skipped)."""
            job, partition = node
            listing = listings[partition] if job == INGEST_SOURCE else None
            if not force and is_current(io, graph, instance, v, JOB_ASSETS[job], partition, listing):
                print(f"{name(node)}: unchanged (its config and inputs, as the data root records them), skipped")
                return None
            run_tags = {**({SOURCES_TAG: listing} if listing else {}), **(tags or {})}
            if on_first_job is not None:
                on_first_job()
            if pool is not None:
                return pool.submit(_execute_in_worker, job, partition, run_tags)
            future: Future = Future()
            future.set_result(_execute(defs, instance, job, partition, run_tags))
            return future

        while jobs or running:
            for node in [n for n, needs in jobs.items() if needs & failed]:
                failed.add(node)
                print(f"{name(node)}: not run ({', '.join(sorted(name(n) for n in jobs.pop(node) & failed))} failed)")
            ready = sorted((n for n, needs in jobs.items() if needs <= done), key=lambda n: -priority[n])
            for node in ready[: parallel - len(running)]:
                del jobs[node]
                future = start(node)
                if future is None:
                    succeeded(node)
                else:
                    running[future] = node
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                node = running.pop(future)
                success, run_id, seconds, failures = future.result()
                if success:
                    succeeded(node)
                else:
                    failed.add(node)
                print(f"{name(node)}: {'ok' if success else 'FAILED'} in {seconds:.1f} s (run {run_id})")
                for failure in failures:
                    print(f"  {failure}")
    finally:
        if pool is not None:
            pool.shutdown()
            _stop_forkserver()
    print(table(instance, cfg))
    print(mixture_report(instance, settings))
    return not failed


def table(instance: dg.DagsterInstance, cfg: CurationConfig) -> str:
    """One line per asset and partition from the latest materialization: rows in, rows out, dropped, tokens (an
    estimate where the step counted none: raw's `tokens_est`, shown `~1.2M (est.)`)."""
    import dagster as dg

    from curation_assets.core.frames import approx

    assets = _asset_lists()
    lines = [f"{'asset':<16} {'partition':<14} {'rows_in':>9} {'rows_out':>9} {'dropped':>8} {'tokens':>13}"]
    for asset in assets["ALL_ASSETS"]:
        for part in cfg.source_names if asset in assets["SOURCE_ASSETS"] else [None]:
            flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[part] if part else None)
            rec = next(iter(instance.fetch_materializations(flt, limit=1).records), None)
            md = rec.asset_materialization.metadata if rec and rec.asset_materialization else {}
            val = {k: getattr(md.get(k), "value", "-") for k in ("rows_in", "rows_out", "tokens")}
            val["rows_dropped"] = md["details"].value["rows_dropped"] if "details" in md else "-"
            if "tokens_est" in md:
                val["tokens"] = approx(md["tokens_est"].value)
            lines.append(
                f"{asset:<16} {part or cfg.recipe.name:<14} {val['rows_in']:>9} {val['rows_out']:>9} "
                f"{val['rows_dropped']:>8} {val['tokens']:>13}"
            )
    return "\n".join(lines)


def mixture_report(instance: dg.DagsterInstance, settings: Settings) -> str:
    """The latest mixture (components, tokens, epochs, shares) and the tokenized shards, as Markdown tables."""
    import dagster as dg

    from curation_assets.core.mixing import mixture_table
    from curation_assets.core.tokens import shard_table

    rec = next(iter(instance.fetch_materializations(dg.AssetKey("mixed"), limit=1).records), None)
    if rec is None:
        return ""
    parts = [mixture_table(rec.asset_materialization.metadata["details"].value["manifest"])]
    store = _store(settings)
    latest = f"{settings.data_root.rstrip('/')}/tokenized/_all/_latest.json"
    if store.exists(latest):
        from resources.versions import resolved

        files = resolved(json.loads(store.read_bytes(latest)), settings.data_root)["files"]
        parts.append(shard_table(json.loads(store.read_bytes(files["manifest.json"]))))
    return "\n\n".join(parts)


def _check_target(asset: str, partition: str, version: str | None) -> None:
    """Refuse asset, partition and version arguments that are not names of their kind (`mixed ../tokenized/_all`,
    `./synthetic web`, `../v1`) before any path is built from them: ValueError."""
    from curation_assets.config import check_source_name
    from resources.versions import UNPARTITIONED, check_version_name

    assets = _asset_lists()
    if asset not in assets["ALL_ASSETS"]:
        raise ValueError(f"{asset!r} is not an asset (one of: {', '.join(assets['ALL_ASSETS'])})")
    if asset in assets["SOURCE_ASSETS"]:
        check_source_name(partition)
    elif partition != UNPARTITIONED:
        raise ValueError(f"{asset} is not partitioned: its partition is {UNPARTITIONED}, not {partition!r}")
    if version is not None:
        check_version_name(version)


def versions_command(settings: Settings, args: argparse.Namespace) -> int:
    import dagster as dg

    from curation_assets.defs import config_for
    from resources.versions import UNPARTITIONED, ProtectedVersionError

    try:
        _check_target(args.asset, args.partition, getattr(args, "version", None))
    except ValueError as e:
        print(f"refused: {e}", file=sys.stderr)
        return EXIT_CONFIG
    io = io_manager(config_for(settings), settings)
    key, partition = dg.AssetKey(args.asset), None if args.partition == UNPARTITIONED else args.partition
    if args.command == "versions":
        current = (io.manifest(key, partition) or {}).get("version")
        for v in io.versions(key, partition):
            print(f"{v}{'  (current)' if v == current else ''}")
        return 0
    try:
        deleted = io.remove_version(key, partition, args.version, args.reason)
    except (ProtectedVersionError, FileNotFoundError, ValueError) as e:
        print(f"refused: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"removed {args.asset}[{args.partition}] {args.version}: {len(deleted)} files; reason recorded")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Load and check the environment and the four config files; print `ok: ...` lines or the problems."""
    from curation_assets.config.check import check

    _, _, lines = check(os.environ)
    print("\n".join(lines))
    return 0


def run_command(args: argparse.Namespace) -> int:
    from curation_assets.config import load_config
    from curation_assets.config.settings import Settings

    settings = Settings.from_env()
    if args.workers is not None:
        settings = dataclasses.replace(settings, workers=args.workers)
    cluster = _local_cluster(settings)
    was_up = cluster is not None and cluster.address() is not None
    if cluster is not None and not was_up:
        from resources.local_ray import adopt_orphans

        adopt_orphans()  # the cluster this command starts is its own: its daemons' CPU time is this command's
    starting: list[subprocess.Popen] = []

    def start_cluster() -> None:
        # beside this process's own start (the config, Dagster, the definitions, the job workers), not in the first
        # step (which waits for it: a start holds the cluster's lock): now when jobs will run (forced, or a source
        # never read), else with the first job that does (a run that skips every job starts no cluster)
        if cluster is not None and not was_up and not starting:
            cpus = settings.workers or os.cpu_count() or 1
            starting.append(cluster.start_in_background(cpus))

    if args.force or args.trace:
        start_cluster()
    try:
        # local source paths that match no file stop here, one line each, before Dagster is started
        cfg = load_config(settings.sources, settings.recipe, settings.thresholds, settings.costs, check_paths=True)
        if _unread_source(settings, cfg.source_names):  # its ingest will run: start the cluster now
            start_cluster()
        problem = data_root_problem(settings)
        if problem:
            print(problem, file=sys.stderr)
            return EXIT_CONFIG
        import dagster as dg

        from curation_assets.steps.common import TRACE_TAG

        with dg.DagsterInstance.get() as instance:
            tags = {TRACE_TAG: "1"} if args.trace else None
            return 0 if run(instance, settings, args.force or args.trace, tags, start_cluster) else 1
    finally:
        if starting:  # the embedded Ray cluster this command started
            starting[0].wait()
            cluster.stop()


def _unread_source(settings: Settings, sources: list[str]) -> bool:
    """Whether a local data root holds no raw of one of `sources` (a first run: every job will run), read before
    Dagster is imported (an S3 root is not asked: the cluster then starts with the first job that runs)."""
    from pathlib import Path

    from curation_assets.config import is_url

    root = settings.data_root
    return not is_url(root) and any(not Path(root, "raw", s, "_latest.json").is_file() for s in sources)


def _cpus(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a number of CPUs (0: no Ray), got {value!r}")
    return int(value)


def _versions_kept(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number of versions >= 1 (the current one is always kept), got {value!r}"
        )
    return int(value)


def _local_cluster(settings: Settings):
    """The embedded Ray cluster of this instance (None when CURATION_RAY_ADDRESS names another)."""
    from pathlib import Path

    from resources.local_ray import LocalCluster

    return None if settings.ray_address or settings.workers == 0 else LocalCluster(Path(settings.ray_dir))


def ray_stop_command(args: argparse.Namespace) -> int:
    from curation_assets.config.settings import Settings

    cluster = _local_cluster(Settings.from_env())
    pids = cluster.stop() if cluster is not None else []
    print(f"stopped the embedded Ray cluster ({len(pids)} processes)" if pids else "no embedded Ray cluster is running")
    return 0


def table_command(args: argparse.Namespace) -> int:
    import dagster as dg

    from curation_assets.config.settings import Settings
    from curation_assets.defs import config_for

    settings = Settings.from_env()
    cfg = config_for(settings)
    with dg.DagsterInstance.get() as instance:
        print(table(instance, cfg))
    return 0


def sql_command(args: argparse.Namespace) -> int:
    """`curation sql [QUERY]`: QUERY against the views of the data root's current versions, or a shell."""
    from curation_assets import sql
    from curation_assets.config.settings import Settings

    try:
        con, views = sql.connect(Settings.from_env())
        if args.query is None:
            sql.shell(con, views)
        else:
            sql.execute(con, args.query, views, sys.stdout, csv=args.csv)
    except sql.SqlError as e:
        print(f"sql: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def paths_command(args: argparse.Namespace) -> int:
    """`curation paths TABLE [--source NAME] [--glob]`: where the current version of a table is, one line each (the
    folder holding exactly its files: HF `datasets`' `data_dir`; or, for a version written before tables had
    folders and for `tokens`, the files)."""
    from curation_assets import sql
    from curation_assets.config.settings import Settings

    if args.table not in sql.VIEWS:
        print(f"paths: {args.table!r} is not a table (one of: {', '.join(sql.VIEWS)})", file=sys.stderr)
        return EXIT_CONFIG
    settings = Settings.from_env()
    found = sql.table_paths(_store(settings), settings.data_root, args.table, args.source)
    if not found:
        where = f"[{args.source}]" if args.source else ""
        print(
            f"paths: {args.table}{where} has no rows in a current version under {settings.data_root}", file=sys.stderr
        )
        return 1  # like grep: nothing found is no config problem
    for path in (p for paths in found.values() for p in paths):
        print(f"{path}/*.parquet" if args.glob and not path.endswith(".parquet") else path)  # a folder, or a file
    return 0


def prune_command(args: argparse.Namespace) -> int:
    """`curation prune [--keep N]`: delete all but the newest N versions of every unprotected asset partition of a
    local data root, never a current one (S3: a bucket lifecycle rule's job)."""
    import dagster as dg

    from curation_assets.config import SOURCE_NAME
    from curation_assets.config.settings import Settings
    from curation_assets.defs import config_for
    from resources.store import kind_of
    from resources.versions import PROTECTED, UNPARTITIONED

    settings = Settings.from_env()
    if kind_of(settings.data_root) != "local":
        print(f"prune: {settings.data_root}: old versions on S3 are removed by the bucket's lifecycle rule")
        return 0
    io, store, pruned = io_manager(config_for(settings), settings), _store(settings), 0
    for asset in _asset_lists()["ALL_ASSETS"]:
        if asset in PROTECTED:
            continue
        for partition in store.list_dirs(f"{settings.data_root.rstrip('/')}/{asset}"):
            if partition != UNPARTITIONED and not re.fullmatch(SOURCE_NAME, partition):
                continue  # never a path built from a stray folder name
            gone = io.prune(dg.AssetKey(asset), None if partition == UNPARTITIONED else partition, args.keep)
            if gone:
                print(f"{asset}[{partition}]: removed {', '.join(gone)}")
                pruned += len(gone)
    print(f"pruned {pruned} old versions; kept the newest {args.keep} (and the current one) of each partition")
    return 0


def sources_command(args: argparse.Namespace) -> int:
    """`curation sources`: every registered, configured or landed source partition, what it is and what of it the
    data root holds; `curation sources remove NAME --reason TEXT`: delete a registered partition from the instance."""
    import dagster as dg

    from curation_assets import sources
    from curation_assets.config import SOURCE_NAME
    from curation_assets.config.settings import Settings
    from curation_assets.defs import config_for
    from curation_assets.steps.common import source_partitions

    settings = Settings.from_env()
    cfg, store, root = config_for(settings), _store(settings), settings.data_root.rstrip("/")
    with dg.DagsterInstance.get() as instance:
        registered = instance.get_dynamic_partitions(source_partitions.name)
        if args.action == "remove":
            return remove_source(instance, cfg, store, settings.data_root, registered, args.name, args.reason)
        here = sources.landed(cfg, store)
        names = sorted(set(registered) | set(cfg.source_names) | set(here))
        print(f"{'source':<16} {'registered':<10} {'configured':<10} {'landed':<12} materialized")
        for name in names:
            # a key created in the UI may be no source name (`../x`): no path is built from it
            valid = re.fullmatch(SOURCE_NAME, name)
            assets = _asset_lists()["SOURCE_ASSETS"] if valid else ()
            made = [a for a in assets if store.exists(f"{root}/{a}/{name}/_latest.json")]
            print(
                f"{name:<16} {'yes' if name in registered else 'no':<10} "
                f"{'yes' if name in cfg.source_names else 'no':<10} {','.join(here.get(name, [])) or '-':<12} "
                f"{' '.join(made) or '-'}"
            )
    return 0


def remove_source(
    instance: dg.DagsterInstance,
    cfg: CurationConfig,
    store: ObjectStore,
    data_root: str,
    registered: list[str],
    name: str,
    reason: str,
) -> int:
    """Delete the registered partition `name` from the instance, unless it is configured or landed (it would be
    registered again) or has a protected output; an audit record at `<data root>/_removed/sources/<name>.<time>.json`
    (who, when, why, which instance). Data under the root is left as it is."""
    import getpass
    from urllib.parse import quote

    from curation_assets import sources
    from curation_assets.steps.common import source_partitions

    def refusal() -> str | None:
        if name not in registered:
            return f"{name!r} is not a registered source partition"
        if name in cfg.source_names or name in (here := sources.landed(cfg, store)):
            where = "configured" if name in cfg.source_names else f"landed in {', '.join(here[name])}"
            return f"{name} is {where}: it would be registered again; remove it there first"
        if kept := sources.protected_outputs(store, data_root, name):
            return f"{name} has protected outputs ({', '.join(kept)}): its partition stays"
        return None if reason.strip() else "a reason is required"

    if (why := refusal()) is not None:
        print(f"refused: {why}", file=sys.stderr)
        return EXIT_CONFIG
    at = time.time()
    record = {"source": name, "reason": reason, "by": getpass.getuser(), "at": at, "instance": instance.root_directory}
    # quoted: a key created in the UI may be `../x`, and its record must stay in the folder
    file = f"{quote(name, safe='')}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(at))}.json"
    store.write_bytes(f"{data_root.rstrip('/')}/_removed/sources/{file}", json.dumps(record).encode())
    instance.delete_dynamic_partition(source_partitions.name, name)
    print(f"removed source partition {name} from the instance; reason recorded (data under the root is kept)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="curation",
        description=__doc__.splitlines()[0].replace("`", ""),
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_cmd = sub.add_parser(
        "run",
        help="materialize every source and the recipe (skips what is unchanged), then print the table",
        description="Register every configured source, run the six jobs in order, print the table and the mixture.",
    )
    run_cmd.add_argument("--force", action="store_true", help="rerun even what is unchanged")
    run_cmd.add_argument("--trace", action="store_true", help="save a Viztracer trace beside each step's output")
    run_cmd.add_argument(
        "--workers",
        type=_cpus,
        metavar="N",
        help="CPUs of the embedded Ray cluster and partitions run at once (default: CURATION_WORKERS, else every core; "
        "0: no Ray, every task in its step's process)",
    )
    sub.add_parser(
        "table",
        help="print rows and tokens of the latest materializations",
        description="One line per asset and partition: rows in, rows out, dropped, tokens (latest materialization).",
    )
    ls = sub.add_parser(
        "versions",
        help="list the versions of an asset partition, the current one marked",
        description="List the stored versions of an asset partition; the current one is marked.",
    )
    ls.add_argument("asset")
    ls.add_argument("partition", help="the source, or _all for unpartitioned assets (mixed, tokenized, ...)")
    rm = sub.add_parser(
        "remove-version",
        help="delete one old version of an unprotected asset (never synthetic, tokenized or current)",
        description="Delete one old version of an asset partition; the reason is kept in an audit record beside it.",
    )
    rm.add_argument("asset")
    rm.add_argument("partition", help="the source, or _all for unpartitioned assets (mixed, tokenized, ...)")
    rm.add_argument("version", help="a version folder name (see `versions`)")
    rm.add_argument("--reason", required=True, help="recorded in the audit record beside the removed version")
    q = sub.add_parser(
        "sql",
        help="SQL over the current version of every asset (DuckDB views); without QUERY an interactive shell",
        description="Run QUERY (or, without one, a shell) on DuckDB views of the current version of every asset\n"
        "partition under the data root: raw, quarantine, filtered, filter_ledger, dedup_signatures, dedup_ledger,\n"
        "deduped, synthetic, mixed, tokens, and drops (every dropped row, with `asset`). A bad query or an unknown\n"
        "view is one line and exit code 2.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("query", nargs="?", help="one SQL statement (omit for the shell)")
    q.add_argument("--csv", action="store_true", help="every row as CSV with a header (default: DuckDB's table)")
    pa = sub.add_parser(
        "paths",
        help="print where the current version of a table is (a folder per partition: HF datasets' data_dir)",
        description="Print, one line per partition, the folder of the current version that holds exactly the\n"
        "rows of TABLE (a `curation sql` view name) and nothing else: what HF datasets' data_dir=, Spark or a\n"
        "polars / DuckDB glob <folder>/*.parquet read without counting an older version's rows again. A version\n"
        "written before tables had folders, and `tokens`, print their files instead. Exit 1: nothing to print.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pa.add_argument(
        "table",
        metavar="TABLE",
        help="raw, quarantine, filtered, filter_ledger, dedup_signatures, dedup_ledger, deduped, synthetic, mixed "
        "or tokens",
    )
    pa.add_argument("--source", metavar="NAME", help="only this source's partition")
    pa.add_argument("--glob", action="store_true", help="print <folder>/*.parquet instead of the folder")
    pr = sub.add_parser(
        "prune",
        help="delete old versions of unprotected assets on a local root (never synthetic, tokenized or current)",
        description="Delete all but the newest N versions of every asset partition of a local data root, never\n"
        "the current version, never synthetic or tokenized; each partition under its writer lock.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pr.add_argument(
        "--keep", type=_versions_kept, default=3, metavar="N", help="versions kept per partition (default 3)"
    )
    src = sub.add_parser(
        "sources",
        help="list the source partitions (registered, configured, landed, materialized); `remove NAME` deletes one",
        description="List every source partition: registered in the instance, configured, landed (in which zones)\n"
        "and which assets have a current version; or `remove NAME --reason TEXT` it from the instance.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = src.add_subparsers(dest="action", metavar="ACTION")
    rm_src = actions.add_parser(
        "remove",
        help="delete a registered partition that is neither configured nor landed and has no protected output",
        description="Delete the source partition NAME from the Dagster instance (its data stays under the root);\n"
        "refused while it is configured or landed, or while a synthetic or tokenized output of it exists.\n"
        "The reason is kept in <data root>/_removed/sources/NAME.<time>.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rm_src.add_argument("name")
    rm_src.add_argument("--reason", required=True, help="recorded in the audit record")
    sub.add_parser(
        "ray-stop",
        help="stop this instance's embedded Ray cluster (by its own PIDs)",
        description="Stop the embedded Ray cluster recorded under $DAGSTER_HOME/ray, by the PIDs of its own processes.",
    )
    sub.add_parser(
        "validate",
        help="check the environment and every config file without running anything",
        description="Load the environment (CURATION_*) and the sources, recipe, thresholds and costs files, check\n"
        "every value, key and local source path, and print a summary with the config versions; or print one\n"
        "line per problem (<file>: <key.path>: <message>) and exit 2. Starts no Dagster, contacts no S3.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


COMMANDS = {
    "run": run_command,
    "ray-stop": ray_stop_command,
    "paths": paths_command,
    "prune": prune_command,
    "sources": sources_command,
    "sql": sql_command,
    "table": table_command,
    "validate": validate_command,
}


def main(argv: list[str] | None = None) -> int:
    """The `curation` console script (`argv` None: this process ends with the command) or a caller's command."""
    args = parser().parse_args(argv)
    code = _dispatch(args)
    if argv is None and args.command == "run":
        # the console script's `curation run` ends here: its runs are recorded, its workers and cluster stopped;
        # the interpreter's teardown of the Dagster, Ray and polars modules it loaded would take ~0.9 s (measured)
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command in ("remove-version", "versions"):
            from curation_assets.config.settings import Settings

            return versions_command(Settings.from_env(), args)
        return COMMANDS[args.command](args)
    except Exception as e:  # a ConfigError, or one a Dagster wrapper raised from it: its lines, no traceback
        from curation_assets.config.errors import ConfigError

        cause, seen = e, set()
        while cause is not None and not isinstance(cause, ConfigError) and id(cause) not in seen:
            seen.add(id(cause))
            cause = cause.__cause__
        if not isinstance(cause, ConfigError):
            raise
        print(str(cause), file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
