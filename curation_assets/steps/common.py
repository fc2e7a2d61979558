"""What every step module shares: source partitions, the step decorator and pod sizing, the cost-guard preflight,
tracing on demand, and the blocking checks over what the IO manager recorded.

A step yields one output (`core.frames.StepOutput` or `FileSetOutput`); the IO manager persists it and records what
it wrote (rows, drops, bytes, tokens, bytes moved by path class) in the materialization's metadata. The checks run in
the step itself after that (`step`) and read that record of their own run (by run id, never "the latest"), so a
check can only pass on what was persisted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta

import dagster as dg
import polars as pl

from curation_assets.config import Freshness, PodSize
from resources.cost_guard import OVERRIDE_TAG, CostGuard, CrossZoneTransferError, Transfer
from resources.engine import MIN_TRACED_US, Progress, RayEngine, StepTrace
from resources.tokenizer import TokenizerResource

# One partition per source, registered from the sources config (`curation run`, the `register_sources` sensor or the
# UI).
source_partitions = dg.DynamicPartitionsDefinition(name="source")
TRACE_TAG = "curation/trace"  # run tag: trace each step with Viztracer (see `traceable`)
# The UI's asset group of each step: one group per stage, so the global lineage lays out in stage columns.
STAGE_GROUPS = {
    "raw": "ingest",
    "annotated": "ingest",
    "quality_model": "curate",
    "filtered": "curate",
    "dedup_signatures": "dedup",
    "dedup_clusters": "dedup",
    "decontam_index": "dedup",
    "deduped": "dedup",
    "synthetic": "synthesize",
    "mixed": "mix",
    "tokenized": "mix",
}


def freshness_policy(f: Freshness) -> dg.FreshnessPolicy:
    """The mixture is rebuilt daily by the schedule: by default warn after 36 h, fail after 48 h (thresholds.yaml)."""
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=f.fail_hours), warn_window=timedelta(hours=f.warn_hours)
    )


def pod(size: PodSize) -> dict[str, dict]:
    """op_tags sizing the step's pod under the k8s executor from the step's `pod` in thresholds.yaml (dagster-k8s
    reads op tags, never asset tags)."""
    res = {"requests": {"cpu": size.cpu, "memory": size.memory}, "limits": {"memory": size.memory}}
    return {"dagster-k8s/config": {"container_config": {"resources": res}}}


def step(
    version: str,
    size: PodSize,
    checks: Mapping[str, tuple[str, Rule | None]],
    *,
    partitioned: bool = True,
    **asset_kwargs: object,
):
    """The asset decorator of every step (the asset is named after the function): source partitions unless
    `partitioned=False`, the config hash as code version, its pod size, its stage's UI group, traceable on demand,
    and its blocking `checks` (plus `no_cross_zone_bytes`). `asset_kwargs` go to `dg.asset` (`ins`, `description`,
    `metadata`, a freshness policy...).

    The checks run in the asset's own step, right after its output is persisted: under the k8s executor a step is a
    pod, and a check op of its own would be one more pod per step. Each rule reads the metadata the IO manager
    recorded for this run's materialization (by run id, never "the latest"), so a check can only pass on what was
    persisted; a run without one fails every check. A check whose rule is None is yielded by the body itself, after
    its output (tokenized re-reads its shards)."""

    def decorate(fn):
        asset, body = fn.__name__, traceable(fn)
        rules = {**checks, "no_cross_zone_bytes": NO_CROSS_ZONE}
        specs = [dg.AssetCheckSpec(n, asset=asset, blocking=True, description=d) for n, (d, _) in rules.items()]

        @functools.wraps(fn)
        def checked(context, *args, **kwargs):
            yield from body(context, *args, **kwargs)
            md = own_materialization(context, asset)  # the IO manager has persisted the output by now
            for name, (_, rule) in rules.items():
                if rule is None:
                    continue
                passed, meta = (
                    (False, {"error": f"no materialization of {asset} in this run"}) if md is None else rule(md)
                )
                yield dg.AssetCheckResult(asset_key=asset, check_name=name, passed=bool(passed), metadata=meta)

        return dg.asset(
            partitions_def=source_partitions if partitioned else None,
            code_version=version,
            op_tags=pod(size),
            group_name=STAGE_GROUPS[asset],
            check_specs=specs,
            **asset_kwargs,
        )(checked)

    return decorate


def enforce_transfers(
    guard: CostGuard,
    transfers: list[Transfer],
    context: dg.AssetExecutionContext | None = None,
    step: str | None = None,
) -> None:
    """Stop the step before any byte moves when the plan crosses a paid AZ/region boundary or its budget, unless the
    run carries the override tag (then the reason is logged and recorded). What the step moved is measured and
    priced by the IO manager (the materialization's `cost`)."""
    override = context.run.tags.get(OVERRIDE_TAG) if context else None
    try:
        plan = guard.enforce(transfers, override=override, step=step)
    except CrossZoneTransferError as e:
        raise dg.Failure(description=str(e), metadata=guard.plan(transfers).metadata(), allow_retries=False) from e
    if override and plan.offenders:
        context.log.warning(f"cost guard overridden ({OVERRIDE_TAG}={override!r}): {plan.offenders}")


def run_tasks(
    context: dg.AssetExecutionContext,
    engine: RayEngine,
    fn: Callable[[object], tuple[object, int]],
    items: Iterable[object],
    labels: Iterable[str],
    progress: Progress | None = None,
) -> Iterator[object]:
    """`engine.map` for a step: task progress in the step's log, the run's transfer override for the zone rule; in a
    traced run (`curation/trace`) each task on Ray records a trace of its own, stored beside the step's."""
    trace = _TRACING.get(id(context))
    return engine.map(
        fn,
        items,
        labels,
        context.log.info,
        progress,
        override=context.run.tags.get(OVERRIDE_TAG),
        traces=trace.tasks if trace is not None else None,
    )


def with_tokens(docs: pl.DataFrame, tokenizer: TokenizerResource) -> pl.DataFrame:
    """Add `n_tokens` (the recipe tokenizer's count, without EOT). Counted once per document, where its text is final
    and it is kept: `filtered` (its kept documents) and `synthetic` (the documents it generates); later steps carry
    it, so per-step token metadata and the token-weighted mixture never re-tokenize."""
    return docs.with_columns(pl.Series("n_tokens", tokenizer.count_tokens(docs["text"].to_list()), pl.Int64))


def source_ages_hours(instance: dg.DagsterInstance, asset: str, partitions: list[str]) -> dict[str, float | None]:
    """Hours since each partition of `asset` was last materialized (None: never)."""
    now = time.time()
    ages = {}
    for p in partitions:
        flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[p])
        rec = next(iter(instance.fetch_materializations(flt, limit=1).records), None)
        ages[p] = None if rec is None else round((now - rec.timestamp) / 3600, 4)
    return ages


def failed_checks_of_latest(
    instance: dg.DagsterInstance, asset: str, checks: list[str], partitions: list[str | None], history: int = 500
) -> dict[str | None, list[str]]:
    """Per partition of `asset` (None: unpartitioned): the `checks` whose evaluation of that partition's latest
    materialization failed.

    Needed because the check specs are not partitioned: the automation gate sees only each check's latest
    evaluation, so a later pass on another source would hide a failure on this one."""
    latest = {}
    for p in partitions:
        flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[p] if p else None)
        rec = next(iter(instance.fetch_materializations(flt, limit=1).records), None)
        if rec is not None:
            latest[rec.storage_id] = p
    failed: dict[str, list[str]] = {}
    for check in checks:
        key = dg.AssetCheckKey(dg.AssetKey(asset), check)
        for ex in instance.event_log_storage.get_asset_check_execution_history(key, limit=history):
            evaluation = ex.event.dagster_event.event_specific_data if ex.event and ex.event.dagster_event else None
            target = getattr(evaluation, "target_materialization_data", None)
            if target is not None and target.storage_id in latest and not evaluation.passed:
                failed.setdefault(latest[target.storage_id], []).append(check)
    return {p: sorted(set(c)) for p, c in sorted(failed.items(), key=lambda item: item[0] or "")}


# --- checks over the persisted record ---------------------------------------------------------------------------
# A check: (description, rule), where rule(metadata of this run's materialization) -> (passed, check metadata).
Rule = Callable[[dict[str, object]], tuple[bool, dict[str, object]]]


def own_materialization(context: dg.AssetCheckExecutionContext, asset: str) -> dict[str, object] | None:
    """The metadata values of `asset`'s materialization in this check's own run, or None when the run made none."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, ascending=False
    ).records
    for record in records:
        m = record.event_log_entry.asset_materialization
        if m is not None and m.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in m.metadata.items()}
    return None


def drop_rate(max_drop_rate: float) -> tuple[str, Rule]:
    """The share of input rows the step dropped is at most `max_drop_rate`, and so is the share of input bytes lost
    whole (raw's `bytes_lost`: corrupt frames, row groups and files, whose record counts may only be estimates)."""

    def rule(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        rows_in, rows_out = int(md["rows_in"]), int(md["rows_out"])
        bytes_in, bytes_lost = int(md["details"]["bytes_in"]), int(md["details"].get("bytes_lost", 0))
        rate = 1 - rows_out / rows_in if rows_in else 0.0
        byte_rate = bytes_lost / bytes_in if bytes_in else 0.0
        passed = rate <= max_drop_rate and byte_rate <= max_drop_rate
        return passed, {
            "drop_rate": round(rate, 6),
            "bytes_lost_rate": round(byte_rate, 6),
            "max_drop_rate": max_drop_rate,
        }

    return "share of input rows (and of input bytes lost whole) dropped is within the step's max_drop_rate", rule


def no_cross_zone_bytes(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
    """What the step actually moved (priced by the IO manager: data root reads and writes, raw's source reads): any
    cross-AZ or cross-region byte fails, override or not."""
    cost = md["details"]["cost"]
    crossed = {k: cost[k] for k in ("cross_az_bytes", "cross_region_bytes")}
    return not any(crossed.values()), {**crossed, "transfer_override": cost["transfer_override"]}


NO_CROSS_ZONE = ("the step moved no byte across an AZ or region (measured, not estimated)", no_cross_zone_bytes)


# The traced steps running in this process, by id of their context (`run_tasks` finds its step's trace there).
_TRACING: dict[int, StepTrace] = {}


def traceable(fn):
    """Run an asset's step under Viztracer when its run carries the tag `curation/trace` (any value); its tasks on
    Ray each record a trace of their own (`run_tasks`). The `resources.engine.StepTrace` rides on the step's output;
    the IO manager stops the tracer once the output is persisted (so lazy work done while writing is in the trace)
    and stores `trace.json` and the tasks' traces beside the output. Viztracer's ring buffer (1M entries by default)
    bounds the memory a long step's trace can take; the oldest entries go first."""

    @functools.wraps(fn)
    def step(context, *args, **kwargs):
        if TRACE_TAG not in context.run.tags:
            yield from fn(context, *args, **kwargs)
            return
        from viztracer import VizTracer

        trace = StepTrace(VizTracer(verbose=0, min_duration=MIN_TRACED_US))
        _TRACING[id(context)] = trace
        trace.tracer.start()
        try:
            for event in fn(context, *args, **kwargs):
                if isinstance(event, dg.Output):
                    event.value.trace = trace
                yield event
        finally:
            del _TRACING[id(context)]
            if trace.tracer.enable:  # the step failed before its output was persisted
                trace.tracer.stop()

    return step
