"""annotated: raw documents with every model-free decision of filtering made (`core.filtering.annotate_batch`): the
URL filter, language ID, datatrove's Gopher / C4 / FineWeb rules and the PII of the documents that pass them
redacted; beside them, as the side table `line_counts`, the document frequency of the source's lines (for
`filtered`'s boilerplate removal). Nothing is dropped here: `filtered` applies the verdicts with the quality model's.
Checks: `no_cross_zone_bytes`.

It needs no model, so `annotate_source` makes it while `train_quality_model` trains (fastText trains on one thread),
and a retrained model or another quality cut re-runs only `filtered`'s scoring and decisions, never language ID and
the rules.

Each row range of raw (`core.filtering.BATCH_DOCS` documents or `BATCH_BYTES` of text) is a Ray task: it writes its
annotated documents as its part of the staging version and returns only its lines' document counts
(`core.boilerplate.line_doc_counts`), which the step merges (`DocFrequency`)."""

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.config.url_lists import url_lists
from curation_assets.core.boilerplate import DocFrequency, line_doc_counts
from curation_assets.core.filtering import BATCH_BYTES, BATCH_DOCS, FilterParams, annotate_batch
from curation_assets.core.frames import StepOutput, WrittenPart, range_frames, row_ranges
from curation_assets.core.urls import UrlLists
from curation_assets.steps.common import enforce_transfers, run_tasks, step
from resources.classifiers import LanguageIdResource
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.versions import PartSink

LINE_COUNTS = "line_counts"  # the side table: `hash`, `docs` of the lines in two or more documents


@dataclass(frozen=True)
class AnnotateTask:
    """A row range of a source's raw documents: the unit of work of `annotated` (a Ray task)."""

    batch: pl.DataFrame
    params: FilterParams
    lid_model: str
    urls: UrlLists | None  # the URL filter's lists (read once by the driver: workers need not see the files)
    sink: PartSink  # where its documents go: part `part` of the version being staged
    part: int


@functools.cache
def _lid(path: str) -> LanguageIdResource:
    return LanguageIdResource(model_path=path)


def annotate_task(task: AnnotateTask) -> tuple[tuple[WrittenPart | None, pl.DataFrame | None], int]:
    """(its annotated documents as written into the staging version, and, with boilerplate removal on, the document
    frequency of its lines, counted on the raw text) of one row range; runs in a Ray worker, the language ID model
    loaded once per worker."""
    batch, p = task.batch, task.params
    lines = line_doc_counts(batch["text"], p.boilerplate_min_chars) if p.boilerplate_min_docs else None
    annotated = annotate_batch(batch, p, _lid(task.lid_model).predict, task.urls)
    return (task.sink.write(task.part, annotated), lines), batch.height


def build(cfg, version: str) -> list:
    """One asset `annotated` per source partition."""
    t = cfg.thresholds.filtered

    @step(version, t.pod, {})
    def annotated(
        context: dg.AssetExecutionContext,
        raw: pl.LazyFrame,
        lid: LanguageIdResource,
        cost_guard: CostGuard,
        engine: RayEngine,
    ):
        """Raw documents (same rows, same order) + `lang`, `lang_score`, `drop_reason` (the first heuristic rule that
        fails; null: passed them all), `drop_value`, `values` (every rule's measured value), `pii_emails`, `pii_ips`;
        the `text` of the documents that passed is C4's kept lines (with `c4_remove_lines`), PII redacted. Side table
        `line_counts`: `hash`, `docs`."""
        params = t.for_source(context.partition_key)
        sizes = raw.select(pl.col("text").str.len_bytes()).collect().to_series()
        size = int(sizes.sum() or 0)
        enforce_transfers(cost_guard, [cost_guard.data_root(size)])
        ranges = row_ranges(sizes, BATCH_DOCS, BATCH_BYTES)
        lists = url_lists(cfg, context.partition_key)
        progress = Progress(total=len(ranges))
        lines = DocFrequency(size, params.boilerplate_min_chars) if params.boilerplate_min_docs else None
        side: dict[str, pl.DataFrame] = {}

        def parts(sink: PartSink) -> Iterator[WrittenPart | None]:
            tasks = (
                AnnotateTask(batch, params, lid.model_path, lists, sink, k)
                for k, batch in enumerate(range_frames(raw.collect_batches(), ranges))
            )
            labels = (f"{context.partition_key} rows {start}-{start + length - 1}" for start, length in ranges)
            for part, counts in run_tasks(context, engine, annotate_task, tasks, labels, progress):
                if lines is not None:
                    lines.add(counts)
                yield part
            if lines is not None:  # the IO manager reads `side` once every part is in
                side[LINE_COUNTS] = lines.counts()

        yield dg.Output(
            StepOutput(
                kept=parts,
                dropped=[],
                rows_in=int(sizes.len()),
                bytes_in=size,
                config_version=version,
                extra=progress.metadata,
                side=side,
            )
        )

    return [annotated]
