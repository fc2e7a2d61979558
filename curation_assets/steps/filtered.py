"""filtered: the asset wrapper of core/filtering.py."""

from collections.abc import Callable, Iterable, Iterator, Sequence

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.steps.common import (
    failed_checks_of_latest,
    drop_rate_result,
    enforce_transfers,
    source_step,
)
from curation_assets.core.filter_rules import features
from curation_assets.core.frames import DROP_REASON, StepOutput, mark_dropped, split_kept, stable_id
from curation_assets.core.quality import one_line
from resources.classifiers import LanguageIdResource, QualityModel
from resources.cost_guard import CostGuard

from curation_assets.core.filtering import *  # FIXME

def _batches(raw: pl.LazyFrame, size: int = BATCH_DOCS) -> Iterator[pl.DataFrame]:
    n = raw.select(pl.len()).collect().item()
    for start in range(0, n, size):
        yield raw.slice(start, size).collect()


def _materialize(
    cfg,
    version: str,
    context: dg.AssetExecutionContext,
    raw: pl.LazyFrame,
    with_model: bool,
    lid: LanguageIdResource,
    cost_guard: CostGuard,
):
    import tempfile

    params = FilterParams(**cfg.thresholds.filtered.for_source(context.partition_key))
    size = raw.select(pl.col("text").str.len_bytes().sum()).collect().item() or 0
    transfer = enforce_transfers(cost_guard, [cost_guard.data_root(size)])
    spill = tempfile.TemporaryDirectory(prefix="filtered-")
    score = None
    if with_model:  # the file set of the current quality_model version (a dep, not an input: it may be absent)
        failed = failed_checks_of_latest(context.instance, "quality_model", ["held_out_quality"], [None])
        if failed:  # a run of curate_source alone does not see the train job's blocking check
            raise dg.Failure(f"the latest quality_model failed its blocking check {failed[None]}: retrain or fix it")
        io = context.resources.io_manager
        score = QualityModel.from_files(io.load_files(dg.AssetKey("quality_model")), io.store).score
    ledger = run_filter(_batches(raw), params, lid.predict, score, spill.name)
    dropped: list[pl.DataFrame] = []

    def dropped_frame() -> pl.DataFrame:
        frame = (
            pl.concat(dropped, how="diagonal_relaxed")
            if dropped
            else pl.DataFrame(schema={"doc_id": pl.String, DROP_REASON: pl.String})
        )
        spill.cleanup()
        return frame

    extra = {
        **transfer,
        "rule_value_distributions": dg.MetadataValue.md(distributions_markdown(ledger)),
    }
    out = StepOutput(
        kept=iter_decided(spill.name, ledger, dropped),
        dropped=dropped_frame,
        rows_in=ledger.height,
        bytes_in=size,
        config_version=version,
        extra=extra,
        side={"ledger": ledger},
    )
    yield dg.Output(out)
    yield drop_rate_result(out, cfg.thresholds.filtered.max_drop_rate)


def build(cfg, version: str, with_model: bool) -> dg.AssetsDefinition:
    """One asset `filtered` per source partition. Streams batches of raw (two passes over spilled batches); the
    per-document decision ledger is persisted beside the output (side table `ledger`)."""

    @source_step("filtered", version, cfg.thresholds.filtered.pod, deps=["quality_model"] if with_model else [])
    def filtered(context: dg.AssetExecutionContext, raw: pl.LazyFrame, lid: LanguageIdResource, cost_guard: CostGuard):
        """Raw documents that pass language ID, Gopher repetition + quality, C4 and FineWeb quality and the configured
        quality-model cut, + `lang`, `lang_score`, `quality_score`; dropped rows keep every column and their
        `drop_reason`."""
        yield from _materialize(cfg, version, context, raw, with_model, lid, cost_guard)

    return filtered
