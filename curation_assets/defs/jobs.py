"""Jobs and schedules: the seven stages of a nightly rebuild.

Jobs in the order a full rebuild runs them: per source its documents read; per source its documents annotated
(language ID, the heuristic rules: what needs no model) while the quality classifier trains on the reference and
background sources; per source up to its MinHash signatures (map); the corpus-wide clustering over
every source's signatures (reduce) with the eval sets' n-gram index; per source the ledger and the index applied and
synthetic data; the mixture.
"""

import dagster as dg

from curation_assets.steps.common import source_partitions

ASSETS = (
    "raw",
    "annotated",
    "quality_model",
    "filtered",
    "dedup_signatures",
    "decontam_index",  # before dedup_clusters: Dagster runs the job's two independent steps in name order
    "dedup_clusters",
    "deduped",
    "synthetic",
    "mixed",
    "tokenized",
)
INGEST_SOURCE = "ingest_source"
ANNOTATE_SOURCE = "annotate_source"
TRAIN_QUALITY = "train_quality_model"
CURATE_SOURCE = "curate_source"
DEDUPE_CORPUS = "dedupe_corpus"
FINISH_SOURCE = "finish_source"
BUILD_MIXTURE = "build_mixture"
# partitioned by source; the others run once
SOURCE_JOBS = (INGEST_SOURCE, ANNOTATE_SOURCE, CURATE_SOURCE, FINISH_SOURCE)
JOB_ASSETS = {  # in rebuild order
    INGEST_SOURCE: ("raw",),
    ANNOTATE_SOURCE: ("annotated",),
    TRAIN_QUALITY: ("quality_model",),
    CURATE_SOURCE: ("filtered", "dedup_signatures"),
    DEDUPE_CORPUS: ("decontam_index", "dedup_clusters"),
    FINISH_SOURCE: ("deduped", "synthetic"),
    BUILD_MIXTURE: ("mixed", "tokenized"),
}
JOB_DESCRIPTIONS = {
    INGEST_SOURCE: "raw for one source partition (read, parsed, quarantined)",
    ANNOTATE_SOURCE: "annotated for one source partition (language ID, URL lists, heuristic rules, PII: everything "
    "of filtering that needs no model; runs while train_quality_model trains)",
    TRAIN_QUALITY: "the DCLM-style quality classifier, trained on raw of its reference and background sources",
    CURATE_SOURCE: "filtered -> dedup_signatures for one source partition (the quality cut; after train_quality_model)",
    DEDUPE_CORPUS: "near-duplicate clusters over every source's stored signatures (cross-source, by priority) and "
    "the eval sets' n-gram index (decontamination)",
    FINISH_SOURCE: "deduped -> synthetic for one source partition (after dedupe_corpus)",
    BUILD_MIXTURE: "the recipe's mixture and its token stream, over every source",
}


# Seconds per MB of a source's input, of a job on one core: the critical-path weights of `curation run`'s order
# (measured here over the shared corpus, `benchmarks/bench_graph.py` with one worker: ingest 0.06-1.04 s/MB (HTML
# the most), annotate 0.47-0.73, curate 0.24-0.62, finish 0.04-0.37; the corpus-wide jobs per MB of every source's
# input). A source's input is its files until its raw is written, then raw (the text every later job reads: a
# WARC's headers and markup are gone).
JOB_COST = {
    INGEST_SOURCE: 0.3,
    ANNOTATE_SOURCE: 0.6,
    TRAIN_QUALITY: 0.2,
    CURATE_SOURCE: 0.5,
    DEDUPE_CORPUS: 0.03,
    FINISH_SOURCE: 0.15,
    BUILD_MIXTURE: 0.09,
}
Node = tuple[str, str | None]  # (job, source partition or None)


def job_graph(sources: list[str], quality_sources: tuple[str, ...] | None) -> dict[Node, set[Node]]:
    """Every (job, partition) of a full rebuild -> the ones it needs first (`quality_sources`: the quality model's
    reference and background sources, None without a model). Per-source jobs of different sources are independent:
    a source's curate_source needs only its own annotated (and the model), so it need not wait for the other
    sources'; the model needs only its sources' raw, so the annotations run while it trains (on one thread)."""
    model = {(TRAIN_QUALITY, None)} if quality_sources is not None else set()
    graph: dict[Node, set[Node]] = {(INGEST_SOURCE, s): set() for s in sources}
    graph |= {(ANNOTATE_SOURCE, s): {(INGEST_SOURCE, s)} for s in sources}
    if quality_sources is not None:
        graph[(TRAIN_QUALITY, None)] = {(INGEST_SOURCE, s) for s in quality_sources}
    graph |= {(CURATE_SOURCE, s): {(ANNOTATE_SOURCE, s), *model} for s in sources}
    graph[(DEDUPE_CORPUS, None)] = {(CURATE_SOURCE, s) for s in sources}
    graph |= {(FINISH_SOURCE, s): {(DEDUPE_CORPUS, None)} for s in sources}
    graph[(BUILD_MIXTURE, None)] = {(FINISH_SOURCE, s) for s in sources}
    return graph


def critical_path(graph: dict[Node, set[Node]], source_bytes: dict[str, int]) -> dict[Node, float]:
    """Each node's estimated cost plus that of the costliest chain of nodes that need it (`JOB_COST` x the input
    bytes of its source, or of the sources it reads): run first, the longest chain never waits behind shorter ones."""
    needed_by: dict[Node, list[Node]] = {n: [] for n in graph}
    for node, needs in graph.items():
        for need in needs:
            needed_by[need].append(node)

    def cost(node: Node) -> float:
        job, partition = node
        if partition is not None:
            read = source_bytes[partition]
        elif job == TRAIN_QUALITY:
            read = sum(source_bytes[s] for _, s in graph[node])
        else:
            read = sum(source_bytes.values())
        return JOB_COST[job] * read

    out: dict[Node, float] = {}

    def path(node: Node) -> float:
        if node not in out:
            out[node] = cost(node) + max((path(n) for n in needed_by[node]), default=0.0)
        return out[node]

    for node in graph:
        path(node)
    return out


def build_jobs(ingest_config: dg.PartitionedConfig | None, with_model: bool) -> dict[str, dg.JobDefinition]:
    """The jobs by name, in rebuild order (`train_quality_model` only when a quality model is configured);
    `ingest_config` is `ingest_source`'s partitioned run config (the k8s zone pin of raw)."""

    def job(name: str) -> dg.JobDefinition:
        selection = dg.AssetSelection.assets(*JOB_ASSETS[name])
        config = ingest_config if name == INGEST_SOURCE else None
        return dg.define_asset_job(name, selection=selection, description=JOB_DESCRIPTIONS[name], config=config)

    return {name: job(name) for name in JOB_ASSETS if with_model or name != TRAIN_QUALITY}


# Nightly rebuild; each stage has 30-60 min for the one before it (declarative automation also runs the later stages as
# soon as their inputs change, so the schedules are the floor, not the only trigger).
SCHEDULES = {
    INGEST_SOURCE: ("0 1 * * *", "ingest_sources_daily"),
    ANNOTATE_SOURCE: ("30 1 * * *", "annotate_sources_daily"),
    TRAIN_QUALITY: ("30 1 * * *", "train_quality_model_daily"),
    CURATE_SOURCE: ("0 2 * * *", "curate_sources_daily"),
    DEDUPE_CORPUS: ("0 3 * * *", "dedupe_corpus_daily"),
    FINISH_SOURCE: ("30 3 * * *", "finish_sources_daily"),
    BUILD_MIXTURE: ("0 5 * * *", "build_mixture_daily"),
}


def schedules(jobs: dict[str, dg.JobDefinition]) -> list[dg.ScheduleDefinition]:
    """One daily schedule per job; the per-source jobs request a run per registered source partition."""

    def per_source(job, cron: str, name: str) -> dg.ScheduleDefinition:
        @dg.schedule(job=job, cron_schedule=cron, execution_timezone="UTC", name=name)
        def _schedule(context: dg.ScheduleEvaluationContext):
            day = context.scheduled_execution_time.strftime("%Y-%m-%d")
            for s in context.instance.get_dynamic_partitions(source_partitions.name):
                yield dg.RunRequest(run_key=f"{s}:{day}", partition_key=s)

        return _schedule

    return [
        per_source(job, *SCHEDULES[name])
        if name in SOURCE_JOBS
        else dg.ScheduleDefinition(
            job=job, cron_schedule=SCHEDULES[name][0], execution_timezone="UTC", name=SCHEDULES[name][1]
        )
        for name, job in jobs.items()
    ]
