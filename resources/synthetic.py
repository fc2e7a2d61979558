"""Synthetic-data backends. The embedded default is programmatic (no model, deterministic, free); an LLM backend
plugs in behind the same `generate` contract."""

from __future__ import annotations

import hashlib
import re

import dagster as dg

SENTENCE = re.compile(r"[^.!?\n]{40,400}[.!?]")
WORD = re.compile(r"\b[^\W\d_]{5,}\b")


def cloze(text: str, seed: str, max_items: int = 5) -> str | None:
    """A fill-in-the-blank exercise from a document's own sentences (in the spirit of the knowledge-extraction
    rephrasings of Nemotron-CC SDG, without a model): in up to `max_items` sentences the longest word is blanked, the
    answers follow. None when the document has no usable sentence."""
    sentences = [s.strip() for s in SENTENCE.findall(text[:200_000]) if len(s.split()) >= 8]
    if not sentences:
        return None
    start = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % len(sentences)
    picked = (sentences[start:] + sentences[:start])[:max_items]
    items, answers = [], []
    for i, s in enumerate(picked, 1):
        words = WORD.findall(s)
        if not words:
            continue
        answer = max(words, key=len)
        items.append(f"{i}. " + re.sub(rf"\b{re.escape(answer)}\b", "_____", s, count=1))
        answers.append(f"{i}. {answer}")
    if not items:
        return None
    return "Fill in the blanks.\n\n" + "\n".join(items) + "\n\nAnswers:\n" + "\n".join(answers)


class SyntheticBackend(dg.ConfigurableResource):
    """`generate(texts, seeds)` -> one synthetic text (or None) per input document."""

    generator: str = "cloze"
    max_items: int = 5

    def generate(self, texts: list[str], seeds: list[str]) -> list[str | None]:
        if self.generator != "cloze":
            raise ValueError(f"unknown synthetic generator {self.generator!r}")
        return [cloze(t, s, self.max_items) for t, s in zip(texts, seeds, strict=True)]
