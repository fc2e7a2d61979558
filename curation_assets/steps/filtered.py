"""filtered: raw documents through language ID, datatrove's Gopher / C4 / FineWeb rules and the quality model's cut
(`core/filtering.py`), with the per-document decision ledger beside the output. Checks: `drop_rate`,
`no_cross_zone_bytes`.

Two passes over batches of raw: pass 1 marks each batch in a Ray task (a row range of raw: language ID, rules,
quality score) and the driver spills it to a local scratch directory (memory stays a few batches), then the
partition-wide quality cut settles the ledger; pass 2 re-reads each spilled batch and yields its kept rows.
"""

import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.core.filtering import (
    BATCH_DOCS,
    FilterParams,
    apply_decisions,
    distributions_markdown,
    ledger_of,
    mark_batch,
    partition_ledger,
)
from curation_assets.core.frames import DROP_REASON, StepOutput
from curation_assets.steps.common import (
    drop_rate,
    enforce_transfers,
    failed_checks_of_latest,
    run_tasks,
    step,
)
from resources.classifiers import LanguageIdResource, QualityModel
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.store import ObjectStore


@dataclass(frozen=True)
class FilterTask:
    """A batch of a source's raw documents: the unit of work of `filtered` (a Ray task)."""

    batch: pl.DataFrame
    params: FilterParams
    lid_model: str
    quality_model: str | None  # URI of the quality model's `model.bin`
    endpoint_url: str | None
    region: str


@functools.cache
def _lid(path: str) -> LanguageIdResource:
    return LanguageIdResource(model_path=path)


@functools.cache
def _quality(uri: str, endpoint_url: str | None, region: str) -> QualityModel:
    return QualityModel.from_files({"model.bin": uri}, ObjectStore(endpoint_url=endpoint_url, region=region))


def mark_task(task: FilterTask) -> tuple[pl.DataFrame, int]:
    """Pass 1 on one batch (`core.filtering.mark_batch`); runs in a Ray worker, models loaded once per worker."""
    batch = task.batch
    score = _quality(task.quality_model, task.endpoint_url, task.region).score if task.quality_model else None
    return mark_batch(batch, task.params, _lid(task.lid_model).predict, score), batch.height


def build(cfg, version: str, with_model: bool) -> list:
    """One asset `filtered` per source partition and its checks. With a quality model configured, the current
    `quality_model` file set is an input (name -> URI)."""
    t = cfg.thresholds.filtered

    def materialize(context, raw: pl.LazyFrame, model_files, lid, cost_guard, store, engine):
        params = t.for_source(context.partition_key)
        size = raw.select(pl.col("text").str.len_bytes().sum()).collect().item() or 0
        enforce_transfers(cost_guard, [cost_guard.data_root(size)])
        if model_files is not None:
            failed = failed_checks_of_latest(context.instance, "quality_model", ["held_out_quality"], [None])
            if failed:  # a run of curate_source alone does not see the train job's blocking check
                raise dg.Failure(
                    f"the latest quality_model failed its blocking check {failed[None]}: retrain or fix it"
                )
        n = raw.select(pl.len()).collect().item()
        tasks = (
            FilterTask(
                batch=raw.slice(start, BATCH_DOCS).collect(),
                params=params,
                lid_model=lid.model_path,
                quality_model=model_files["model.bin"] if model_files else None,
                endpoint_url=store.endpoint_url,
                region=store.region,
            )
            for start in range(0, n, BATCH_DOCS)
        )
        progress = Progress(total=-(-n // BATCH_DOCS))
        labels = (f"{context.partition_key} rows {s}-{min(s + BATCH_DOCS, n) - 1}" for s in range(0, n, BATCH_DOCS))
        spill = tempfile.TemporaryDirectory(prefix="filtered-")
        ledgers = []
        for k, marked in enumerate(run_tasks(context, engine, mark_task, tasks, labels, progress)):
            marked.write_parquet(f"{spill.name}/batch-{k:05d}.parquet")
            ledgers.append(ledger_of(marked))
        ledger = partition_ledger(ledgers, params)
        dropped: list[pl.DataFrame] = []

        def kept() -> Iterator[pl.DataFrame]:
            offset = 0
            for k in range(len(ledgers)):
                marked = pl.read_parquet(f"{spill.name}/batch-{k:05d}.parquet")
                keep, gone = apply_decisions(marked, ledger[DROP_REASON].slice(offset, marked.height))
                offset += marked.height
                dropped.append(gone)
                yield keep

        def dropped_frame() -> pl.DataFrame:
            spill.cleanup()
            if dropped:
                return pl.concat(dropped, how="diagonal_relaxed")
            return pl.DataFrame(schema={"doc_id": pl.String, DROP_REASON: pl.String})

        yield dg.Output(
            StepOutput(
                kept=kept(),
                dropped=dropped_frame,
                rows_in=ledger.height,
                bytes_in=size,
                config_version=version,
                extra={
                    **progress.metadata(),
                    "rule_value_distributions": dg.MetadataValue.md(distributions_markdown(ledger)),
                },
                side={"ledger": ledger},
            )
        )

    doc = (
        "Raw documents that pass language ID, Gopher repetition + quality, C4 and FineWeb quality and the configured "
        "quality-model cut, + `lang`, `lang_score`, `quality_score`; dropped rows keep every column and their "
        "`drop_reason`."
    )
    checks = {"drop_rate": drop_rate(t.max_drop_rate)}
    if with_model:

        @step(version, t.pod, checks, ins={"quality_model": dg.AssetIn()}, description=doc)
        def filtered(
            context: dg.AssetExecutionContext,
            raw: pl.LazyFrame,
            quality_model: dict[str, str],
            lid: LanguageIdResource,
            cost_guard: CostGuard,
            store: ObjectStore,
            engine: RayEngine,
        ):
            yield from materialize(context, raw, quality_model, lid, cost_guard, store, engine)

    else:

        @step(version, t.pod, checks, description=doc)
        def filtered(
            context: dg.AssetExecutionContext,
            raw: pl.LazyFrame,
            lid: LanguageIdResource,
            cost_guard: CostGuard,
            store: ObjectStore,
            engine: RayEngine,
        ):
            yield from materialize(context, raw, None, lid, cost_guard, store, engine)

    return [filtered]
