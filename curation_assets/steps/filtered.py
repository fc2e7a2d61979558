"""filtered: annotated documents (`annotated`: URL filter, language ID, datatrove's Gopher / C4 / FineWeb rules, PII
redacted) through the quality model's cut, and the source's boilerplate lines removed, with the per-document decision
ledger beside the output. Checks: `drop_rate`, `no_cross_zone_bytes`.

Two passes over the parts of annotated, each part a Ray task that reads it itself: pass 1 scores the documents the
heuristic rules passed (`core.filtering.score_batch`) and returns only the part's ledger rows, then the
partition-wide quality cut settles the ledger; pass 2 sends each part's slice of the ledger to a task, which reads the
part again, splits it into kept and dropped rows and writes both as its parts of the staging version
(`resources.versions.PartSink`), returning their counts and, per drop reason, their rows, tokens and bytes
(`core.frames.DropTally`): no text passes through the step, so its memory follows a part, not the source. Pass 2
removes the lines of the source's boilerplate (in >= `boilerplate_min_docs` documents, by annotated's `line_counts`,
`core/boilerplate.py`) from the kept text, dropping a document left empty (`boilerplate_only`); the ledger gets the
counts.

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

from curation_assets.core.boilerplate import frequent_lines, settle_ledger, strip_kept
from curation_assets.core.filtering import (
    FilterParams,
    apply_decisions,
    distributions_markdown,
    ledger_of,
    partition_ledger,
    pii_totals,
    score_batch,
)
from curation_assets.core.frames import (
    DROP_REASON,
    DROPPED,
    DROPPED_SAMPLE_RATE,
    DropTally,
    StepOutput,
    TokenEstimate,
    WrittenPart,
    read_parquet_bytes,
    sample_tokens,
)
from curation_assets.steps.annotated import LINE_COUNTS
from curation_assets.steps.common import (
    drop_rate,
    enforce_transfers,
    failed_checks_of_latest,
    run_tasks,
    step,
    with_tokens,
)
from resources.classifiers import QualityModel
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.io_manager import LOAD, PARTS
from resources.store import ObjectStore
from resources.tokenizer import TokenizerResource, task_tokenizer
from resources.versions import PartSink


@dataclass(frozen=True)
class ScoreTask:
    """A part of a source's annotated documents: the unit of work of `filtered`'s pass 1 (a Ray task)."""

    part: str  # its URI
    params: FilterParams
    quality_model: str | None  # URI of the quality model's `model.bin`
    endpoint_url: str | None
    region: str


@functools.cache
def _quality(uri: str, endpoint_url: str | None, region: str) -> QualityModel:
    return QualityModel.from_files({"model.bin": uri}, ObjectStore(endpoint_url=endpoint_url, region=region))


def _read(uri: str, endpoint_url: str | None, region: str) -> pl.DataFrame:
    """A stored table, every page's CRC verified."""
    return read_parquet_bytes(ObjectStore(endpoint_url=endpoint_url, region=region).read_bytes(uri))


def score_task(task: ScoreTask) -> tuple[tuple[pl.DataFrame, int], int]:
    """Pass 1 on one part: its ledger rows (`core.filtering.ledger_of`), scored by the quality model
    (`core.filtering.score_batch`) when one is configured, and its text's UTF-8 bytes; runs in a Ray worker, the
    model loaded once per worker."""
    part = _read(task.part, task.endpoint_url, task.region)
    if task.quality_model is not None:
        part = score_batch(part, task.params, _quality(task.quality_model, task.endpoint_url, task.region).score)
    return (ledger_of(part), int(part["text"].str.len_bytes().sum() or 0)), part.height


@dataclass(frozen=True)
class SplitTask:
    """A part of annotated and its rows of the settled ledger: the unit of work of pass 2."""

    part: str  # its URI
    endpoint_url: str | None
    region: str
    decisions: pl.DataFrame  # the ledger's slice: `drop_reason` (+ `quality_score` with a quality model)
    boilerplate: pl.Series | None  # the source's boilerplate line hashes; None: line removal off
    min_chars: int
    encoding: str
    sink: PartSink  # where its rows go: part `index` of the kept and of the dropped rows of the version being staged
    index: int


def split_task(
    task: SplitTask,
) -> tuple[tuple[WrittenPart | None, WrittenPart | None, pl.DataFrame | None, pl.DataFrame], int]:
    """Pass 2 on one part: (its kept rows, boilerplate lines removed and `n_tokens` counted, and its dropped rows
    (every column of `gone`: the same for every part), each as written into the staging version; the line removal
    per kept row, or None; the dropped rows' token sample), via
    `core.filtering.apply_decisions`, `core.boilerplate.strip_kept` and `core.frames.sample_tokens`; runs in a Ray
    worker."""
    marked = _read(task.part, task.endpoint_url, task.region).with_columns(task.decisions.drop(DROP_REASON))
    keep, gone = apply_decisions(marked, task.decisions[DROP_REASON])
    removed = None
    if task.boilerplate is not None:  # line removal after every decision: the ledger's counts, in order
        keep, emptied, removed = strip_kept(keep, task.boilerplate, task.min_chars)
        gone = pl.concat([gone, emptied], how="diagonal_relaxed")
    tokenizer = task_tokenizer(task.encoding)
    sample = sample_tokens(gone, tokenizer.count_tokens, DROPPED_SAMPLE_RATE)
    kept, dropped = (
        task.sink.write(task.index, with_tokens(keep, tokenizer)),
        task.sink.write(task.index, gone, DROPPED),
    )
    return (kept, dropped, removed, sample), marked.height


def build(cfg, version: str, with_model: bool) -> list:
    """One asset `filtered` per source partition and its checks. With a quality model configured, the current
    `quality_model` file set is an input (name -> URI)."""
    t = cfg.thresholds.filtered

    def materialize(context, annotated: dict, model_files, cost_guard, store, engine, tokenizer):
        params = t.for_source(context.partition_key)
        stored = annotated.get(context.partition_key)
        if stored is None:
            raise dg.Failure(f"annotated[{context.partition_key}] has not been materialized (job annotate_source)")
        enforce_transfers(cost_guard, [cost_guard.data_root(int(stored["part_bytes"] or 0))])
        if model_files is not None:
            failed = failed_checks_of_latest(context.instance, "quality_model", ["held_out_quality"], [None])
            if failed:  # a run of curate_source alone does not see the train job's blocking check
                raise dg.Failure(
                    f"the latest quality_model failed its blocking check {failed[None]}: retrain or fix it"
                )
        parts, where = stored["parts"], (store.endpoint_url, store.region)
        boilerplate = None
        if params.boilerplate_min_docs:
            counts = stored["side"].get(LINE_COUNTS)
            if counts is None:
                raise dg.Failure(f"annotated[{context.partition_key}] has no {LINE_COUNTS}: rematerialize it")
            boilerplate = frequent_lines(_read(counts, *where), params.boilerplate_min_docs)
        model = model_files["model.bin"] if model_files else None
        progress = Progress(total=2 * len(parts))  # two passes

        def labels() -> Iterator[str]:
            return (f"{context.partition_key} annotated part {k}" for k in range(len(parts)))

        scored = run_tasks(
            context, engine, score_task, (ScoreTask(uri, params, model, *where) for uri in parts), labels(), progress
        )
        ledgers, sizes = zip(*scored, strict=True) if parts else ((), ())
        ledger = partition_ledger(list(ledgers), params)
        side = {"ledger": ledger}
        dropped: list[WrittenPart | None] = []
        removed: list[pl.DataFrame] = []
        samples: list[pl.DataFrame] = []  # the dropped documents' token sample, per part
        decisions = ledger.select(DROP_REASON, *(["quality_score"] if model else []))

        def kept(sink: PartSink) -> Iterator[WrittenPart | None]:
            starts = [0, *itertools.accumulate(batch.height for batch in ledgers)]
            tasks = (
                SplitTask(
                    part=uri,
                    endpoint_url=store.endpoint_url,
                    region=store.region,
                    decisions=decisions.slice(starts[k], starts[k + 1] - starts[k]),
                    boilerplate=boilerplate,
                    min_chars=params.boilerplate_min_chars,
                    encoding=tokenizer.encoding,
                    sink=sink,
                    index=k,
                )
                for k, uri in enumerate(parts)
            )
            for keep, gone, counts, sample in run_tasks(
                context, engine, split_task, tasks, (f"{label} (pass 2)" for label in labels()), progress
            ):
                dropped.append(gone)
                if counts is not None:
                    removed.append(counts)
                samples.append(sample)
                yield keep  # the text as stored, every edit done: written by its task

        def dropped_parts() -> list[WrittenPart | None]:
            # the IO manager reads `side` after this: every document's removed lines
            side["ledger"] = settle_ledger(ledger, removed if boilerplate is not None else None)
            return dropped

        yield dg.Output(
            StepOutput(
                kept=kept,
                dropped=dropped_parts,
                rows_in=ledger.height,
                bytes_in=sum(sizes),
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

    doc = (
        "Annotated documents that pass the URL blocklists, language ID, Gopher repetition + quality, C4 and FineWeb "
        "quality and the configured quality-model cut, with e-mail and public IP addresses redacted and the source's "
        "boilerplate lines removed, + `lang`, `lang_score`, `quality_score`; dropped rows keep every column and "
        "their `drop_reason`."
    )
    checks = {"drop_rate": drop_rate(t.max_drop_rate)}
    annotated_in = {"annotated": dg.AssetIn(metadata={LOAD: PARTS})}
    if with_model:

        @step(version, t.pod, checks, ins={**annotated_in, "quality_model": dg.AssetIn()}, description=doc)
        def filtered(
            context: dg.AssetExecutionContext,
            annotated: dict,
            quality_model: dict[str, str],
            cost_guard: CostGuard,
            store: ObjectStore,
            engine: RayEngine,
            tokenizer: TokenizerResource,
        ):
            yield from materialize(context, annotated, quality_model, cost_guard, store, engine, tokenizer)

    else:

        @step(version, t.pod, checks, ins=annotated_in, description=doc)
        def filtered(
            context: dg.AssetExecutionContext,
            annotated: dict,
            cost_guard: CostGuard,
            store: ObjectStore,
            engine: RayEngine,
            tokenizer: TokenizerResource,
        ):
            yield from materialize(context, annotated, None, cost_guard, store, engine, tokenizer)

    return [filtered]
