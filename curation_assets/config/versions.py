"""The `code_version` of every asset: the hash of the config that drives it, so a threshold edit marks exactly the
assets it changes stale. Pure (no Dagster): `curation validate` prints them, `curation_assets.defs` sets them."""

from __future__ import annotations

from curation_assets.config import CurationConfig, version_of
from curation_assets.core.filtering import QUALITY_CUT
from curation_assets.core.tokens import FORMAT


def asset_versions(cfg: CurationConfig) -> dict[str, str]:
    """code_version per asset."""
    t, model, dedup = cfg.thresholds, cfg.quality_model_params, cfg.dedup_params
    return {
        # the tokenizer (a tokenizer.json by the sha256 of its bytes) counts filtered's n_tokens and writes tokenized's
        # ids; raw's data does not depend on it (its token estimate is metadata, naming the tokenizer that made it)
        "raw": version_of(cfg.sources, t.raw.data_params(), "readers-v1"),
        # the URL lists by content: editing a list file re-runs annotated; the quality cut's params do not
        "annotated": version_of(t.filtered.data_params(exclude=QUALITY_CUT), cfg.url_list_digests, "annotated-v1"),
        "quality_model": version_of(model, "quality-model-v1"),
        "filtered": version_of(t.filtered.data_params(), model, cfg.tokenizer, "filtered-v5"),
        "dedup_signatures": version_of(dedup.signature_version, "signatures-v1"),
        "dedup_clusters": version_of(dedup.model_dump(mode="json"), "clusters-v1"),
        "decontam_index": version_of(t.decontam_index.data_params(), cfg.eval_set_digests, "decontam-v1"),
        "deduped": version_of(t.deduped.data_params(), "deduped-v4"),
        "synthetic": version_of(t.synthetic.data_params(), "synthetic-v2"),
        "mixed": version_of(cfg.recipe, t.mixed.data_params(), "mixed-v2"),
        "tokenized": version_of(cfg.recipe, t.tokenized.data_params(), cfg.tokenizer, FORMAT),
    }
