"""synthetic: deduped docs + synthetic documents generated from seeded samples of them (programmatic and LLM)."""

from collections.abc import Callable

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.core.frames import DOC_SCHEMA, empty_frame, meta_json, seeded_hash, stable_id
from curation_assets.core.generators import BUDGET_EXCEEDED, PROGRAMMATIC, Synth
from curation_assets.core.prompts import LLM_TEMPLATES

PROVENANCE = {
    "parent_doc_id": pl.String(),
    "generator": pl.String(),
    "template_id": pl.String(),
    "model": pl.String(),
    "gen_params": pl.String(),
}
SYNTH_SCHEMA = {**DOC_SCHEMA, **PROVENANCE}
# seeds a generator made nothing of because it would have exceeded its work budget (the document itself is kept)
SKIPPED_SCHEMA = {"doc_id": pl.String(), "generator": pl.String(), "skip_reason": pl.String()}
Generate = Callable[[str, list[str], list[str], int | None], list[list[Synth] | None]]


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
    # Work units (core/generators.py `Work`: ~ one regex scan of a character) a programmatic generator may spend on
    # one document, else the document is skipped (generator_budget_exceeded). Counted, not timed: the same documents
    # are skipped on every machine. 10x the costliest document of the shared corpus (code_docs on a 457 KB
    # document: 18.3 M, so none is skipped there); ~2 s of one core for the 5 MB of Python it admits, where a 64 MB
    # file (raw's max_doc_bytes) would parse for minutes.
    max_work: int | None = Field(default=200_000_000, gt=0)

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
    seeds: pl.DataFrame, name: str, generate: Generate, max_work: int | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What the programmatic generator `name` makes of `seeds` (SYNTH_SCHEMA rows, in seed order), and the seeds it
    skipped (SKIPPED_SCHEMA: over `max_work` work units)."""
    made = generate(name, seeds["text"].to_list(), seeds["doc_id"].to_list(), max_work)
    rows = _rows(seeds, [m or [] for m in made], name, None, {})
    skipped = pl.DataFrame(
        {"doc_id": [d for d, m in zip(seeds["doc_id"], made, strict=True) if m is None]}, schema={"doc_id": pl.String()}
    ).with_columns(generator=pl.lit(name, pl.String()), skip_reason=pl.lit(BUDGET_EXCEEDED, pl.String()))
    return pl.DataFrame(rows, schema=SYNTH_SCHEMA) if rows else empty_frame(SYNTH_SCHEMA), skipped


def llm_seeds_of(docs: pl.DataFrame, params: SynthParams) -> pl.DataFrame:
    """The LLM templates' seeds: their own Bernoulli(`llm_rate`) sample of the documents with >= `min_chars`."""
    long_enough = pl.col("text").str.len_chars() >= params.min_chars
    return docs.filter(seed_selected(docs["doc_id"], params.llm_rate, salt="llm:") & long_enough)


def llm_generated(
    llm_seeds: pl.DataFrame,
    params: SynthParams,
    llm: Callable[[str, list[str]], list[dict | None]],
    llm_params: dict | None = None,
) -> pl.DataFrame:
    """The LLM templates' rows over `llm_seeds` (`llm_seeds_of`), through `llm(template_id, texts) -> [result |
    None]` (None: failed or over budget, no row)."""
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
    generate: Generate,
    llm: Callable[[str, list[str]], list[dict | None]] | None = None,
    llm_params: dict | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Synthetic documents (SYNTH_SCHEMA: DOC_SCHEMA + provenance) from `docs` (DOC_SCHEMA): each programmatic
    generator over `seeds_of(docs)` in order, then the LLM templates (`llm_generated` over `llm_seeds_of(docs)`).
    Every row carries parent_doc_id, generator, template_id, model and gen_params (also in `meta`); doc_id =
    stable_id(generator, template, parent, k). Also the seeds a generator skipped (SKIPPED_SCHEMA). The `synthetic`
    step runs the same pieces, the generators as Ray tasks over row ranges of `docs` (a seed's documents depend on
    that seed alone, so the rows are the same however the seeds are cut)."""
    if params.llm_templates and llm is None:
        raise ValueError("LLM templates configured but no LLM backend")
    seeds = seeds_of(docs, params)
    runs = [generated(seeds, name, generate, params.max_work) for name in params.generators]
    parts = [made for made, _ in runs]
    if params.llm_templates:
        parts.append(llm_generated(llm_seeds_of(docs, params), params, llm, llm_params))
    skipped = [empty_frame(SKIPPED_SCHEMA), *(skips for _, skips in runs)]
    return pl.concat([empty_frame(SYNTH_SCHEMA), *parts]), pl.concat(skipped)
