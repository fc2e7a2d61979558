"""synthetic: deduped docs + synthetic documents generated from seeded samples of them (programmatic and LLM)."""

import hashlib
from collections.abc import Callable

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets._dagster import (
    drop_rate_result,
    enforce_transfers,
    source_step,
    with_tokens,
)
from curation_assets.frames import DOC_SCHEMA, StepOutput, empty_frame, meta_json, stable_id
from resources.cost_guard import CostGuard
from resources.generators import PROGRAMMATIC, Synth
from resources.synthetic import LLM_TEMPLATES, SyntheticBackend, llm_requests
from resources.tokenizer import TokenizerResource

PROVENANCE = {
    "parent_doc_id": pl.String(),
    "generator": pl.String(),
    "template_id": pl.String(),
    "model": pl.String(),
    "gen_params": pl.String(),
}
SYNTH_SCHEMA = {**DOC_SCHEMA, **PROVENANCE}


class SynthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Share of documents used as seeds. Synthetic data is kept a minority of a source: rephrased/QA data helps at
    # ~10-30 % of a mixture but hurts when it dominates (Nemotron-CC; Maini et al. 2024, "Rephrasing the Web").
    rate: float = Field(default=0.1, ge=0, le=1)
    min_chars: int = Field(default=500, ge=0)
    generators: list[str] = ["cloze"]
    # LLM templates (resources/synthetic.py LLM_TEMPLATES) run on a separate, smaller seeded sample
    llm_templates: list[str] = []
    llm_rate: float = Field(default=0.02, ge=0, le=1)
    max_input_chars: int = Field(default=4000, gt=0)  # WRAP rephrases chunks of ~300 tokens; QA needs more context
    max_output_tokens: int = Field(default=512, gt=0)
    budget_tokens: int | None = Field(default=200_000, ge=0)  # prompt + completion per materialization
    budget_usd: float | None = Field(default=None, ge=0)

    def model_post_init(self, _) -> None:
        unknown = sorted(set(self.generators) - set(PROGRAMMATIC)) + sorted(
            set(self.llm_templates) - set(LLM_TEMPLATES)
        )
        if unknown:
            raise ValueError(f"unknown generators/templates: {unknown}")


def seed_selected(doc_ids: pl.Series, rate: float, salt: str = "") -> pl.Series:
    """Deterministic Bernoulli(rate) per doc_id (sha256, so it does not depend on the polars version)."""
    cut = rate * 2**32
    return pl.Series(
        [int(hashlib.sha256((salt + d).encode()).hexdigest()[:8], 16) < cut for d in doc_ids], dtype=pl.Boolean
    )


def _rows(seeds: pl.DataFrame, made: list[list[Synth]], generator: str, model: str | None, params: dict) -> list[dict]:
    rows = []
    for parent, source, url, synths in zip(seeds["doc_id"], seeds["source"], seeds["url"], made, strict=True):
        for k, s in enumerate(synths):
            prov = {
                "parent_doc_id": parent,
                "generator": generator,
                "template_id": s.template_id,
                "model": model,
                "gen_params": meta_json(params),
            }
            rows.append(
                {
                    "doc_id": stable_id("synthetic", generator, s.template_id, parent, k),
                    "source": source,
                    "text": s.text,
                    "url": url,
                    "shard": f"synthetic:{generator}",
                    "meta": meta_json({**prov, "gen_params": params}),
                    **prov,
                }
            )
    return rows


def synthesize(
    docs: pl.DataFrame,
    params: SynthParams,
    generate: Callable[[str, list[str], list[str]], list[list[Synth]]],
    llm: Callable[[str, list[str]], list[dict | None]] | None = None,
    llm_params: dict | None = None,
) -> pl.DataFrame:
    """Synthetic documents (SYNTH_SCHEMA: DOC_SCHEMA + provenance) from `docs` (DOC_SCHEMA).

    Programmatic generators run on a Bernoulli(`rate`) sample of the documents with >= `min_chars` characters; LLM
    templates on a separate Bernoulli(`llm_rate`) sample, through `llm(template_id, texts) -> [result | None]`
    (None: failed or over budget, no row). Every row carries parent_doc_id, generator, template_id, model and
    gen_params (also in `meta`); doc_id = stable_id(generator, template, parent, k).
    """
    long_enough = pl.col("text").str.len_chars() >= params.min_chars
    seeds = docs.filter(seed_selected(docs["doc_id"], params.rate) & long_enough)
    rows = []
    for name in params.generators:
        rows += _rows(seeds, generate(name, seeds["text"].to_list(), seeds["doc_id"].to_list()), name, None, {})
    if params.llm_templates:
        if llm is None:
            raise ValueError("LLM templates configured but no LLM backend")
        llm_seeds = docs.filter(seed_selected(docs["doc_id"], params.llm_rate, salt="llm:") & long_enough)
        for template in params.llm_templates:
            results = llm(template, llm_seeds["text"].to_list())
            for model in sorted({r["model"] for r in results if r}):
                made = [[Synth(r["text"], template)] if r and r["model"] == model else [] for r in results]
                rows += _rows(
                    llm_seeds, made, "llm", model, {**(llm_params or {}), "max_tokens": params.max_output_tokens}
                )
    return pl.DataFrame(rows, schema=SYNTH_SCHEMA) if rows else empty_frame(SYNTH_SCHEMA)


# --- asset wrapper ---------------------------------------------------------------------------------------------
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
