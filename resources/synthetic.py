"""The LLM backend of `synthetic`: any OpenAI-compatible chat-completions endpoint (`base_url` set), for the prompts
of `core/prompts.py` (the programmatic generators are pure: `core/generators.py`)."""

from __future__ import annotations

import dagster as dg

from resources.llm import Budget, ChatClient, ResultCache


class SyntheticBackend(dg.ConfigurableResource):
    """An OpenAI-compatible LLM when `base_url` is set. Which generators and LLM templates run, and the token/$ budget, come from the `synthetic` thresholds; this resource says where the model
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
    cache_uri: str  # where LLM results are cached by content hash (the deployment: <data root>/_synthetic_cache)

    @property
    def llm_params(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p}

    def client(self, store, max_tokens: int | None, max_usd: float | None) -> ChatClient:
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
            cache=ResultCache(self.cache_uri, store),
        )
