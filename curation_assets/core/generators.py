"""Programmatic synthetic-data generators: no model, deterministic (seeded by the parent's doc_id), free.

Each generator maps (text, seed, work) to zero or more `Synth` documents, linear in the document's size, and counts
what it does in `work` (a `Work`: characters scanned or written, AST nodes visited). A `Work` with a limit stops a
generator that would spend more (`BudgetExceeded`): `generate` then skips the document with the reason
`BUDGET_EXCEEDED`. Counted, not timed, so the same documents are skipped on every machine and every rerun. Pure
Python: no Dagster, no I/O.
"""

from __future__ import annotations

import ast
import gc
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from curation_assets.core.frames import seeded_hash

# the skip reason of a document whose generator would exceed its work budget
BUDGET_EXCEEDED = "generator_budget_exceeded"


@dataclass(frozen=True)
class Synth:
    text: str
    template_id: str


class BudgetExceeded(Exception):
    """A generator would spend more work units on one document than its budget allows."""


class Work:
    """The work units a generator spends on one document, charged before the work is done, so a document over
    `limit` (None: no limit) is stopped before its expensive step (e.g. parsing a 64 MB file). A unit is what a
    regular expression's scan of one character costs (5-7 ns here); heavier steps are weighted by what they cost
    in those units (PARSE_UNITS, NODE_UNITS; measured by benchmarks/bench_synthetic.py), so a budget bounds time."""

    __slots__ = ("limit", "units")

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.units = limit, 0

    def spend(self, units: int) -> None:
        self.units += units
        if self.limit is not None and self.units > self.limit:
            raise BudgetExceeded(f"{self.units:,} > {self.limit:,} work units")


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


# a document's first characters that cloze reads: its sentences are drawn from them
CLOZE_CHARS = 200_000


def cloze(text: str, seed: str, work: Work | None = None, max_items: int = 5) -> str | None:
    """A fill-in-the-blank exercise from a document's own sentences (in the spirit of the knowledge-extraction
    rephrasings of Nemotron-CC SDG, without a model): in up to `max_items` sentences the longest word is blanked, the
    answers follow. None when the document has no usable sentence. Reads the first CLOZE_CHARS characters only."""
    work = work or Work()
    head = text[:CLOZE_CHARS]
    work.spend(2 * len(head))  # the sentence split and the word count of every sentence
    picks = [s.strip() for s in sentences(head) if len(s.split()) >= 8]
    if not picks:
        return None
    start = rng_for(seed, "cloze").randrange(len(picks))
    picked = (picks[start:] + picks[:start])[:max_items]
    items, answers = [], []
    for i, s in enumerate(picked, 1):
        work.spend(2 * len(s))  # its words, then the blanked copy
        words = list(WORD.finditer(s))
        if not words:
            continue
        # the first longest word is also that word's first whole-word occurrence (`\b` on each side, as WORD's): the
        # one `re.sub(rf"\b{answer}\b", ..., count=1)` blanked, without compiling a pattern per answer
        answer = max(words, key=lambda m: len(m[0]))
        items.append(f"{i}. {s[: answer.start()]}_____{s[answer.end() :]}")
        answers.append(f"{i}. {answer[0]}")
    if not items:
        return None
    return "Fill in the blanks.\n\n" + "\n".join(items) + "\n\nAnswers:\n" + "\n".join(answers)


def gen_cloze(text: str, seed: str, work: Work | None = None) -> list[Synth]:
    out = cloze(text, seed, work)
    return [Synth(out, "cloze.v1")] if out else []


# --- math word problems --------------------------------------------------------------------------------------
NAMES = ["Ada", "Bashir", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas"]
ITEMS = ["notebook", "apple", "ticket", "pencil", "lamp", "mug", "book", "plant"]


class UnverifiedAnswer(AssertionError):
    """A generated answer failed its independent check (a template bug): the problem is not emitted."""


def _change(r: random.Random) -> tuple[str, str, Fraction, Callable[[Fraction], bool]]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    n, cents = r.randint(2, 9), r.randint(50, 1500)
    # in whole cents: the Fraction form compared n x price with each bill and re-multiplied it in the text, 49 us a
    # problem against 12-19 for the other templates (ints divide to the correctly rounded float, as Fraction's do)
    total = n * cents
    bill = next(b for b in (5, 10, 20, 50, 100, 200) if 100 * b >= total)
    left = 100 * bill - total
    answer = Fraction(left, 100)
    price, cost, change = f"{cents / 100:.2f}", f"{total / 100:.2f}", f"{left / 100:.2f}"
    q = f"{name} buys {n} {item}s at ${price} each and pays with a ${bill} bill. How much change does {name} get?"
    steps = f"The {item}s cost {n} x ${price} = ${cost}. Change: ${bill} - ${cost} = ${change}."
    return q, steps, answer, lambda a: a >= 0 and a + n * Fraction(cents, 100) == bill  # check by substitution


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


def gen_math(text: str, seed: str, work: Work | None = None) -> list[Synth]:
    """One word problem with a worked solution; the answer is computed exactly (fractions) and verified by an
    independent check before it is emitted. The parent document only seeds the numbers: no work on its text."""
    r = rng_for(seed, "math")
    template = r.choice(sorted(MATH_TEMPLATES))
    q, steps, answer, check = MATH_TEMPLATES[template](r)
    if not check(answer):
        raise UnverifiedAnswer(f"{template}: {q} -> {answer}")
    shown = f"{float(answer):.2f}" if answer.denominator != 1 else str(answer)
    return [Synth(f"Problem: {q}\nSolution: {steps}\nAnswer: {shown}", template)]


# --- code documentation pairs --------------------------------------------------------------------------------
# the parser's line split (ast._splitlines_no_ff): \r\n, \r and \n end a line; \f and other separators do not. On the
# UTF-8 bytes: \r and \n never occur inside a multi-byte character.
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


class SourceSegments:
    """`ast.get_source_segment` for many nodes of one source, encoding it and finding its lines once: the stdlib
    function re-splits the whole file on every call (quadratic in file size: a 219 KB file took 10.6 s), and it
    encodes a node's whole first line, so the statements of one long line are quadratic in that line. Here a
    segment costs its own length. Same semantics: columns are UTF-8 byte offsets, `padded` keeps the first line's
    indentation of a multi-line node."""

    def __init__(self, source: str) -> None:
        self.data = source.encode()
        self.starts = [m.start() for m in _LINE.finditer(self.data)]  # byte offset of each line

    def __call__(self, node: ast.AST, padded: bool = False) -> str | None:
        end_lineno, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
        if end_lineno is None or end_col is None:
            return None
        line = self.starts[node.lineno - 1]
        start, end = line + node.col_offset, self.starts[end_lineno - 1] + end_col
        if not padded or end_lineno == node.lineno:
            return self.data[start:end].decode()
        pad = "".join(c if c in "\f\t" else " " for c in self.data[line:start].decode())
        return pad + self.data[start:end].decode()


# work units of `ast.parse` per character of Python (with the encoding and line split of SourceSegments), and of
# visiting one AST node: 220 ns per character and 600 ns per node (8 characters) against 5-7 ns per character of a
# regex scan, on the shared corpus's code. Charged before parsing: text that is no Python pays as if it were.
PARSE_UNITS = 40
NODE_UNITS = 100


def gen_code_docs(text: str, seed: str, work: Work | None = None, max_pairs: int = 4) -> list[Synth]:
    """Docstring <-> implementation pairs from Python source: for functions with a docstring, either 'explain this
    code' (body -> docstring) or 'implement this' (signature + docstring -> body), chosen per function by the seed.
    Work: parsing the source, each AST node visited, each docstring, and the characters of every segment cut."""
    work = work or Work()
    work.spend(PARSE_UNITS * len(text))
    # An AST holds no reference cycle, yet each of its nodes is an object the cyclic collector re-scans, more often
    # the larger the tree: ast.parse + walk went from 571 to 915 ns per character between 107 and 437 KB of tiny
    # functions with the collector, 377 to 426 without. Paused while the tree lives, as it was found.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _code_docs(text, seed, work, max_pairs)
    finally:
        if collecting:
            gc.enable()


def _code_docs(text: str, seed: str, work: Work, max_pairs: int) -> list[Synth]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    r = rng_for(seed, "code")
    segment = SourceSegments(text)
    pairs = []
    for node in ast.walk(tree):
        work.spend(NODE_UNITS)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
            continue
        doc = ast.get_docstring(node)
        work.spend(len(doc or ""))
        if not doc or len(doc) < 20:
            continue
        # cut only for the functions paired (at most max_pairs): a function's segment holds every function nested
        # in it, so cutting each one would cost the file's size times its nesting depth
        src = segment(node)
        body = "\n".join(segment(b, padded=True) or "" for b in node.body[1:])  # without the docstring
        work.spend(len(src) + len(body))
        sig = src.split(":\n", 1)[0] + ":" if ":\n" in src else f"def {node.name}(...):"
        if r.random() < 0.5:
            pairs.append(f"Explain what this Python function does.\n\n{sig}\n{body}\n\nExplanation: {doc}")
        else:
            pairs.append(f"Implement the Python function `{node.name}`: {doc}\n\n{sig}\n{body}")
        if len(pairs) == max_pairs:
            break
    return [Synth("\n\n---\n\n".join(pairs), "code.docstring_pairs.v1")] if pairs else []


# --- question/answer from glossary and dictionary entries ------------------------------------------------------
# Possessive quantifiers (`*+`, `++`, `?+`) where giving characters back can never make the entry match: a failed
# attempt then costs its line once instead of once per split of it (an entry head of 12,000 `a.` abbreviations and
# no definition took 0.1 s with plain quantifiers, quadratic in its length). Same matches (test_generators.py).
GCIDE = re.compile(r"^([A-Z][\w'-]*+(?: [\w'-]++)?+) \\[^\\\n]++\\, ((?:[a-z]++\. ?+)++)[^\n]*+\n((?:   .*\n?)+)", re.M)
GLOSSARY = re.compile(r"^([A-Z][\w ./+-]{1,40}?)\s*(?::| -- | - )\s+([A-Z][^\n]{20,300}[.!?])$", re.M)
_SPACES = re.compile(r"\s*")


def drop_brackets(text: str) -> str:
    r"""`re.sub(r"\s*\[[^\]]*\]\s*", " ", text)` in one pass: each `[...]` (to the first `]`) with the whitespace
    around it becomes one space. The regex is quadratic on a long run of spaces (it retries the run from each of its
    positions) or of `[` without `]` (each scans to the end)."""
    out, i = [], 0
    while (j := text.find("[", i)) >= 0 and (k := text.find("]", j)) >= 0:
        out += [text[i:j].rstrip(), " "]  # \s* before the bracket reaches back to the previous match at most
        i = _SPACES.match(text, k + 1).end()
    out.append(text[i:])
    return "".join(out)


def gen_glossary_qa(text: str, seed: str, work: Work | None = None, max_items: int = 8) -> list[Synth]:
    """Question/answer pairs from dictionary entries (GCIDE / Webster 1913 layout) or `Term: definition` lines.
    Work: the text's characters per pattern scanned, and each entry's characters."""
    work = work or Work()
    work.spend(len(text))
    qa = []
    for m in GCIDE.finditer(text):
        work.spend(2 * len(m[0]))  # its lines, then the definition joined from them
        lines = [ln.strip() for ln in m.group(3).splitlines()]
        definition = " ".join(
            ln
            for ln in lines
            if ln and not ln.startswith("[") and not ln.startswith("--") and not ln.startswith("Syn.")
        ).strip()
        definition = drop_brackets(definition).strip()
        if len(definition) >= 10:
            qa.append((f'What does the word "{m.group(1)}" ({m.group(2).strip()}) mean?', definition))
    if not qa:
        work.spend(len(text))
        qa = [(f"What is {t.strip()}?", d.strip()) for t, d in GLOSSARY.findall(text)]
    if not qa:
        return []
    r = rng_for(seed, "qa")
    picked = sorted(r.sample(range(len(qa)), min(max_items, len(qa))))
    body = "\n\n".join(f"Question: {qa[i][0]}\nAnswer: {qa[i][1]}" for i in picked)
    return [Synth(body, "qa.glossary.v1")]


PROGRAMMATIC: dict[str, Callable[[str, str, Work], list[Synth]]] = {
    "cloze": gen_cloze,
    "math": gen_math,
    "code_docs": gen_code_docs,
    "glossary_qa": gen_glossary_qa,
}


def generate(name: str, texts: list[str], seeds: list[str], max_work: int | None = None) -> list[list[Synth] | None]:
    """What the programmatic generator `name` makes of each text (seeded by its document's id); None for a text it
    would spend more than `max_work` work units on (skipped: BUDGET_EXCEEDED)."""
    if name not in PROGRAMMATIC:
        raise ValueError(f"unknown programmatic generator {name!r} (known: {sorted(PROGRAMMATIC)})")
    made: list[list[Synth] | None] = []
    for text, seed in zip(texts, seeds, strict=True):
        try:
            made.append(PROGRAMMATIC[name](text, seed, Work(max_work)))
        except BudgetExceeded:
            made.append(None)
    return made
