"""Synthetic-data backends behind one resource: programmatic generators (no model, the embedded default) and an
LLM backend for any OpenAI-compatible chat-completions endpoint (`base_url` set), with prompts for WRAP rephrasing
styles (Maini et al. 2024, "Rephrasing the Web") and Nemotron-CC-style diverse QA (Su et al. 2024)."""

from __future__ import annotations

import dagster as dg

from resources.generators import PROGRAMMATIC, Synth, cloze  # noqa: F401 - re-exported
from resources.llm import Budget, ChatClient, Request, ResultCache, cache_key

# template id -> (system prompt, user prompt with {text}). Versioned ids: editing a prompt = a new id = new cache keys.
LLM_TEMPLATES: dict[str, tuple[str, str]] = {
    "wrap.easy.v1": (
        "You are a helpful assistant.",
        "For the following paragraph give me a paraphrase of the same in very simple English that a "
        "toddler could understand:\n\n{text}",
    ),
    "wrap.medium.v1": (
        "You are a helpful assistant.",
        "For the following paragraph give me a diverse paraphrase of the same in high quality English "
        "language as in sentences on Wikipedia:\n\n{text}",
    ),
    "wrap.hard.v1": (
        "You are a helpful assistant.",
        "For the following paragraph give me a paraphrase of the same using very terse and abstruse "
        "language that only an erudite scholar will understand:\n\n{text}",
    ),
    "wrap.qa.v1": (
        "You are a helpful assistant.",
        'Convert the following paragraph into a conversational format with multiple tags of "Question:" '
        'followed by "Answer:":\n\n{text}',
    ),
    "nemotron.diverse_qa.v1": (
        "You are a helpful assistant.",
        "Task: Read the text, ask questions and answer them.\nFollow these instructions:\n"
        "1. Ask diverse questions that require different cognitive skills or cover different aspects of the text.\n"
        "2. Ask questions in various forms such as yes/no questions, open-ended questions that start with what, how, "
        "when, where, why and who, multi-choice questions with options, and comparison questions.\n"
        "3. Focus on factual information, important knowledge, or concrete details in the text itself.\n"
        "4. Write questions and answers using clear and concise language.\n5. Use plain text. Do not use Markdown.\n"
        '6. Each question and answer pair should be on a separate line. Tag the question with "Question:" and the '
        'answer with "Answer:".\n\nText:\n{text}\n\nTask: After reading the above text, ask up to 8 questions and '
        "provide the correct answers following the instructions.",
    ),
}


def llm_requests(
    texts: list[str], template_id: str, model: str, params: dict, max_input_chars: int, max_tokens: int
) -> list[Request]:
    system, user = LLM_TEMPLATES[template_id]
    out = []
    for text in texts:
        chunk = text[:max_input_chars]
        key = cache_key(chunk, template_id, system + "\x1f" + user, model, {**params, "max_tokens": max_tokens})
        out.append(
            Request(
                key,
                [{"role": "system", "content": system}, {"role": "user", "content": user.format(text=chunk)}],
                max_tokens,
            )
        )
    return out


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
