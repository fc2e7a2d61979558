"""LLM prompt templates of `synthetic` and the requests built from them (pure: no network, no cache).

WRAP rephrasing styles (Maini et al. 2024, "Rephrasing the Web") and Nemotron-CC-style diverse QA (Su et al. 2024).
A request's key is the content hash of everything that determines the answer, so the result cache never serves a
stale generation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    key: str  # content hash of (input text, template, model, params): the cache key
    messages: list[dict]
    max_tokens: int


def cache_key(text: str, template_id: str, template: str, model: str, params: dict) -> str:
    payload = json.dumps(
        {"input": text, "template_id": template_id, "template": template, "model": model, "params": params},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


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
