"""filtered: raw documents through datatrove's URL filter, language ID, datatrove's Gopher / C4 / FineWeb rules and the
quality model's cut, with PII redacted from the text that passes the rules (`core/filtering.py`), and the
per-document decision ledger beside the output. Checks: `drop_rate`, `no_cross_zone_bytes`.

Two passes over batches of raw, each batch a Ray task: pass 1 marks a batch (a row range of raw: URL filter, language
ID, rules, quality score, PII redaction), writes the marked batch to the step's scratch folder (`resources/scratch.py`)
and returns only its ledger rows, then the partition-wide quality cut settles the ledger; pass 2 sends each batch's
slice of the ledger to a task, which reads the marked batch back, splits it into kept and dropped rows and writes
both as its parts of the staging version (`resources.versions.PartSink`), returning their counts and, per drop
reason, their rows, tokens and bytes (`core.frames.DropTally`): no text returns to the step, so the step's memory
follows a batch, not the source. Pass 1 also counts in how many documents each
line occurs (`core/boilerplate.py`); the driver merges the counts, and pass 2 removes the lines of the source's
boilerplate (in >= `boilerplate_min_docs` documents) from the kept text, dropping a document left empty
(`boilerplate_only`); the ledger gets the counts.

Tokens are counted here, once, in pass 2's tasks: `n_tokens` of each kept document after every edit of its text (C4 line
removal, PII, boilerplate lines), by the recipe tokenizer, so `mixed` weighs by and `tokenized` verifies the counts
of the text as stored. The dropped documents are not tokenized: their volume is their text's bytes, and their
tokens an estimate from a seeded 1/8 sample of them (`core.frames.TokenEstimate`), shown as such in the funnel.
"""

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.config.url_lists import url_lists
from curation_assets.core.boilerplate import DocFrequency, line_doc_counts, settle_ledger, strip_kept
from curation_assets.core.filtering import (
    BATCH_DOCS,
    FilterParams,
    apply_decisions,
    distributions_markdown,
    ledger_of,
    mark_batch,
    partition_ledger,
    pii_totals,
)
from curation_assets.core.frames import (
    DROP_REASON,
    DROPPED,
    DROPPED_SAMPLE_RATE,
    DropTally,
    StepOutput,
    TokenEstimate,
    WrittenPart,
    range_frames,
    row_ranges,
    sample_tokens,
)
from curation_assets.core.urls import UrlLists
from curation_assets.steps.common import (
    drop_rate,
    enforce_transfers,
    failed_checks_of_latest,
    run_tasks,
    step,
    with_tokens,
)
from resources.classifiers import LanguageIdResource, QualityModel
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.io_manager import ParquetIOManager
from resources.scratch import Scratch
from resources.store import ObjectStore
from resources.tokenizer import TokenizerResource, task_tokenizer
from resources.versions import PartSink

# A task's row range: BATCH_DOCS documents or BATCH_BYTES of text, whichever comes first (`core.frames.row_ranges`),
# so a task's memory follows its bytes (a 4,096-document range of long manuals peaked at 1.1 GB), and a source of a
# few thousand long documents still makes a task per core.
BATCH_BYTES = 4 * 2**20


@dataclass(frozen=True)
class FilterTask:
    """A batch of a source's raw documents: the unit of work of `filtered` (a Ray task)."""

    batch: pl.DataFrame
    params: FilterParams
    lid_model: str
    quality_model: str | None  # URI of the quality model's `model.bin`
    urls: UrlLists | None  # the URL filter's lists (read once by the driver: workers need not see the files)
    endpoint_url: str | None
    region: str
    scratch: Scratch  # where the marked batch waits for pass 2
    index: int


@functools.cache
def _lid(path: str) -> LanguageIdResource:
    return LanguageIdResource(model_path=path)


@functools.cache
def _quality(uri: str, endpoint_url: str | None, region: str) -> QualityModel:
    return QualityModel.from_files({"model.bin": uri}, ObjectStore(endpoint_url=endpoint_url, region=region))


def mark_task(task: FilterTask) -> tuple[tuple[pl.DataFrame, pl.DataFrame | None, str], int]:
    """Pass 1 on one batch (`core.filtering.mark_batch`) and, with boilerplate removal on, the document frequency of
    its lines (`core.boilerplate.line_doc_counts`); runs in a Ray worker, models loaded once per worker. The marked
    batch goes to scratch, the step gets its ledger (`core.filtering.ledger_of`), the counts and the file's URI."""
    batch, p = task.batch, task.params
    score = _quality(task.quality_model, task.endpoint_url, task.region).score if task.quality_model else None
    lines = line_doc_counts(batch["text"], p.boilerplate_min_chars) if p.boilerplate_min_docs else None
    marked = mark_batch(batch, p, _lid(task.lid_model).predict, score, task.urls)
    return (ledger_of(marked), lines, task.scratch.put(f"marked-{task.index:05d}.parquet", marked)), batch.height


@dataclass(frozen=True)
class SplitTask:
    """A marked batch of pass 1 and its final `drop_reason`s (the ledger's slice): the unit of work of pass 2."""

    marked: str  # its file in scratch
    scratch: Scratch
    reasons: pl.Series
    boilerplate: pl.Series | None  # the source's boilerplate line hashes; None: line removal off
    min_chars: int
    encoding: str
    sink: PartSink  # where its rows go: part `part` of the kept and of the dropped rows of the version being staged
    part: int


def split_task(
    task: SplitTask,
) -> tuple[tuple[WrittenPart | None, WrittenPart | None, pl.DataFrame | None, pl.DataFrame], int]:
    """Pass 2 on one batch: (its kept rows, boilerplate lines removed and `n_tokens` counted, and its dropped rows
    (every column of `gone`: the same for every batch), each as written into the staging version; the line removal
    per kept row, or None; the dropped rows' token sample), via
    `core.filtering.apply_decisions`, `core.boilerplate.strip_kept` and `core.frames.sample_tokens`; runs in a Ray
    worker."""
    marked = task.scratch.get(task.marked)
    keep, gone = apply_decisions(marked, task.reasons)
    removed = None
    if task.boilerplate is not None:  # line removal after every decision: the ledger's counts, in order
        keep, emptied, removed = strip_kept(keep, task.boilerplate, task.min_chars)
        gone = pl.concat([gone, emptied], how="diagonal_relaxed")
    tokenizer = task_tokenizer(task.encoding)
    sample = sample_tokens(gone, tokenizer.count_tokens, DROPPED_SAMPLE_RATE)
    kept, dropped = task.sink.write(task.part, with_tokens(keep, tokenizer)), task.sink.write(task.part, gone, DROPPED)
    return (kept, dropped, removed, sample), marked.height


def build(cfg, version: str, with_model: bool) -> list:
    """One asset `filtered` per source partition and its checks. With a quality model configured, the current
    `quality_model` file set is an input (name -> URI)."""
    t = cfg.thresholds.filtered

    def materialize(context, raw: pl.LazyFrame, model_files, lid, cost_guard, store, engine, tokenizer, io_manager):
        params = t.for_source(context.partition_key)
        sizes = raw.select(pl.col("text").str.len_bytes()).collect().to_series()
        size = int(sizes.sum() or 0)
        enforce_transfers(cost_guard, [cost_guard.data_root(size)])
        if model_files is not None:
            failed = failed_checks_of_latest(context.instance, "quality_model", ["held_out_quality"], [None])
            if failed:  # a run of curate_source alone does not see the train job's blocking check
                raise dg.Failure(
                    f"the latest quality_model failed its blocking check {failed[None]}: retrain or fix it"
                )
        ranges = row_ranges(sizes, BATCH_DOCS, BATCH_BYTES)
        lists = url_lists(cfg, context.partition_key)
        where = io_manager.scratch_uri(f"filtered/{context.partition_key}", context.run.run_id)
        scratch = Scratch(where, store.endpoint_url, store.region)
        # The marked batches wait in scratch from pass 1 to pass 2, which the IO manager drives while it consumes
        # `kept` (cleared there when it ends); cleared here too when pass 1 fails, and when the IO manager fails
        # before it reads `kept` (another run holds the writer lock: Dagster then closes this generator).
        try:
            tasks = (
                FilterTask(
                    batch=batch,
                    params=params,
                    lid_model=lid.model_path,
                    quality_model=model_files["model.bin"] if model_files else None,
                    urls=lists,
                    endpoint_url=store.endpoint_url,
                    region=store.region,
                    scratch=scratch,
                    index=k,
                )
                for k, batch in enumerate(range_frames(raw.collect_batches(), ranges))
            )
            progress = Progress(total=2 * len(ranges))  # two passes

            def labels() -> Iterator[str]:
                return (f"{context.partition_key} rows {start}-{start + length - 1}" for start, length in ranges)

            ledgers, spilled = [], []
            lines = DocFrequency(size, params.boilerplate_min_chars) if params.boilerplate_min_docs else None
            for batch_ledger, counts, uri in run_tasks(context, engine, mark_task, tasks, labels(), progress):
                ledgers.append(batch_ledger)
                spilled.append(uri)
                if lines is not None:
                    lines.add(counts)
            ledger = partition_ledger(ledgers, params)
            boilerplate = lines.frequent(params.boilerplate_min_docs) if lines is not None else None
            side = {"ledger": ledger}
            dropped: list[WrittenPart | None] = []
            removed: list[pl.DataFrame] = []
            samples: list[pl.DataFrame] = []  # the dropped documents' token sample, per batch

            def kept(sink: PartSink) -> Iterator[WrittenPart | None]:
                starts = [0, *itertools.accumulate(batch.height for batch in ledgers)]
                tasks = (
                    SplitTask(
                        marked=spilled[k],
                        scratch=scratch,
                        reasons=ledger[DROP_REASON].slice(starts[k], starts[k + 1] - starts[k]),
                        boilerplate=boilerplate,
                        min_chars=params.boilerplate_min_chars,
                        encoding=tokenizer.encoding,
                        sink=sink,
                        part=k,
                    )
                    for k in range(len(ledgers))
                )
                split = run_tasks(
                    context, engine, split_task, tasks, (f"{label} (pass 2)" for label in labels()), progress
                )
                try:
                    for keep, gone, counts, sample in split:
                        dropped.append(gone)
                        if counts is not None:
                            removed.append(counts)
                        samples.append(sample)
                        yield keep  # the text as stored, every edit done: written by its task
                finally:  # pass 2 runs inside the IO manager, while this generator waits at its yield
                    scratch.clear()

            def dropped_parts() -> list[WrittenPart | None]:
                # the IO manager reads `side` after this: every document's removed lines
                side["ledger"] = settle_ledger(ledger, removed if boilerplate is not None else None)
                return dropped

            yield dg.Output(
                StepOutput(
                    kept=kept,
                    dropped=dropped_parts,
                    rows_in=ledger.height,
                    bytes_in=size,
                    config_version=version,
                    estimate=lambda: TokenEstimate.of(
                        samples,
                        cfg.tokenizer.name,
                        dropped_bytes=sum((p.drops for p in dropped if p), DropTally()).nbytes,
                        rate=DROPPED_SAMPLE_RATE,
                    ),
                    extra=lambda: {  # after pass 2: its tasks count too
                        **progress.metadata(),
                        "rule_value_distributions": dg.MetadataValue.md(distributions_markdown(ledger)),
                        "pii_redacted": pii_totals(ledger),
                    },
                    side=side,
                )
            )
        finally:
            scratch.clear()

    doc = (
        "Raw documents that pass the URL blocklists, language ID, Gopher repetition + quality, C4 and FineWeb quality "
        "and the configured quality-model cut, with e-mail and public IP addresses redacted and the source's "
        "boilerplate lines removed, + `lang`, `lang_score`, "
        "`quality_score`; dropped rows keep every column and their `drop_reason`."
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
            tokenizer: TokenizerResource,
            io_manager: dg.ResourceParam[ParquetIOManager],
        ):
            yield from materialize(context, raw, quality_model, lid, cost_guard, store, engine, tokenizer, io_manager)

    else:

        @step(version, t.pod, checks, description=doc)
        def filtered(
            context: dg.AssetExecutionContext,
            raw: pl.LazyFrame,
            lid: LanguageIdResource,
            cost_guard: CostGuard,
            store: ObjectStore,
            engine: RayEngine,
            tokenizer: TokenizerResource,
            io_manager: dg.ResourceParam[ParquetIOManager],
        ):
            yield from materialize(context, raw, None, lid, cost_guard, store, engine, tokenizer, io_manager)

    return [filtered]
