"""The whole graph over the shared corpus with 1 worker and with 2 workers, in one invocation, against each other.

Usage: python benchmarks/bench_graph.py [--corpus ../shared/corpus] [--scale 4] [--workers 1 2] [--no-pin] [--repeat 3]
Each setting runs `curation run --force --workers N` in a fresh process with its own Dagster instance, data root and
embedded Ray cluster (started by the run and stopped at its end, so its start-up is part of the wall time), its whole
process tree confined to N cores (`taskset -c 0-(N-1)`: N workers get N cores, so the 1-worker run is the one-core
baseline and Dagster's own processes cannot borrow the idle core; `--no-pin` lets every run use every core). Printed per
run: wall seconds; the busy seconds of the run's cores and their share of cores x wall (from /proc/stat: the embedded
Ray cluster's processes are daemons, not children of `curation run`, so `/usr/bin/time -v` sees only the driver side,
also printed); the largest per-task peak RSS the steps report (`details.task_max_peak_rss_mb`), and the Ray
cluster's start-up time (`ray start` alone, measured separately). With `--scale K` the same runs also go over a
corpus of every shard repeated K times (symlinks under other names), to show that a task's peak RSS follows its
shard, not the source. The last line compares the outputs (every file of every current version, by sha256) and
prints the speedup; with `--repeat N` the two settings alternate N times and it prints the median speedup and its
spread (the machine is shared: one pair's ratio moved from 1.67x to 1.85x between two invocations).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus_sources(corpus: Path, scale: int, tmp: Path) -> Path:
    """The shared corpus's sources file with absolute paths; each shard linked `scale` times under other names."""
    spec = yaml.safe_load((ROOT / "tests/fixtures/shared_corpus_sources.yaml").read_text())
    for source in spec["sources"]:
        uris = []
        for uri in source["uris"]:
            pattern = uri.replace("../../../shared/corpus", str(corpus))
            if scale == 1:
                uris.append(pattern)
                continue
            folder = tmp / f"x{scale}" / source["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(Path(pattern).parent.glob(Path(pattern).name)):
                for k in range(scale):
                    link = folder / f"r{k}-{path.name}"
                    if not link.exists():
                        link.symlink_to(path)
            uris.append(str(folder / "*"))
        source["uris"] = uris
    out = tmp / f"sources-x{scale}.yaml"
    out.write_text(yaml.safe_dump(spec))
    return out


def thresholds(tmp: Path) -> Path:
    # web-warc repeats web: corpus-wide dedup removes it whole, which deduped's drop_rate check would stop; and with
    # `--scale K` every document is there K times, so dedup removes (K - 1) / K of the corpus, over the removal band
    t = yaml.safe_load((ROOT / "curation_assets/config/thresholds.yaml").read_text())
    t["deduped"]["max_drop_rate"] = 1.0
    t["deduped"]["default"] = {**(t["deduped"].get("default") or {}), "removal_band": [0.0, 1.0]}
    out = tmp / "thresholds.yaml"
    out.write_text(yaml.safe_dump(t))
    return out


def busy_seconds(cpus: set[int] | None) -> float:
    """Non-idle CPU seconds so far of `cpus` (None: every CPU), from /proc/stat (idle and iowait excluded)."""
    ticks = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        values = [int(v) for v in fields]
        ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")


def run_graph(workers: int, sources: Path, thr: Path, tmp: Path, tag: str, pin: bool) -> dict:
    home, root = tmp / f"home-{tag}", tmp / f"data-{tag}"
    for d in (home, root):
        shutil.rmtree(d, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy/local/dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CURATION_DATA_ROOT": str(root),
        "CURATION_SOURCES": str(sources),
        "CURATION_RECIPE": str(ROOT / "tests/fixtures/shared_corpus_recipe.yaml"),
        "CURATION_THRESHOLDS": str(thr),
    }
    env.pop("CURATION_RAY_ADDRESS", None)
    env.pop("CURATION_RAY_DIR", None)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "curation_assets.cli", "run", "--force", f"--workers={workers}"]
    if pin:
        cmd = ["taskset", "-c", f"0-{max(0, workers - 1)}", *cmd]
    cpus = set(range(max(1, workers))) if pin else None
    start, busy = time.perf_counter(), busy_seconds(cpus)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall, busy = time.perf_counter() - start, busy_seconds(cpus) - busy
    if done.returncode:
        sys.exit(f"{tag}: curation run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    usage = done.stderr
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", usage)[1]) for k in ("User", "System"))
    return {
        "wall": wall,
        "busy": busy,
        "busy_pct": round(100 * busy / wall),
        "cpu": cpu,
        "cpu_pct": re.search(r"Percent of CPU this job got: (\d+)%", usage)[1],
        "task_rss_mb": max_task_rss(home),
        "root": root,
    }


def max_task_rss(home: Path) -> float:
    """The largest `task_max_peak_rss_mb` over the latest materializations in the instance."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        keys = [dg.AssetKey(a) for a in ("raw", "annotated", "filtered", "dedup_signatures", "synthetic")]
        values = []
        for key in keys:
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=100).records
            values += [v for r in records if (v := _task_rss(r.asset_materialization.metadata)) is not None]
    return max(values, default=0.0)


def _task_rss(metadata) -> float | None:
    """`task_max_peak_rss_mb` of a materialization: in `details` (the step's own figures), or shown."""
    if "task_max_peak_rss_mb" in metadata:
        return metadata["task_max_peak_rss_mb"].value
    details = metadata.get("details")
    return (details.value or {}).get("task_max_peak_rss_mb") if details is not None else None


def fingerprints(root: Path) -> dict[str, str]:
    out = {}
    for m in sorted(root.glob("*/*/_latest.json")):
        manifest = json.loads(m.read_text())
        files = [*manifest.get("parts", []), *manifest.get("dropped", [])]
        files += [*manifest.get("side", {}).values(), *manifest.get("files", {}).values()]
        for f in files:  # relative to the data root (absolute in a manifest written before)
            path = root / f
            out[f"{m.parent.parent.name}/{m.parent.name}/{path.relative_to(m.parent / manifest['version'])}"] = (
                hashlib.sha256(path.read_bytes()).hexdigest()
            )
    return out


def ray_startup_seconds(tmp: Path) -> float:
    from resources.local_ray import LocalCluster

    cluster = LocalCluster(tmp / "startup-ray")
    start = time.perf_counter()
    cluster.start(num_cpus=2)
    seconds = time.perf_counter() - start
    cluster.stop()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--scale", type=int, default=0, help="also run over the corpus repeated K times (peak RSS)")
    ap.add_argument("--workers", type=int, nargs=2, default=(1, 2))
    ap.add_argument("--no-pin", action="store_true", help="do not confine a run of N workers to N cores")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two settings N times (median speedup)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as t:
        tmp = Path(t)
        thr = thresholds(tmp)
        print(f"ray start (embedded head, 2 CPUs): {ray_startup_seconds(tmp):.1f} s")
        runs: dict[tuple[int, int], list[dict]] = {}
        for scale in [1, *([args.scale] if args.scale > 1 else [])]:
            sources = corpus_sources(args.corpus.resolve(), scale, tmp)
            for k in range(args.repeat if scale == 1 else 1):
                for w in args.workers:
                    r = run_graph(w, sources, thr, tmp, f"x{scale}-w{w}-{k}", pin=not args.no_pin)
                    runs.setdefault((scale, w), []).append(r)
                    print(
                        f"x{scale} corpus, {w} worker(s){'' if args.no_pin else f' on {w} core(s)'}: "
                        f"wall {r['wall']:.1f} s, cores busy {r['busy']:.1f} s ({r['busy_pct']} % of one core), "
                        f"driver tree CPU {r['cpu']:.1f} s ({r['cpu_pct']} %), "
                        f"max per-task peak RSS {r['task_rss_mb']:.0f} MB",
                        flush=True,
                    )
        if args.scale > 1:
            one = runs[(1, args.workers[1])][0]["task_rss_mb"]
            many = runs[(args.scale, args.workers[1])][0]["task_rss_mb"]
            print(f"per-task peak RSS x{args.scale} / x1: {many / one:.2f} ({many:.0f} vs {one:.0f} MB)")
        pairs = list(zip(runs[(1, args.workers[0])], runs[(1, args.workers[1])], strict=True))
        same = all(fingerprints(a["root"]) == fingerprints(b["root"]) for a, b in pairs)
        ratios = sorted(a["wall"] / b["wall"] for a, b in pairs)
        a, b = sorted(pairs, key=lambda p: p[0]["wall"] / p[1]["wall"])[len(pairs) // 2]  # the median pair
        spread = f", {len(pairs)} pairs: {ratios[0]:.2f}-{ratios[-1]:.2f}x" if len(pairs) > 1 else ""
        print(
            f"graph speedup {args.workers[1]} vs {args.workers[0]} workers: {a['wall'] / b['wall']:.2f}x "
            f"(wall {a['wall']:.1f} s vs {b['wall']:.1f} s{spread}), outputs identical: {'yes' if same else 'no'}"
        )


if __name__ == "__main__":
    main()
