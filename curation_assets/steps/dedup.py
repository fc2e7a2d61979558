"""Corpus-wide dedup as assets (`core/dedup.py`, `core/minhash.py`): `dedup_signatures` (map, per source) ->
`dedup_clusters` (band join + components over every source, with a source priority); `deduped` applies the ledger
per source. Checks: `drop_rate` (signatures), `removal_rate` (clusters), `no_cross_zone_bytes`.

A new or changed source re-materializes only its own `dedup_signatures` partition; `dedup_clusters` re-runs its
shuffle and reduce over the stored signatures of every source (the map, ~90 % of dedup's CPU, is reused).

`dedup_clusters` never holds the corpus's signatures (num_perm x 4 bytes per document) in one process. Its tasks
(Ray, `resources/engine.py`), each bounded by a slice whose size does not grow with the corpus:
1. shuffle: per stored signature part, its rows' band keys (+ node, loc, exact key) into `n_parts` hash partitions,
   one scratch file per part (a row group per partition);
2. band: per hash partition (~`shuffle_docs` documents x bands), the exact pairs and the candidate edges;
3. verify: two rounds per signature part: attach side a's signatures to the pairs (scratch, by side b's part), then
   side b's and the estimated Jaccard, so each task reads one part of signatures;
4. reduce: connected components over the exact pairs and the verified edges only (a few per duplicate document:
   `edges_per_doc` in the metadata), then the same two rounds for each member's Jaccard to its kept document.
The driver holds only the edge lists; the ledger is written in parts, in the single-process ledger's order, and
equals it byte for byte (`core.minhash.cluster_signatures` runs the same stages in one process).
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl

from curation_assets.core.dedup import DedupParams, ledger_summary, signatures
from curation_assets.core.frames import StepOutput, empty_frame, range_frames, row_ranges
from curation_assets.core.minhash import (
    PAIR_SCHEMA,
    attach_signatures,
    bucket_edges,
    empty_ledger,
    estimated_jaccard,
    ledger,
    members,
    part_of,
    shuffle_rows,
)
from curation_assets.steps.common import (
    drop_rate,
    enforce_transfers,
    run_tasks,
    step,
)
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.io_manager import LOAD, PARTS, ParquetIOManager
from resources.scratch import Scratch
from resources.store import ObjectStore

# One stored part per ~20,000 rows of `filtered` (~11 MB): dedup_clusters' shuffle reads every part once and each of
# its band tasks reads a block of every shuffle file, so fewer, larger parts keep that parts x partitions fan-in small
# (docs/scale.md).
SIGNATURE_PART_ROWS = 20_000
# Text per task: ~0.4 s of MinHash here (~10 MiB/s per core), so a source's signatures spread over the cluster's CPUs
# whatever its size (a task was a part of 20,000 documents: a source under that many kept documents ran on one CPU),
# and a task's Ray overhead (a few ms) stays about 1 % of it.
SIGNATURE_TASK_BYTES = 4 << 20
NO_DROPS = {"doc_id": pl.String(), "drop_reason": pl.String()}


@dataclass(frozen=True)
class SignatureTask:
    """A row range of a source's filtered documents: the unit of work of `dedup_signatures` (a Ray task)."""

    batch: pl.DataFrame
    params: DedupParams
    source: str


def signature_task(task: SignatureTask) -> tuple[tuple[pl.DataFrame, int], int]:
    """(signature frame, text bytes) of one row range (`core.dedup.signatures`); runs in a Ray worker."""
    frame = pl.concat(list(signatures(task.batch, task.params, source=task.source)))
    return (frame, task.batch.estimated_size()), task.batch.height


def stored_parts(frames: Iterable[pl.DataFrame], max_rows: int) -> Iterator[pl.DataFrame]:
    """Consecutive `frames` concatenated, in order, into parts of at most `max_rows` rows (a larger frame alone)."""
    held: list[pl.DataFrame] = []
    for frame in frames:
        if held and sum(f.height for f in held) + frame.height > max_rows:
            yield pl.concat(held)
            held = []
        held.append(frame)
    if held:
        yield pl.concat(held)


def build_signatures(cfg, version: str) -> list:
    """`dedup_signatures` per source and its checks."""
    params = cfg.dedup_params

    @step(version, cfg.thresholds.deduped.pod, {"drop_rate": drop_rate(0.0)})
    def dedup_signatures(
        context: dg.AssetExecutionContext, filtered: pl.LazyFrame, cost_guard: CostGuard, engine: RayEngine
    ):
        """A fingerprint of each of the source's filtered documents (an exact-text hash and MinHash signatures),
        what the corpus-wide duplicate search compares."""
        source = context.partition_key
        docs = filtered.select("doc_id", "text")
        enforce_transfers(cost_guard, [cost_guard.data_root(0)])
        sizes = docs.select(pl.col("text").str.len_bytes()).collect().to_series()
        ranges = row_ranges(sizes, SIGNATURE_PART_ROWS, SIGNATURE_TASK_BYTES)  # as filtered's tasks
        tasks = (SignatureTask(batch, params, source) for batch in range_frames(docs.collect_batches(), ranges))
        labels = (f"{source} rows {start}-{start + length - 1}" for start, length in ranges)
        progress = Progress(total=len(ranges))
        seen = {"rows": 0, "bytes": 0}

        def frames() -> Iterator[pl.DataFrame]:
            for frame, nbytes in run_tasks(context, engine, signature_task, tasks, labels, progress):
                seen["rows"] += frame.height
                seen["bytes"] += nbytes
                yield frame

        yield dg.Output(
            StepOutput(
                kept=stored_parts(frames(), SIGNATURE_PART_ROWS),
                dropped=empty_frame(NO_DROPS),
                rows_in=lambda: seen["rows"],
                bytes_in=lambda: seen["bytes"],
                config_version=version,
                extra=lambda: {"signature_version": params.signature_version, **progress.metadata()},
            )
        )

    return [dedup_signatures]


LEDGER_PART_ROWS = 1_000_000


def n_partitions(n_docs: int, workers: int, shuffle_docs: int) -> int:
    """Hash partitions for `n_docs` documents: `shuffle_docs` each (`DedupParams`), at least one per worker. The
    number of partitions grows with the corpus, so a band task's memory does not."""
    return max(workers, -(-n_docs // shuffle_docs), 1)


@dataclass(frozen=True)
class ShuffleTask:
    """One stored signature part: the shuffle's map side."""

    uri: str
    index: int
    params: DedupParams
    n_parts: int
    scratch: Scratch


def shuffle_task(task: ShuffleTask) -> tuple[tuple[str, int], int]:
    """Write the part's shuffle rows (`core.minhash.shuffle_rows`) to scratch, a row group per hash partition."""
    p = task.params
    sigs = task.scratch.get(task.uri)
    rows = shuffle_rows(
        sigs, task.index, bands=p.bands, rows=p.rows, n_parts=task.n_parts, priority=p.priority, near=p.near
    )
    return task.scratch.write(f"shuffle/{task.index:05d}.parquet", rows, "part"), sigs.height


@dataclass(frozen=True)
class BandTask:
    """One hash partition of the shuffle: its rows in every shuffle file."""

    part: int
    shuffled: list[str]
    params: DedupParams
    scratch: Scratch


def band_task(task: BandTask) -> tuple[tuple[pl.DataFrame, pl.DataFrame], int]:
    """(exact pairs, candidate edges) of the partition (`core.minhash.bucket_edges`)."""
    rows = task.scratch.read(task.shuffled, "part", task.part)
    return bucket_edges(rows, exact=task.params.exact, near=task.params.near), rows.height


@dataclass(frozen=True)
class SideTask:
    """Verification round 1 for one signature part: pairs (`idx, a_loc, b_loc`) whose side a is stored in it."""

    pairs: pl.DataFrame
    uri: str
    index: int
    name: str  # the round's scratch folder
    scratch: Scratch


def side_task(task: SideTask) -> tuple[tuple[str, int], int]:
    """Attach side a's signatures; write `idx, b_loc, b_part, sig_a` to scratch, a row group per side-b part."""
    sig_a = attach_signatures(task.pairs, task.scratch.get(task.uri, ["sig"]).get_column("sig").to_numpy(), "a")
    rows = task.pairs.select("idx", "b_loc", b_part=part_of(pl.col("b_loc"))).with_columns(
        sig_a=pl.Series(sig_a, dtype=pl.Array(pl.UInt32, sig_a.shape[1]))
    )
    return task.scratch.write(f"{task.name}/{task.index:05d}.parquet", rows.sort("b_part"), "b_part"), rows.height


@dataclass(frozen=True)
class JaccardTask:
    """Verification round 2 for one signature part: the round-1 rows whose side b is stored in it."""

    uri: str
    index: int
    sides: list[str]
    scratch: Scratch


def jaccard_task(task: JaccardTask) -> tuple[pl.DataFrame, int]:
    """`idx, jaccard`: the estimated Jaccard of each pair, side b's signatures read from this part."""
    rows = task.scratch.read(task.sides, "b_part", task.index)
    sig_b = attach_signatures(rows, task.scratch.get(task.uri, ["sig"]).get_column("sig").to_numpy(), "b")
    est = estimated_jaccard(np.asarray(rows.get_column("sig_a").to_numpy()), sig_b)
    return rows.select("idx", jaccard=pl.Series(est, dtype=pl.Float64)), rows.height


def reduce_task(edges: tuple[pl.DataFrame, pl.DataFrame]) -> tuple[pl.DataFrame, int]:
    """Connected components over the exact pairs and verified edges (`core.minhash.members`)."""
    clustered = members(*edges)
    return clustered, clustered.height


Runner = Callable[[Callable, Iterable[object], Iterable[str], Progress], Iterator[object]]


def cluster_parts(
    parts: list[str], n_docs: int, params: DedupParams, scratch: Scratch, run: Runner, workers: int
) -> tuple[pl.DataFrame, dict[str, object]]:
    """(cluster ledger, figures) of the stored signature parts `parts` (URIs, in a fixed order: the loc of a
    document names its part by index) holding `n_docs` rows. `run(fn, items, labels, progress)` yields each task's
    result in item order (`RayEngine.map`). The scratch folder is deleted afterwards, whatever happens."""
    phases: dict[str, Progress] = {}
    scratch_bytes: dict[str, int] = {}  # written per phase: the shuffle's bytes and the verification rounds'

    def tasks(phase: str, fn: Callable, items: list, labels: list[str]) -> list:
        progress = phases.setdefault(phase, Progress(total=len(items)))
        return list(run(fn, items, labels, progress))

    def pair_jaccard(pairs: pl.DataFrame, name: str) -> np.ndarray:
        """Estimated Jaccard of each pair (`a_loc`, `b_loc`), in order: two rounds of one task per signature part."""
        if pairs.is_empty():
            return np.zeros(0)
        indexed = pairs.select("a_loc", "b_loc").with_row_index("idx")
        by_a = indexed.with_columns(a_part=part_of(pl.col("a_loc"))).partition_by("a_part", as_dict=True)
        side = [SideTask(f.drop("a_part"), parts[k], k, name, scratch) for (k,), f in sorted(by_a.items())]
        sides = tasks(f"{name}_a", side_task, side, [f"{name} side a of part {t.index}" for t in side])
        # each round-2 task reads only the round-1 files that hold rows for its part (a fan-in of its pairs' parts,
        # not of every part: the number of reads grows with the pairs, not with parts x parts)
        files = {t.index: uri for t, (uri, _) in zip(side, sides)}
        scratch_bytes[name] = sum(n for _, n in sides)
        touched = indexed.select(a=part_of(pl.col("a_loc")), b=part_of(pl.col("b_loc"))).unique().sort("b", "a")
        round2 = [
            JaccardTask(parts[b], b, [files[a] for a in g["a"].to_list()], scratch)
            for (b,), g in touched.partition_by("b", as_dict=True, maintain_order=True).items()
        ]
        found = tasks(f"{name}_b", jaccard_task, round2, [f"{name} side b of part {t.index}" for t in round2])
        return pl.concat(found).sort("idx").get_column("jaccard").to_numpy()

    if not n_docs:  # no source has a document: nothing to shuffle
        empty = {"shuffle_partitions": 0, "candidate_edges": 0, "verified_edges": 0, "edges_per_doc": 0.0}
        return empty_ledger(), {"phases": phases, **empty, "task_max_peak_rss_mb": {}, "tasks": 0, "scratch_bytes": {}}
    try:
        n_parts = n_partitions(n_docs, workers, params.shuffle_docs)
        shuffle = [ShuffleTask(uri, k, params, n_parts, scratch) for k, uri in enumerate(parts)]
        written = tasks("shuffle", shuffle_task, shuffle, [f"shuffle part {t.index}" for t in shuffle])
        scratch_bytes["shuffle"] = sum(n for _, n in written)
        band = [BandTask(p, [uri for uri, _ in written], params, scratch) for p in range(n_parts)]
        found = tasks("band", band_task, band, [f"band partition {t.part}" for t in band])
        pairs = pl.concat([pl.DataFrame(schema=PAIR_SCHEMA), *(p for p, _ in found)])
        cand = pl.concat([pl.DataFrame(schema=PAIR_SCHEMA), *(e for _, e in found)]).unique().sort("a", "b")
        verified = cand
        if params.threshold is not None and cand.height:
            verified = cand.filter(pl.Series(pair_jaccard(cand, "verify") >= params.threshold))
        (clustered,) = tasks("reduce", reduce_task, [(pairs, verified)], ["reduce"])
        jac = pair_jaccard(clustered.select(a_loc="label_loc", b_loc="loc"), "jaccard")
        out = ledger(clustered, pl.Series(jac, dtype=pl.Float64))
    finally:
        scratch.clear()
    figures = {
        "shuffle_partitions": n_parts,
        "candidate_edges": cand.height,
        "verified_edges": verified.height + pairs.height,
        "edges_per_doc": round((verified.height + pairs.height) / n_docs, 4) if n_docs else 0.0,
        "task_max_peak_rss_mb": {k: v.metadata()["task_max_peak_rss_mb"] for k, v in phases.items()},
        "tasks": sum(len(v.tasks) for v in phases.values()),
        "scratch_bytes": scratch_bytes,
    }
    return out, {"phases": phases, **figures}


def build_clusters(cfg, version: str) -> list:
    """The unpartitioned `dedup_clusters` ledger and its checks."""
    params = cfg.dedup_params
    lo, hi = params.removal_band

    def removal_rate(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        rate = float(md["removal_rate"])
        return lo <= rate <= hi, {"removal_rate": rate, "min": lo, "max": hi}

    checks = {"removal_rate": ("share of all documents removed is within removal_band", removal_rate)}

    @step(
        version,
        cfg.thresholds.deduped.pod,
        checks,
        partitioned=False,
        ins={"dedup_signatures": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata={LOAD: PARTS})},
    )
    def dedup_clusters(
        context: dg.AssetExecutionContext,
        dedup_signatures: dict[str, dict],
        io_manager: dg.ResourceParam[ParquetIOManager],
        store: ObjectStore,
        engine: RayEngine,
    ):
        """Cluster ledger over every source: doc_id, source, cluster_id, cluster_size, kept, kept_doc_id, kept_source,
        drop_reason, jaccard (estimated vs the kept representative). Keep rule: source priority, then doc_id."""
        stored = [m for _, m in sorted(dedup_signatures.items())]
        parts, n_docs = [uri for m in stored for uri in m["parts"]], sum(m["rows"] for m in stored)
        where = io_manager.scratch_uri("dedup_clusters", context.run.run_id)
        scratch = Scratch(where, store.endpoint_url, store.region)

        def run(fn, items, labels, progress):
            return run_tasks(context, engine, fn, items, labels, progress)

        ledger_, figures = cluster_parts(parts, n_docs, params, scratch, run, engine.workers or 1)
        summary = ledger_summary(ledger_, n_docs)
        # the share of documents removed is the series to watch across runs (and what the check bounds)
        summary["removal_rate"] = dg.MetadataValue.float(summary["removal_rate"])
        figures.pop("phases")
        yield dg.Output(
            StepOutput(
                kept=ledger_.iter_slices(LEDGER_PART_ROWS),
                dropped=empty_frame(NO_DROPS),
                rows_in=n_docs,
                bytes_in=sum(m["part_bytes"] or 0 for m in stored),
                config_version=version,
                extra={**summary, **figures, "priority": ", ".join(params.priority)},
            )
        )

    return [dedup_clusters]
