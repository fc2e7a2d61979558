"""synthetic: the deduped documents plus synthetic ones from seeded samples (`core/synthesis.py`: programmatic
generators, and LLM templates through `resources.synthetic.SyntheticBackend`). Checks: `drop_rate`,
`no_cross_zone_bytes`.

Each row range of deduped (as filtered's tasks cut them) is a Ray task: it writes its documents as its part of the
staging version and what each generator makes of its seeds as that generator's part for the range, so no document
returns to the step. The parts read, in order, as the documents and then each generator's documents in seed order
(a seed's documents depend on that seed alone); the LLM templates' documents (their own `llm_rate` sample, gathered
by the step, which calls the endpoint through its budgeted client and cache) are the last part."""

import functools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.core.filtering import BATCH_BYTES, BATCH_DOCS
from curation_assets.core.frames import (
    DOC_SCHEMA,
    Added,
    StepOutput,
    WrittenPart,
    conform,
    empty_frame,
    range_frames,
    row_ranges,
)
from curation_assets.core.generators import generate
from curation_assets.core.prompts import llm_requests
from curation_assets.core.synthesis import (
    SKIPPED_SCHEMA,
    SYNTH_SCHEMA,
    SynthParams,
    generated,
    llm_generated,
    llm_seeds_of,
    seeds_of,
)
from curation_assets.steps.common import drop_rate, enforce_transfers, run_tasks, step, with_tokens
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.store import ObjectStore
from resources.synthetic import SyntheticBackend
from resources.tokenizer import TokenizerResource, task_tokenizer
from resources.versions import PartSink

MADE_SCHEMA = {**SYNTH_SCHEMA, "n_tokens": pl.Int64()}  # a generated document, counted (`with_tokens`)


@dataclass(frozen=True)
class SyntheticTask:
    """A row range of a source's deduped documents: the unit of work of `synthetic` (a Ray task)."""

    batch: pl.DataFrame
    params: SynthParams
    encoding: str
    schema: dict[str, pl.DataType]  # every part's columns: deduped's, then the provenance ones
    sink: PartSink  # the documents go to part `part`, generator g's to part `part + (g + 1) * ranges`
    part: int
    ranges: int


@dataclass(frozen=True)
class SyntheticResult:
    """What a `SyntheticTask` wrote (the documents' part, then one part per generator) and what it made."""

    docs: WrittenPart | None
    made: list[WrittenPart | None]
    templates: Counter  # generated documents per template_id
    skipped: pl.DataFrame  # SKIPPED_SCHEMA: seeds a generator would have spent more than `max_work` on


def synthetic_task(task: SyntheticTask) -> tuple[SyntheticResult, int]:
    """Write the range's documents and, per generator, `core.synthesis.generated` of its seeds with their token
    counts; runs in a Ray worker."""
    docs = task.sink.write(task.part, conform(task.batch, task.schema))
    seeds = seeds_of(task.batch.select(list(DOC_SCHEMA)), task.params)
    made, templates, skipped = [], Counter(), [empty_frame(SKIPPED_SCHEMA)]
    for g, name in enumerate(task.params.generators):
        frame, skips = generated(seeds, name, generate, task.params.max_work)
        frame = with_tokens(frame, task_tokenizer(task.encoding))
        made.append(task.sink.write(task.part + (g + 1) * task.ranges, conform(frame, task.schema)))
        templates.update(frame["template_id"].to_list())
        skipped.append(skips)
    return SyntheticResult(docs, made, templates, pl.concat(skipped)), task.batch.height


def build(cfg, version: str) -> list:
    """`synthetic` per source and its checks."""
    t = cfg.thresholds.synthetic

    @step(version, t.pod, {"drop_rate": drop_rate(t.max_drop_rate)})
    def synthetic(
        context: dg.AssetExecutionContext,
        deduped: pl.LazyFrame,
        synth_backend: SyntheticBackend,
        cost_guard: CostGuard,
        tokenizer: TokenizerResource,
        store: ObjectStore,
        engine: RayEngine,
    ):
        """Deduped documents plus synthetic ones (provenance columns: parent_doc_id, generator, template_id, model,
        gen_params; null on a deduped document). LLM results are cached by content hash under the data root and
        never recomputed."""
        source = context.partition_key
        sizes = deduped.select(pl.col("text").str.len_bytes()).collect().to_series()
        enforce_transfers(cost_guard, [cost_guard.data_root(int(sizes.sum() or 0))])
        params = t.for_source(source)
        schema = dict(
            pl.concat([empty_frame(deduped.collect_schema()), empty_frame(MADE_SCHEMA)], how="diagonal_relaxed").schema
        )
        ranges = row_ranges(sizes, BATCH_DOCS, BATCH_BYTES) or [(0, 0)]  # an empty source still has its part 0
        progress = Progress(total=len(ranges))
        seen: dict[str, object] = {"bytes": 0, "llm_seeds": [], "made": [], "templates": Counter(), "skipped": []}
        client = synth_backend.client(store, params.budget_tokens, params.budget_usd) if params.llm_templates else None

        def llm(template: str, texts: list[str]) -> list[dict | None]:
            reqs = llm_requests(
                texts,
                template,
                synth_backend.model,
                synth_backend.llm_params,
                params.max_input_chars,
                params.max_output_tokens,
            )
            results = client.run(reqs)
            return [results[r.key] for r in reqs]

        def kept(sink: PartSink) -> Iterator[WrittenPart | pl.DataFrame | None]:
            def tasks() -> Iterator[SyntheticTask]:
                batches = range_frames(deduped.collect_batches(), ranges) if sizes.len() else [deduped.collect()]
                for k, batch in enumerate(batches):
                    seen["bytes"] += batch.estimated_size()
                    if client is not None:
                        seen["llm_seeds"].append(llm_seeds_of(batch.select(list(DOC_SCHEMA)), params))
                    yield SyntheticTask(batch, params, tokenizer.encoding, schema, sink, k, len(ranges))

            labels = (f"{source} rows {start}-{start + length - 1}" for start, length in ranges)
            for result in run_tasks(context, engine, synthetic_task, tasks(), labels, progress):
                seen["made"].append(result.made)
                seen["templates"].update(result.templates)
                seen["skipped"].append(result.skipped)
                yield result.docs
            for g in range(len(params.generators)):
                yield from (parts[g] for parts in seen["made"])
            if client is not None:
                seeds = pl.concat(seen["llm_seeds"])
                frame = with_tokens(llm_generated(seeds, params, llm, synth_backend.llm_params), tokenizer)
                seen["templates"].update(frame["template_id"].to_list())
                seen["llm"] = (frame.height, int(frame["n_tokens"].sum() or 0))
                yield conform(frame, schema)

        def made() -> tuple[int, int]:
            """Generated documents and their tokens."""
            parts = [part for parts in seen["made"] for part in parts if part is not None]
            rows, tokens = seen.get("llm", (0, 0))
            return rows + sum(p.rows for p in parts), tokens + sum(p.tokens or 0 for p in parts)

        @functools.cache
        def skips() -> dict[str, int]:
            """Seeds skipped per generator and reason, logged once (read after streaming)."""
            skipped = pl.concat(seen["skipped"])
            if skipped.height:
                context.log.warning(
                    f"{skipped.height} seeds skipped (generator_budget_exceeded): {skipped.head(20).rows()}"
                )
            # a seed a generator would spend more than `max_work` on is skipped, not dropped: the document stays kept
            return {
                f"{g}:{reason}": n
                for g, reason, n in skipped.group_by("generator", "skip_reason")
                .len()
                .sort("generator", "skip_reason")
                .iter_rows()
            }

        def added() -> Added:
            what = "generated" + "".join(f"; seeds skipped ({k}): {n}" for k, n in skips().items())
            return Added(what, *made())

        def extra() -> dict[str, object]:
            rows, tokens = made()
            llm_md = (
                {f"llm_{k}": v for k, v in vars(client.stats).items()}
                | {
                    "llm_spent_tokens": client.budget.spent_tokens,
                    "llm_spent_usd": round(client.budget.spent_usd, 6),
                    "llm_budget_stop": client.stats.budget_skipped > 0,
                }
                if client
                else {}
            )
            return {
                "synthetic_docs": rows,
                "synthetic_tokens": tokens,
                **{f"synthetic_{tid}": n for tid, n in sorted(seen["templates"].items())},
                "synthetic_skipped": skips(),
                **llm_md,
                **progress.metadata(),
            }

        yield dg.Output(
            StepOutput(
                kept=kept,
                dropped=empty_frame({**DOC_SCHEMA, "drop_reason": pl.String()}),
                rows_in=sizes.len(),
                bytes_in=lambda: seen["bytes"],
                config_version=version,
                added=added,
                extra=extra,
            )
        )

    return [synthetic]
