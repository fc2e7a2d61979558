"""Programmatic synthetic-data generators: no model, deterministic (seeded by the parent's doc_id), free.

Each generator maps (text, seed) to zero or more `Synth` documents. Pure Python: no Dagster, no I/O.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from curation_assets.core.frames import seeded_hash


@dataclass(frozen=True)
class Synth:
    text: str
    template_id: str


def rng_for(seed: str, salt: str) -> random.Random:
    return random.Random(seeded_hash(f"{salt}\x1f{seed}"))


# --- cloze ---------------------------------------------------------------------------------------------------
SENTENCE_END = re.compile(r"([.!?\n])")
WORD = re.compile(r"\b[^\W\d_]{5,}\b")


def sentences(text: str) -> list[str]:
    """What `re.findall(r"[^.!?\\n]{40,400}[.!?]", text)` finds, in one split: the last 400 characters of every run of
    40 or more between sentence ends that itself ends in `.`, `!` or `?`. The regex retries up to 400 characters at
    every position of a long run without a sentence end (5 s per MB on such documents); this is linear."""
    parts = SENTENCE_END.split(text)
    return [run[-400:] + end for run, end in zip(parts[0::2], parts[1::2]) if end != "\n" and len(run) >= 40]


def cloze(text: str, seed: str, max_items: int = 5) -> str | None:
    """A fill-in-the-blank exercise from a document's own sentences (in the spirit of the knowledge-extraction
    rephrasings of Nemotron-CC SDG, without a model): in up to `max_items` sentences the longest word is blanked, the
    answers follow. None when the document has no usable sentence."""
    picks = [s.strip() for s in sentences(text[:200_000]) if len(s.split()) >= 8]
    if not picks:
        return None
    start = rng_for(seed, "cloze").randrange(len(picks))
    picked = (picks[start:] + picks[:start])[:max_items]
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


def gen_cloze(text: str, seed: str) -> list[Synth]:
    out = cloze(text, seed)
    return [Synth(out, "cloze.v1")] if out else []


# --- math word problems --------------------------------------------------------------------------------------
NAMES = ["Ada", "Bashir", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas"]
ITEMS = ["notebook", "apple", "ticket", "pencil", "lamp", "mug", "book", "plant"]


class UnverifiedAnswer(AssertionError):
    """A generated answer failed its independent check (a template bug): the problem is not emitted."""


def _change(r: random.Random) -> tuple[str, str, Fraction, Callable[[Fraction], bool]]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    n, cents = r.randint(2, 9), r.randint(50, 1500)
    price = Fraction(cents, 100)
    bill = next(b for b in (5, 10, 20, 50, 100, 200) if b >= n * price)
    answer = bill - n * price
    q = f"{name} buys {n} {item}s at ${float(price):.2f} each and pays with a ${bill} bill. How much change does {name} get?"
    steps = f"The {item}s cost {n} x ${float(price):.2f} = ${float(n * price):.2f}. Change: ${bill} - ${float(n * price):.2f} = ${float(answer):.2f}."
    return q, steps, answer, lambda a: a >= 0 and a + n * price == bill  # check by substitution


def _rate(r: random.Random) -> tuple[str, str, Fraction, Callable[[Fraction], bool]]:
    speed, t1, t2 = r.randint(30, 120), r.randint(2, 6), r.randint(1, 9)
    d1 = speed * t1
    answer = Fraction(d1, t1) * t2
    q = f"A train covers {d1} km in {t1} hours at a constant speed. How far does it travel in {t2} hours?"
    steps = f"Speed = {d1} / {t1} = {speed} km/h. Distance = {speed} x {t2} = {answer} km."
    return q, steps, answer, lambda a: a / t2 == Fraction(d1, t1)


def _percent(r: random.Random) -> tuple[str, str, Fraction, Callable[[Fraction], bool]]:
    cap, pct = 20 * r.randint(5, 100), 5 * r.randint(1, 19)
    answer = cap - Fraction(cap * pct, 100)
    q = f"A water tank holds {cap} litres and is {pct}% full. How many litres are needed to fill it?"
    steps = f"It holds {pct}% of {cap} = {Fraction(cap * pct, 100)} litres, so {cap} - {Fraction(cap * pct, 100)} = {answer} litres are missing."
    return q, steps, answer, lambda a: Fraction(cap * pct, 100) + a == cap and 0 <= a <= cap


MATH_TEMPLATES = {"math.change.v1": _change, "math.rate.v1": _rate, "math.percent.v1": _percent}


def gen_math(text: str, seed: str) -> list[Synth]:
    """One word problem with a worked solution; the answer is computed exactly (fractions) and verified by an
    independent check before it is emitted. The parent document only seeds the numbers."""
    r = rng_for(seed, "math")
    template = r.choice(sorted(MATH_TEMPLATES))
    q, steps, answer, check = MATH_TEMPLATES[template](r)
    if not check(answer):
        raise UnverifiedAnswer(f"{template}: {q} -> {answer}")
    shown = f"{float(answer):.2f}" if answer.denominator != 1 else str(answer)
    return [Synth(f"Problem: {q}\nSolution: {steps}\nAnswer: {shown}", template)]


# --- code documentation pairs --------------------------------------------------------------------------------
# the parser's line split (ast._splitlines_no_ff): \r\n, \r and \n end a line; \f and other separators do not
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


class SourceSegments:
    """`ast.get_source_segment` for many nodes of one source, splitting it into lines once: the stdlib function
    re-splits the whole file on every call, which made `code_docs` quadratic in file size (a 219 KB file: 10.6 s).
    Same semantics: columns are UTF-8 byte offsets, `padded` keeps the first line's indentation."""

    def __init__(self, source: str) -> None:
        self.lines = _LINE.findall(source)

    def __call__(self, node: ast.AST, padded: bool = False) -> str | None:
        end_lineno, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
        if end_lineno is None or end_col is None:
            return None
        first, last, col = node.lineno - 1, end_lineno - 1, node.col_offset
        if first == last:
            return self.lines[first].encode()[col:end_col].decode()
        head = self.lines[first].encode()
        pad = "".join(c if c in "\f\t" else " " for c in head[:col].decode()) if padded else ""
        return "".join(
            [pad + head[col:].decode(), *self.lines[first + 1 : last], self.lines[last].encode()[:end_col].decode()]
        )


def gen_code_docs(text: str, seed: str, max_pairs: int = 4) -> list[Synth]:
    """Docstring <-> implementation pairs from Python source: for functions with a docstring, either 'explain this
    code' (body -> docstring) or 'implement this' (signature + docstring -> body), chosen per function by the seed."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    r = rng_for(seed, "code")
    segment = SourceSegments(text)
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        src = segment(node)
        if not doc or len(doc) < 20 or not src or len(node.body) < 2:
            continue
        body_nodes = node.body[1:]  # without the docstring
        body = "\n".join(segment(b, padded=True) or "" for b in body_nodes)
        sig = src.split(":\n", 1)[0] + ":" if ":\n" in src else f"def {node.name}(...):"
        if r.random() < 0.5:
            pairs.append(f"Explain what this Python function does.\n\n{sig}\n{body}\n\nExplanation: {doc}")
        else:
            pairs.append(f"Implement the Python function `{node.name}`: {doc}\n\n{sig}\n{body}")
        if len(pairs) == max_pairs:
            break
    return [Synth("\n\n---\n\n".join(pairs), "code.docstring_pairs.v1")] if pairs else []


# --- question/answer from glossary and dictionary entries ------------------------------------------------------
GCIDE = re.compile(r"^([A-Z][\w'-]*(?: [\w'-]+)?) \\[^\\\n]+\\, ((?:[a-z]+\. ?)+)[^\n]*\n((?:   .*\n?)+)", re.M)
GLOSSARY = re.compile(r"^([A-Z][\w ./+-]{1,40}?)\s*(?::| -- | - )\s+([A-Z][^\n]{20,300}[.!?])$", re.M)


def gen_glossary_qa(text: str, seed: str, max_items: int = 8) -> list[Synth]:
    """Question/answer pairs from dictionary entries (GCIDE / Webster 1913 layout) or `Term: definition` lines."""
    qa = []
    for m in GCIDE.finditer(text):
        lines = [ln.strip() for ln in m.group(3).splitlines()]
        definition = " ".join(
            ln
            for ln in lines
            if ln and not ln.startswith("[") and not ln.startswith("--") and not ln.startswith("Syn.")
        ).strip()
        definition = re.sub(r"\s*\[[^\]]*\]\s*", " ", definition).strip()
        if len(definition) >= 10:
            qa.append((f'What does the word "{m.group(1)}" ({m.group(2).strip()}) mean?', definition))
    if not qa:
        qa = [(f"What is {t.strip()}?", d.strip()) for t, d in GLOSSARY.findall(text)]
    if not qa:
        return []
    r = rng_for(seed, "qa")
    picked = sorted(r.sample(range(len(qa)), min(max_items, len(qa))))
    body = "\n\n".join(f"Question: {qa[i][0]}\nAnswer: {qa[i][1]}" for i in picked)
    return [Synth(body, "qa.glossary.v1")]


PROGRAMMATIC: dict[str, Callable[[str, str], list[Synth]]] = {
    "cloze": gen_cloze,
    "math": gen_math,
    "code_docs": gen_code_docs,
    "glossary_qa": gen_glossary_qa,
}


def generate(name: str, texts: list[str], seeds: list[str]) -> list[list[Synth]]:
    """What the programmatic generator `name` makes of each text (seeded by its document's id)."""
    if name not in PROGRAMMATIC:
        raise ValueError(f"unknown programmatic generator {name!r} (known: {sorted(PROGRAMMATIC)})")
    return [PROGRAMMATIC[name](t, s) for t, s in zip(texts, seeds, strict=True)]
