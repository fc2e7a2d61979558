"""Synthetic-data backends behind one resource: programmatic generators (no model, the embedded default) and an
LLM backend for any OpenAI-compatible chat-completions endpoint (`base_url` set), with prompts for WRAP rephrasing
styles (Maini et al. 2024, "Rephrasing the Web") and Nemotron-CC-style diverse QA (Su et al. 2024)."""

from __future__ import annotations

import dagster as dg

from curation_assets.core.generators import PROGRAMMATIC, Synth
from resources.llm import Budget, ChatClient, ResultCache

class SyntheticBackend(dg.ConfigurableResource):
    """Programmatic generators always; an OpenAI-compatible LLM when `base_url` is set. Which generators and LLM
    templates run, and the token/$ budget, come from the `synthetic` thresholds; this resource says where the model
    is, how hard to push it (concurrency, retries, timeouts), what it costs, and where results are cached."""

    base_url: str | None = None  # e.g. http://vllm:8000/v1
    model: str | None = None
    api_key: str | None = None  # wire with dg.EnvVar("CURATION_LLM_API_KEY")
    concurrency: int = 8
    max_retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    temperature: float = 0.7
    top_p: float = 0.9
    usd_per_mtok_prompt: float = 0.0
    usd_per_mtok_completion: float = 0.0
    cache_uri: str | None = None  # None: <data root>/_synthetic_cache

    def generate(self, name: str, texts: list[str], seeds: list[str]) -> list[list[Synth]]:
        if name not in PROGRAMMATIC:
            raise ValueError(f"unknown programmatic generator {name!r} (known: {sorted(PROGRAMMATIC)})")
        return [PROGRAMMATIC[name](t, s) for t, s in zip(texts, seeds, strict=True)]

    @property
    def llm_params(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p}

    def client(self, store, cache_root: str, max_tokens: int | None, max_usd: float | None) -> ChatClient:
        if not self.base_url or not self.model:
            raise ValueError("the synthetic thresholds ask for LLM templates but synth_backend has no base_url/model")
        budget = Budget(
            max_tokens=max_tokens,
            max_usd=max_usd,
            usd_per_mtok_prompt=self.usd_per_mtok_prompt,
            usd_per_mtok_completion=self.usd_per_mtok_completion,
        )
        return ChatClient(
            self.base_url,
            self.model,
            api_key=self.api_key,
            concurrency=self.concurrency,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            timeout_s=self.timeout_s,
            params=self.llm_params,
            budget=budget,
            cache=ResultCache(self.cache_uri or cache_root, store),
        )
