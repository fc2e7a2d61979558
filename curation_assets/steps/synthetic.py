"""synthetic: the asset wrapper of core/synthesis.py."""

import hashlib
from collections.abc import Callable

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.steps.common import (
    drop_rate_result,
    enforce_transfers,
    source_step,
    with_tokens,
)
from curation_assets.core.frames import DOC_SCHEMA, StepOutput, empty_frame, meta_json, stable_id
from resources.cost_guard import CostGuard
from curation_assets.core.generators import PROGRAMMATIC, Synth
from resources.synthetic import LLM_TEMPLATES, SyntheticBackend, llm_requests
from resources.tokenizer import TokenizerResource

from curation_assets.core.synthesis import *  # FIXME

def build(cfg, version: str) -> dg.AssetsDefinition:

    @source_step("synthetic", version, cfg.thresholds.synthetic.pod)
    def synthetic(
        context: dg.AssetExecutionContext,
        deduped: pl.LazyFrame,
        synth_backend: SyntheticBackend,
        cost_guard: CostGuard,
        tokenizer: TokenizerResource,
    ):
        """Deduped documents plus synthetic ones (provenance columns: parent_doc_id, generator, template_id, model,
        gen_params). LLM results are cached by content hash under the data root and never recomputed."""
        docs = deduped.collect()
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        params = SynthParams(**cfg.thresholds.synthetic.for_source(context.partition_key))
        client, llm = None, None
        if params.llm_templates:
            io = context.resources.io_manager
            client = synth_backend.client(
                io.store, f"{io.base_uri.rstrip('/')}/_synthetic_cache", params.budget_tokens, params.budget_usd
            )

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

        made = synthesize(docs.select(list(DOC_SCHEMA)), params, synth_backend.generate, llm, synth_backend.llm_params)
        made = with_tokens(made, tokenizer)
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
        out = StepOutput(
            kept=pl.concat([docs, made], how="diagonal_relaxed"),
            dropped=empty_frame({**DOC_SCHEMA, "drop_reason": pl.String()}),
            rows_in=docs.height,
            bytes_in=docs.estimated_size(),
            config_version=version,
            extra={
                "synthetic_docs": made.height,
                "synthetic_tokens": int(made["n_tokens"].sum() or 0),
                **{f"synthetic_{t}": n for t, n in per_gen.items()},
                **llm_md,
                **transfer,
            },
        )
        yield dg.Output(out)
        yield drop_rate_result(out, cfg.thresholds.synthetic.max_drop_rate)

    return synthetic
