"""synthetic: deduped docs + synthetic documents generated from seeded samples of them (programmatic and LLM)."""

from collections.abc import Callable

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.core.frames import DOC_SCHEMA, empty_frame, meta_json, seeded_hash, stable_id
from curation_assets.core.generators import PROGRAMMATIC, Synth
from curation_assets.core.prompts import LLM_TEMPLATES

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
    # LLM templates (core/prompts.py LLM_TEMPLATES) run on a separate, smaller seeded sample
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
    return pl.Series([seeded_hash(salt + d) >> 32 < cut for d in doc_ids], dtype=pl.Boolean)


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


def seeds_of(docs: pl.DataFrame, params: SynthParams) -> pl.DataFrame:
    """The programmatic generators' seeds: a Bernoulli(`rate`) sample of the documents with >= `min_chars`."""
    long_enough = pl.col("text").str.len_chars() >= params.min_chars
    return docs.filter(seed_selected(docs["doc_id"], params.rate) & long_enough)


def generated(
    seeds: pl.DataFrame, name: str, generate: Callable[[str, list[str], list[str]], list[list[Synth]]]
) -> pl.DataFrame:
    """What the programmatic generator `name` makes of `seeds` (SYNTH_SCHEMA rows, in seed order)."""
    rows = _rows(seeds, generate(name, seeds["text"].to_list(), seeds["doc_id"].to_list()), name, None, {})
    return pl.DataFrame(rows, schema=SYNTH_SCHEMA) if rows else empty_frame(SYNTH_SCHEMA)


def llm_generated(
    docs: pl.DataFrame,
    params: SynthParams,
    llm: Callable[[str, list[str]], list[dict | None]],
    llm_params: dict | None = None,
) -> pl.DataFrame:
    """The LLM templates' rows over their own Bernoulli(`llm_rate`) sample, through `llm(template_id, texts) ->
    [result | None]` (None: failed or over budget, no row)."""
    long_enough = pl.col("text").str.len_chars() >= params.min_chars
    llm_seeds = docs.filter(seed_selected(docs["doc_id"], params.llm_rate, salt="llm:") & long_enough)
    rows = []
    for template in params.llm_templates:
        results = llm(template, llm_seeds["text"].to_list())
        for model in sorted({r["model"] for r in results if r}):
            made = [[Synth(r["text"], template)] if r and r["model"] == model else [] for r in results]
            rows += _rows(llm_seeds, made, "llm", model, {**(llm_params or {}), "max_tokens": params.max_output_tokens})
    return pl.DataFrame(rows, schema=SYNTH_SCHEMA) if rows else empty_frame(SYNTH_SCHEMA)


def synthesize(
    docs: pl.DataFrame,
    params: SynthParams,
    generate: Callable[[str, list[str], list[str]], list[list[Synth]]],
    llm: Callable[[str, list[str]], list[dict | None]] | None = None,
    llm_params: dict | None = None,
) -> pl.DataFrame:
    """Synthetic documents (SYNTH_SCHEMA: DOC_SCHEMA + provenance) from `docs` (DOC_SCHEMA): each programmatic
    generator over `seeds_of(docs)` in order, then the LLM templates (`llm_generated`). Every row carries
    parent_doc_id, generator, template_id, model and gen_params (also in `meta`); doc_id = stable_id(generator,
    template, parent, k). The `synthetic` step runs the same pieces, the generators as Ray tasks over seed chunks."""
    if params.llm_templates and llm is None:
        raise ValueError("LLM templates configured but no LLM backend")
    seeds = seeds_of(docs, params)
    parts = [generated(seeds, name, generate) for name in params.generators]
    if params.llm_templates:
        parts.append(llm_generated(docs, params, llm, llm_params))
    return pl.concat([empty_frame(SYNTH_SCHEMA), *parts])
