"""synthetic: deduped docs + synthetic documents generated from a seeded sample of them."""

import hashlib
from collections.abc import Callable

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.frames import DOC_SCHEMA, StepOutput, empty_frame, stable_id
from curation_assets._dagster import (
    drop_rate_result, drop_rate_spec, enforce_transfers, pod, source_partitions, with_tokens)
from resources.cost_guard import CostGuard
from resources.synthetic import SyntheticBackend
from resources.tokenizer import TokenizerResource


class SynthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Share of documents used as seeds. Synthetic data is kept a minority of a source: rephrased/QA data helps at
    # ~10-30 % of a mixture but hurts when it dominates (Nemotron-CC; Maini et al. 2024, "Rephrasing the Web").
    rate: float = Field(default=0.1, ge=0, le=1)
    min_chars: int = Field(default=500, ge=0)


def seed_selected(doc_ids: pl.Series, rate: float) -> pl.Series:
    """Deterministic Bernoulli(rate) per doc_id (sha256, so it does not depend on the polars version)."""
    cut = rate * 2**32
    return pl.Series([int(hashlib.sha256(d.encode()).hexdigest()[:8], 16) < cut for d in doc_ids], dtype=pl.Boolean)


def synthesize(docs: pl.DataFrame, params: SynthParams, generator: str,
               generate: Callable[[list[str], list[str]], list[str | None]]) -> pl.DataFrame:
    """Return the synthetic documents (DOC_SCHEMA) generated from `docs` (DOC_SCHEMA).

    A synthetic row gets `doc_id = stable_id("synthetic", generator, parent doc_id)`, the parent's source and url,
    `shard = "synthetic:<generator>"` and meta `{"synthetic": generator, "parent": doc_id}`.
    """
    seeds = docs.filter(seed_selected(docs["doc_id"], params.rate) & (pl.col("text").str.len_chars() >= params.min_chars))
    texts = generate(seeds["text"].to_list(), seeds["doc_id"].to_list())
    out = seeds.select("doc_id", "source", "url").with_columns(pl.Series("text", texts, dtype=pl.String))
    out = out.filter(pl.col("text").is_not_null())
    return out.select(
        pl.col("doc_id").map_elements(lambda d: stable_id("synthetic", generator, d), return_dtype=pl.String),
        "source", "text", "url",
        pl.lit(f"synthetic:{generator}").alias("shard"),
        pl.format('{{"parent": "{}", "synthetic": "{}"}}', "doc_id", pl.lit(generator)).alias("meta"),
    ).cast(DOC_SCHEMA) if out.height else empty_frame(DOC_SCHEMA)


# --- asset wrapper ---------------------------------------------------------------------------------------------
def build(cfg, version: str) -> dg.AssetsDefinition:

    @dg.asset(partitions_def=source_partitions, code_version=version, op_tags=pod("1", "4Gi"),
              check_specs=[drop_rate_spec("synthetic")], group_name="curation")
    def synthetic(context: dg.AssetExecutionContext, deduped: pl.LazyFrame, synth_backend: SyntheticBackend,
                  cost_guard: CostGuard, tokenizer: TokenizerResource):
        """Deduped documents plus synthetic ones (meta.synthetic names the generator, meta.parent the seed)."""
        docs = deduped.collect()
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        params = SynthParams(**cfg.thresholds.synthetic.for_source(context.partition_key))
        made = with_tokens(synthesize(docs.select(list(DOC_SCHEMA)), params, synth_backend.generator, synth_backend.generate),
                           tokenizer)
        out = StepOutput(kept=pl.concat([docs, made], how="diagonal_relaxed"),
                         dropped=empty_frame({**DOC_SCHEMA, "drop_reason": pl.String()}),
                         rows_in=docs.height, bytes_in=docs.estimated_size(), config_version=version,
                         extra={"synthetic_docs": made.height, **transfer})
        yield dg.Output(out)
        yield drop_rate_result(out, cfg.thresholds.synthetic.max_drop_rate)

    return synthetic
