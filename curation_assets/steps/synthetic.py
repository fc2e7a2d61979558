"""synthetic: the deduped documents plus synthetic ones from seeded samples (`core/synthesis.py`: programmatic
generators, and LLM templates through `resources.synthetic.SyntheticBackend`). Checks: `drop_rate`,
`no_cross_zone_bytes`."""

from dataclasses import dataclass

import dagster as dg
import polars as pl

from curation_assets.core.frames import DOC_SCHEMA, Added, StepOutput, empty_frame
from curation_assets.core.generators import generate
from curation_assets.core.prompts import llm_requests
from curation_assets.core.synthesis import SKIPPED_SCHEMA, SYNTH_SCHEMA, generated, llm_generated, seeds_of
from curation_assets.steps.common import drop_rate, enforce_transfers, run_tasks, step, with_tokens
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.store import ObjectStore
from resources.synthetic import SyntheticBackend
from resources.tokenizer import TokenizerResource, task_tokenizer

# Seeds per generator task: enough work to amortise a task (~ms each), few enough that a slow document's task does
# not hold the step back.
SEEDS_PER_TASK = 256


@dataclass(frozen=True)
class GenerateTask:
    """One programmatic generator over a chunk of seeds: the unit of work of `synthetic` (a Ray task)."""

    generator: str
    seeds: pl.DataFrame
    encoding: str
    max_work: int | None


def generate_task(task: GenerateTask) -> tuple[tuple[pl.DataFrame, pl.DataFrame], int]:
    """`core.synthesis.generated` + token counts of one chunk, and the seeds it skipped; runs in a Ray worker."""
    made, skipped = generated(task.seeds, task.generator, generate, task.max_work)
    return (with_tokens(made, task_tokenizer(task.encoding)), skipped), task.seeds.height


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
        gen_params). LLM results are cached by content hash under the data root and never recomputed."""
        docs = deduped.collect()
        enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        params = t.for_source(context.partition_key)
        client, llm = None, None
        if params.llm_templates:
            client = synth_backend.client(store, params.budget_tokens, params.budget_usd)

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

        docs_in = docs.select(list(DOC_SCHEMA))
        seeds = seeds_of(docs_in, params)
        tasks = [
            GenerateTask(name, seeds.slice(start, SEEDS_PER_TASK), tokenizer.encoding, params.max_work)
            for name in params.generators
            for start in range(0, seeds.height, SEEDS_PER_TASK)
        ]
        progress = Progress(total=len(tasks))
        labels = [f"{t.generator} seeds {t.seeds['doc_id'][0]}.." for t in tasks]
        results = list(run_tasks(context, engine, generate_task, tasks, labels, progress))
        parts = [made for made, _ in results]
        # a seed a generator would spend more than `max_work` on is skipped, not dropped: the document stays kept
        skipped = pl.concat([empty_frame(SKIPPED_SCHEMA), *(skips for _, skips in results)])
        if skipped.height:
            context.log.warning(
                f"{skipped.height} seeds skipped (generator_budget_exceeded): {skipped.head(20).rows()}"
            )
        skips = {
            f"{g}:{reason}": n
            for g, reason, n in skipped.group_by("generator", "skip_reason")
            .len()
            .sort("generator", "skip_reason")
            .iter_rows()
        }
        if params.llm_templates:
            parts.append(with_tokens(llm_generated(docs_in, params, llm, synth_backend.llm_params), tokenizer))
        made = pl.concat([with_tokens(empty_frame(SYNTH_SCHEMA), tokenizer), *parts])
        per_gen = dict(made.group_by("template_id").len().sort("template_id").iter_rows()) if made.height else {}
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
        yield dg.Output(
            StepOutput(
                kept=pl.concat([docs, made], how="diagonal_relaxed"),
                dropped=empty_frame({**DOC_SCHEMA, "drop_reason": pl.String()}),
                rows_in=docs.height,
                bytes_in=docs.estimated_size(),
                config_version=version,
                added=Added(
                    "generated" + "".join(f"; seeds skipped ({k}): {n}" for k, n in skips.items()),
                    made.height,
                    int(made["n_tokens"].sum() or 0),
                ),
                extra={
                    "synthetic_docs": made.height,
                    "synthetic_tokens": int(made["n_tokens"].sum() or 0),
                    **{f"synthetic_{tid}": n for tid, n in per_gen.items()},
                    "synthetic_skipped": skips,
                    **llm_md,
                    **progress.metadata(),
                },
            )
        )

    return [synthetic]
