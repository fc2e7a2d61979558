"""Dedup throughput, peak memory and quality: ours vs datatrove's MinHash, in one run, one core each.

Usage:
  python benchmarks/bench_dedup.py --input '../shared/corpus/data/books/*' [--input ...] [--scale 4]
         [--html] [--truth ../shared/corpus/truth/planted.csv] [--datatrove-python /path/to/python]

Every case runs in a fresh subprocess pinned to one thread (POLARS_MAX_THREADS=1, OMP/OPENBLAS/MKL 1), so its peak
RSS (ru_maxrss) is its own and MB/s is per core. Timed: the dedup work only (reading the shards is not timed; both
read the same documents). MB = UTF-8 bytes of the document text.

- `ours`: shards streamed batch by batch -> `deduped.signatures` -> Parquet parts in a temp dir (the map stage) ->
  `deduped.cluster` over the parts (the band join and components) -> ledger.
- `ours_xN` (`--scale N`): the same documents N times over, each copy with its own doc_id and one salt word prepended
  (so every copy is a near-duplicate, not an exact one): peak memory should stay flat (the map stage streams).
- `datatrove`: datatrove 0.10.x `MinhashDedupSignature` -> `MinhashDedupBuckets` (16 tasks) -> `MinhashDedupCluster`
  -> `MinhashDedupFilter` with our shingles and hash count (word 5-grams, 16x8 = 128 hashes; its own xxhash64,
  seed 1), i.e. no Jaccard check.
  Needs a Python with datatrove (not a project dependency): `--datatrove-python`, else skipped.
Quality (`--truth`): recall at true Jaccard >= 0.85 and precision (false positive = true Jaccard < 0.7) on the planted
pairs of the input, for ours and for datatrove (its `save_cluster_id` clusters).

Scale (`--scales 1,4,16,64`, issue 16): the shared corpus (all four sources, web's HTML extracted) at each scale
(`benchmarks/scaled_corpus.py`: replicas whose words carry a replica tag, so replicas share no shingle while each
keeps its planted pairs; cached outside the repository), deduplicated as the assets do it, on an embedded Ray cluster
of `--workers` CPUs: map tasks (one per 16 MiB of a shard's text: read, `signatures`, one stored part, as
`dedup_signatures`), then `steps/dedup.py: cluster_parts` (shuffle, band, verify, reduce tasks). Per scale: CPU
seconds of every task (their worker's process time) and of the driver, the peak RSS of every task by phase, edges,
recall and precision on the scaled truth; last, `dedup scale 64x: cpu/doc ratio X.XX, max task RSS ratio Y.YY,
recall R, precision P` (ratios against the 1x run; RSS: the largest ratio over the phases).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
}


def read_docs(files: list[str], html: bool):
    sys.path.insert(0, str(ROOT))
    from benchmarks.dedup_eval import read_shard

    for f in files:
        yield from read_shard(Path(f), html=html)


def case_ours(files: list[str], html: bool, scale: int, truth: str | None) -> dict:
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from benchmarks.dedup_eval import score
    from curation_assets.core.dedup import DedupParams, cluster, signatures

    params = DedupParams()
    elapsed = docs = mb = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        parts = 0
        for copy in range(scale):
            for batch in read_docs(files, html):
                if copy:
                    batch = batch.with_columns(
                        doc_id=pl.col("doc_id") + f"~{copy}", text=f"salt{copy} " + pl.col("text")
                    )
                docs += batch.height
                mb += batch["text"].str.len_bytes().sum() / 1e6
                t0 = time.perf_counter()
                for sig in signatures(batch, params):
                    sig.write_parquet(f"{tmp}/sig-{parts:05d}.parquet")
                    parts += 1
                elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        ledger = cluster(pl.read_parquet(f"{tmp}/sig-*.parquet"), params)
        elapsed += time.perf_counter() - t0
    out = {"docs": int(docs), "mb": mb, "seconds": elapsed, "removed": int((~ledger["kept"]).sum())}
    if truth:
        out["quality"] = score(ledger, truth_for(truth, files))
    return out


def case_datatrove(docs_jsonl: str, clusters_out: str) -> dict:
    """Runs under the datatrove Python: reads the documents the parent wrote, writes (doc_id, cluster_id) pairs."""
    import struct

    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from loguru import logger

    logger.remove()
    with open(docs_jsonl, encoding="utf-8") as f:
        docs = [Document(text=r["text"], id=r["doc_id"]) for r in map(json.loads, f)]
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    # Same shingles and number of hashes as ours (DedupParams: word 5-grams, 128 = 16 bands x 8 rows).
    cfg = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for _ in MinhashDedupSignature(f"{tmp}/sigs", config=cfg).run(iter(docs), 0, 1) or []:
            pass
        buckets = MinhashDedupBuckets(f"{tmp}/sigs", f"{tmp}/buckets", config=cfg)
        for rank in range(cfg.num_buckets):
            for _ in buckets.run(None, rank, cfg.num_buckets) or []:
                pass
        cluster = MinhashDedupCluster(f"{tmp}/buckets", f"{tmp}/remove", config=cfg, save_cluster_id=True)
        for _ in cluster.run(None, 0, 1) or []:
            pass
        kept = sum(1 for _ in MinhashDedupFilter(f"{tmp}/remove").run(iter(docs), 0, 1))
        elapsed = time.perf_counter() - t0
        path = Path(f"{tmp}/remove/000000.clusters")
        pairs = list(struct.iter_unpack("<II", path.read_bytes())) if path.exists() else []
    with open(clusters_out, "w") as f:
        json.dump({"doc_id": [docs[d].id for d, _ in pairs], "cluster_id": [str(c) for _, c in pairs]}, f)
    return {"docs": len(docs), "mb": mb, "seconds": elapsed, "removed": len(docs) - kept}


def truth_for(truth: str, files: list[str]):
    """The planted pairs of the sources read (a source not in the input has no pair to find)."""
    import polars as pl

    sources = {Path(f).parent.name for f in files}
    return pl.read_csv(truth).filter(pl.col("source").is_in(sorted(sources)))


def run_case(
    python: str, name: str, args: argparse.Namespace, files: list[str], scale: int = 1, extra: list[str] = ()
) -> dict | None:
    cmd = [python, __file__, "--case", name, "--scale", str(scale), "--files", json.dumps(files), *extra]
    cmd += ["--html"] if args.html else []
    cmd += ["--truth", args.truth] if args.truth and scale == 1 else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_CORE, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_datatrove(args: argparse.Namespace, files: list[str]) -> dict | None:
    import polars as pl

    from benchmarks.dedup_eval import score

    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/docs.jsonl", "w", encoding="utf-8") as f:
            for batch in read_docs(files, args.html):
                for row in batch.select("doc_id", "text").iter_rows(named=True):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        out = run_case(
            args.datatrove_python,
            "datatrove",
            args,
            files,
            extra=["--docs", f"{tmp}/docs.jsonl", "--clusters", f"{tmp}/clusters.json"],
        )
        if out and args.truth:
            clusters = pl.DataFrame(
                json.loads(Path(f"{tmp}/clusters.json").read_text()),
                schema={"doc_id": pl.String, "cluster_id": pl.String},
            )
            out["quality"] = score(clusters, truth_for(args.truth, files))
    return out


# Text per map task of the scale runs (the 1x corpus is 6 tasks): ranges cut by bytes, not rows, so that a task's
# memory does not depend on which documents (a 60 KB web page or a 2 KB fortune) its range happens to hold.
SCALE_TASK_BYTES = 16 << 20


def map_task(task: tuple[str, int, int, str]) -> tuple[int, int]:
    """One row range of a shard -> one stored signature part (what `dedup_signatures` does per batch); runs in a Ray
    worker."""
    import polars as pl

    from curation_assets.core.dedup import DedupParams, signatures
    from curation_assets.core.frames import parquet_bytes

    shard, start, length, out = task
    docs = pl.scan_parquet(shard).slice(start, length).collect()
    sigs = pl.concat(list(signatures(docs, DedupParams())))
    Path(out).write_bytes(parquet_bytes(sigs))
    return docs.height, docs.height


def scale_case(scale: int, engine, corpus: Path) -> dict:
    """One scale of the scaled corpus through the map tasks and `cluster_parts` on the Ray cluster of `engine`."""
    import polars as pl

    from benchmarks.dedup_eval import score
    from benchmarks.scaled_corpus import build
    from curation_assets.core.dedup import DedupParams
    from curation_assets.steps.dedup import Scratch, cluster_parts
    from resources.engine import Progress

    shards, truth = build(scale, corpus=corpus)
    mb = sum(pl.scan_parquet(s).select(pl.col("text").str.len_bytes().sum()).collect().item() for s in shards) / 1e6
    ranges = []  # (shard, first row, rows) of about SCALE_TASK_BYTES of text each
    for shard in shards:
        sizes = pl.scan_parquet(shard).select(pl.col("text").str.len_bytes()).collect().to_series()
        start = base = 0
        for end, cum in enumerate(sizes.cum_sum().to_list(), 1):
            if cum - base >= SCALE_TASK_BYTES or end == len(sizes):
                ranges.append((str(shard), start, end - start))
                start, base = end, cum
    params = DedupParams()
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        t0 = time.perf_counter()
        Path(f"{tmp}/sigs").mkdir()
        parts = [f"{tmp}/sigs/{k:05d}.parquet" for k in range(len(ranges))]
        mapped = Progress(total=len(ranges))
        labels = [f"map {Path(s).name} rows {start}+{n}" for s, start, n in ranges]
        items = [(*r, part) for r, part in zip(ranges, parts)]
        n_docs = sum(engine.map(map_task, items, labels, progress=mapped))
        cpu0 = time.process_time()
        ledger, figures = cluster_parts(
            parts,
            n_docs,
            params,
            Scratch(f"{tmp}/scratch", None, "us-east-1"),
            lambda fn, items, labels, progress: engine.map(fn, items, labels, progress=progress),
            engine.workers,
        )
        driver_cpu = time.process_time() - cpu0
        wall = time.perf_counter() - t0
    phases = {"map": mapped, **figures.pop("phases")}
    quality = score(ledger, pl.read_csv(truth))
    return {
        "scale": scale,
        "docs": n_docs,
        "mb": mb,
        "wall_s": wall,
        "driver_cpu_s": driver_cpu,
        "cpu_s": {k: sum(t.cpu_seconds for t in p.tasks) for k, p in phases.items()},
        "tasks": {k: len(p.tasks) for k, p in phases.items()},
        "rss_mb": {k: max(t.peak_rss_bytes for t in p.tasks) / 2**20 for k, p in phases.items()},
        "removed": int((~ledger["kept"]).sum()),
        "quality": quality,
        **{k: v for k, v in figures.items() if k not in ("task_max_peak_rss_mb", "tasks")},
    }


def run_scales(scales: list[int], workers: int, corpus: Path) -> None:
    from resources.engine import RayEngine
    from resources.local_ray import LocalCluster

    results = []
    for scale in scales:
        # a cluster of its own per scale: every scale's runners start from the same fresh worker processes
        with tempfile.TemporaryDirectory(prefix="bench-dedup-ray-") as state:
            try:
                r = scale_case(scale, RayEngine(workers=workers, state_dir=state), corpus)
            finally:
                import ray

                ray.shutdown()  # a driver still connected when its cluster stops is killed by Ray
                LocalCluster(Path(state)).stop()
        r["cpu_total_s"] = sum(r["cpu_s"].values()) + r["driver_cpu_s"]
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    phases = list(results[0]["rss_mb"])
    print(f"scaled shared corpus, {workers} workers, map tasks of {SCALE_TASK_BYTES >> 20} MiB of text")
    head = f"{'scale':>5} {'docs':>9} {'MB':>8} {'wall s':>7} {'cpu s':>8} {'cpu ms/doc':>10} {'parts':>5}"
    head += f" {'edges/doc':>9}"
    print(head + "".join(f" {p + ' MB':>12}" for p in phases) + "  recall  precision")
    for r in results:
        q = r["quality"]
        print(
            f"{r['scale']:>5} {r['docs']:>9} {r['mb']:>8.0f} {r['wall_s']:>7.0f} {r['cpu_total_s']:>8.1f} "
            f"{1000 * r['cpu_total_s'] / r['docs']:>10.3f} {r['shuffle_partitions']:>5} {r['edges_per_doc']:>9.4f}"
            + "".join(f" {r['rss_mb'][p]:>12.0f}" for p in phases)
            + f"  {q['recall']:.4f}  {q['precision']:.4f}"
        )
    base = results[0]
    print(
        "CPU seconds by phase:",
        *(f"{r['scale']}x {json.dumps({k: round(v, 1) for k, v in r['cpu_s'].items()})}" for r in results),
        sep="\n  ",
    )
    reduce_cpu = sum(v for k, v in base["cpu_s"].items() if k != "map") + base["driver_cpu_s"]
    print(
        f"incremental (a new source: its own map + the shuffle and reduce over every source's stored signatures): "
        f"at {base['scale']}x the shuffle and reduce are {reduce_cpu:.1f} CPU s, "
        f"{100 * reduce_cpu / base['cpu_total_s']:.0f} % of a full recompute"
    )
    (ROOT / "benchmarks" / "results" / "dedup_scale.json").write_text(json.dumps(results, indent=1))
    last = results[-1]
    cpu_ratio = (last["cpu_total_s"] / last["docs"]) / (base["cpu_total_s"] / base["docs"])
    rss_ratio = max(last["rss_mb"][p] / base["rss_mb"][p] for p in phases)
    q = last["quality"]
    print(
        f"dedup scale {last['scale']}x: cpu/doc ratio {cpu_ratio:.2f}, max task RSS ratio {rss_ratio:.2f}, "
        f"recall {q['recall']:.4f}, precision {q['precision']:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", help="comma-separated scales of the scaled shared corpus (e.g. 1,4,16,64)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray CPUs of the scale runs")
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus", help="the shared corpus")
    ap.add_argument("--input", action="append", default=[], help="shard paths or globs (JSONL.zst / Parquet)")
    ap.add_argument("--scale", type=int, default=4, help="also run ours on the input this many times over")
    ap.add_argument("--html", action="store_true", help="the shards hold HTML (web): extract text first")
    ap.add_argument("--truth", help="planted.csv: report recall/precision")
    ap.add_argument("--datatrove-python", help="a Python with datatrove installed (the baseline)")
    ap.add_argument("--case"), ap.add_argument("--files"), ap.add_argument("--docs"), ap.add_argument("--clusters")
    args = ap.parse_args()
    if args.case:  # inside the subprocess
        files = json.loads(args.files)
        out = (
            case_ours(files, args.html, args.scale, args.truth)
            if args.case == "ours"
            else case_datatrove(args.docs, args.clusters)
        )
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    sys.path.insert(0, str(ROOT))
    if args.scales:
        run_scales([int(x) for x in args.scales.split(",")], args.workers, args.corpus)
        return
    files = sorted({f for pattern in args.input for f in glob.glob(pattern)})
    results = {"ours": run_case(sys.executable, "ours", args, files)}
    if args.scale > 1:
        results[f"ours_x{args.scale}"] = run_case(sys.executable, "ours", args, files, args.scale)
    if args.datatrove_python:
        results["datatrove"] = run_datatrove(args, files)
    print(f"input: {len(files)} shards; one core per case")
    print(f"{'case':<12} {'docs':>7} {'MB':>7} {'s':>8} {'docs/s':>8} {'MB/s':>7} {'peak RSS MB':>11}  quality")
    for name, r in results.items():
        if r:
            q = r.get("quality", {})
            qs = f"recall {q['recall']} precision {q['precision']} (fp {q['false_positives']})" if q else ""
            print(
                f"{name:<12} {r['docs']:>7} {r['mb']:>7.1f} {r['seconds']:>8.2f} {r['docs'] / r['seconds']:>8.0f} "
                f"{r['mb'] / r['seconds']:>7.2f} {r['peak_rss_mb']:>11.0f}  {qs}"
            )
    ours, dt, big = results["ours"], results.get("datatrove"), results.get(f"ours_x{args.scale}")
    if ours and dt:
        print(
            f"speed-up vs datatrove (MB/s per core): {(ours['mb'] / ours['seconds']) / (dt['mb'] / dt['seconds']):.1f}x"
        )
    if ours and big:
        print(f"peak RSS x{args.scale} input / x1 input: {big['peak_rss_mb'] / ours['peak_rss_mb']:.2f}")
    out = ROOT / "benchmarks" / "results" / "dedup_latest.json"
    # inputs recorded relative to the repository, so the result file names no machine
    rel = [os.path.relpath(f, ROOT) for f in files]
    out.write_text(json.dumps({"files": rel, "results": results}, indent=1))


if __name__ == "__main__":
    main()
