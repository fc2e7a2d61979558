"""core/generators.py: the programmatic generators (cloze, math word problems with computed answers, code docstring
pairs, dictionary Q/A)."""

import ast
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from curation_assets.core import generators
from curation_assets.core.generators import (
    BUDGET_EXCEEDED,
    GCIDE,
    PARSE_UNITS,
    PROGRAMMATIC,
    BudgetExceeded,
    SourceSegments,
    Work,
    cloze,
    drop_brackets,
    gen_code_docs,
    gen_glossary_qa,
    gen_math,
    generate,
    sentences,
)

TEXT = (
    "The lighthouse keeper climbed the spiral staircase every evening at dusk. "
    "He polished the enormous lens until it gleamed like a second moon. "
) * 10


def test_cloze_blanks_a_word_and_lists_it_as_the_answer():
    out = cloze(TEXT, seed="x")
    assert out.startswith("Fill in the blanks.") and "_____" in out
    answers = out.split("Answers:\n")[1].splitlines()
    assert answers and all(a.split(". ", 1)[1].isalpha() for a in answers)
    assert cloze("too short.", seed="x") is None


def test_math_answers_are_right_when_recomputed_from_the_problem_text():
    seen = set()
    for i in range(300):
        (s,) = gen_math("", f"seed{i}")
        seen.add(s.template_id)
        q = s.text.split("\n")[0]
        answer = Fraction(s.text.rsplit("Answer: ", 1)[1])
        nums = [Fraction(x) for x in re.findall(r"\d+(?:\.\d+)?", q)]
        if s.template_id.startswith("math.change"):
            n, price, bill = nums
            expected = bill - n * price
        elif s.template_id.startswith("math.rate"):
            d, t1, t2 = nums
            expected = d / t1 * t2
        else:
            cap, pct = nums
            expected = cap - cap * pct / 100
        assert answer == expected, s.text
    assert seen == {"math.change.v1", "math.rate.v1", "math.percent.v1"}


def test_code_docs_pair_docstrings_with_their_code():
    src = (
        'import os\n\n\ndef join_all(parts, sep="/"):\n    """Join path parts with a separator, skipping empty ones."""\n'
        "    parts = [p for p in parts if p]\n    return sep.join(parts)\n\n\ndef undocumented(x):\n    return x\n"
    )
    (s,) = gen_code_docs(src, "seed")
    assert "join_all" in s.text and "Join path parts with a separator" in s.text and "sep.join(parts)" in s.text
    assert "undocumented" not in s.text and s.template_id == "code.docstring_pairs.v1"
    assert gen_code_docs("def broken(:\n", "seed") == [] and gen_code_docs("just prose, no code", "s") == []


def test_source_segments_equal_the_stdlib_on_every_node():
    """The one-split segmenter returns what `ast.get_source_segment` returns, padded or not, on line endings the parser
    treats differently (CRLF, lone CR, form feed), multi-byte characters (columns are byte offsets), tabs, and a real
    module (the generators' own source)."""
    tricky = (
        "def f(a,\r\n      b):\r\n    '''Doc with é and 東京.'''\r\n    x = 'ü' + \\\r\n        'v'\r\n    return x\r\n"
        "\f\nclass C:\r\tdef g(self):\r\t\t'''Tabbed\x0b doc.'''\r\t\treturn {'k':\n\t\t\t1}\n"
        "y = [1,\n  2]  # no newline at the end"
    )
    sources = [tricky, Path(generators.__file__).read_text()]
    compared = 0
    for src in sources:
        segment = SourceSegments(src)
        for node in ast.walk(ast.parse(src)):
            for padded in (False, True):
                assert segment(node, padded) == ast.get_source_segment(src, node, padded=padded), ast.dump(node)
                compared += 1
    assert compared > 2_000


def test_glossary_qa_from_dictionary_entries():
    gcide = (
        'Sassenach \\Sas"sen*ach\\, n. [Gael. sasunnach.]\n   A Saxon; an Englishman; a Lowlander.\n'
        "   [1913 Webster]\n\nSasse \\Sasse\\, n.\n   A sluice or lock, as in a river, to make it more navigable.\n"
        "   [1913 Webster]\n"
    )
    (s,) = gen_glossary_qa(gcide, "seed")
    assert 'Question: What does the word "Sassenach" (n.) mean?\nAnswer: A Saxon; an Englishman; a Lowlander.' in s.text
    assert "Sasse" in s.text and "[1913 Webster]" not in s.text
    assert gen_glossary_qa("no entries here at all", "seed") == []


def test_sentences_equal_the_bounded_regex_in_one_pass():
    """`sentences` finds exactly what `[^.!?\\n]{40,400}[.!?]` finds (runs longer than 400, runs cut by a newline,
    runs too short, text ending without a sentence end), on seeded random texts."""
    regex = re.compile(r"[^.!?\n]{40,400}[.!?]")
    r = random.Random(7)
    pieces = [".", "!", "?", "\n", " b", "x" * 39, "y" * 40, "z" * 401]
    for _ in range(1000):
        text = "".join(r.choice([*pieces, "a" * r.randrange(1, 600)]) for _ in range(r.randrange(0, 25)))
        assert sentences(text) == regex.findall(text), text


def test_gcide_pattern_finds_what_the_plain_quantifier_pattern_finds():
    """The possessive quantifiers of GCIDE change no match (only the cost of a failed attempt), on seeded random
    entry-like texts (heads, pronunciations, abbreviations, indented definition lines, near misses)."""
    plain = re.compile(r"^([A-Z][\w'-]*(?: [\w'-]+)?) \\[^\\\n]+\\, ((?:[a-z]+\. ?)+)[^\n]*\n((?:   .*\n?)+)", re.M)
    r = random.Random(11)
    pieces = [
        "Word",
        "Two words",
        "x",
        "-'",
        " ",
        "\\",
        '\\Wo"rd\\',
        ", ",
        "n.",
        "v. t.",
        "a.",
        " ",
        "\n",
        "   ",
        "def.",
        "[1913]",
    ]
    for _ in range(3000):
        text = "".join(r.choice(pieces) for _ in range(r.randrange(0, 30)))
        assert [m.groups() for m in GCIDE.finditer(text)] == [m.groups() for m in plain.finditer(text)], text


def test_drop_brackets_equals_the_regex():
    regex = re.compile(r"\s*\[[^\]]*\]\s*")
    r = random.Random(5)
    pieces = ["[", "]", " ", "\t", "\n", "\u00a0", "a", "word", "[1913 Webster]", "  "]
    for _ in range(3000):
        text = "".join(r.choice(pieces) for _ in range(r.randrange(0, 25)))
        assert drop_brackets(text) == regex.sub(" ", text), repr(text)


# Worst cases of each generator, as a function of a size n. Each family doubles its input with n; a generator's work
# count (characters scanned or written, AST nodes visited) must then at most about double too.
WORST_CASES = {
    "cloze": {
        "one line without a sentence end": lambda n: "word " * (20 * n),
        "many sentences": lambda n: "The keeper climbed the spiral staircase every evening at dusk. " * n,
    },
    "code_docs": {
        "tiny functions": lambda n: "".join(f"def f{i}(x):\n    return x\n" for i in range(n)),
        "documented functions": lambda n: "".join(
            f'def f{i}(x):\n    """Return x, documented at length."""\n    y = x\n    return y\n' for i in range(n)
        ),
        # 90 nested documented functions (near the parser's 100 indentation levels) around n statements: every
        # function's segment holds the whole file
        "deep nesting": lambda n: (
            "".join(
                "    " * d + f"def f{d}():\n" + "    " * (d + 1) + '"""A docstring long enough to pair."""\n'
                for d in range(90)
            )
            + ("    " * 90 + "x = 1\n") * n
        ),
        # one line of n statements: the stdlib segment encodes the whole line for each of them
        "one long line": lambda n: (
            'def f():\n    "A docstring long enough to pair."; ' + "; ".join(["x = 1"] * n) + "\n"
        ),
    },
    "glossary_qa": {
        "one huge dictionary entry": lambda n: "Word \\Word\\, n.\n" + "   A line of its definition [1913].\n" * n,
        "many entries": lambda n: "Word \\Word\\, n.\n   A meaning of the word.\n   [1913 Webster]\n\n" * n,
        "a run of spaces": lambda n: "Word \\Word\\, n.\n   a" + " " * (20 * n) + "b\n",
        "brackets never closed": lambda n: "Word \\Word\\, n.\n   a" + "[" * (20 * n) + "\n",
        "glossary lines": lambda n: "Term: A definition that is long enough to count.\n" * n,
    },
    "math": {"any text": lambda n: "x" * n},
}


@pytest.mark.parametrize(
    ("generator", "case"), [(g, c) for g, cases in WORST_CASES.items() for c in cases], ids="{0[0]}-{0[1]}".format
)
def test_generators_work_is_linear_in_input_size(generator, case):
    make, counts = WORST_CASES[generator][case], []
    for n in (2_000, 4_000):
        work = Work()
        PROGRAMMATIC[generator](make(n), "seed", work)
        counts.append(work.units)
    small, large = counts
    assert large <= 2.2 * small, (generator, case, counts)


def test_the_budget_skips_a_document_before_its_expensive_step():
    """Work is charged before it is done: a document too large for the budget is never parsed (a 64 MB file would
    parse for minutes), and `generate` skips it (None) while the others are made."""
    big = "def f(x):\n    return x\n" * 100_000
    work = Work(limit=1_000)
    with pytest.raises(BudgetExceeded):
        gen_code_docs(big, "seed", work)
    assert work.units == PARSE_UNITS * len(big)  # stopped at the first charge, before ast.parse
    src = 'def f(a):\n    """Return a, after a while of thought."""\n    b = a\n    return b\n'
    made = generate("code_docs", [src, big, src], ["a", "b", "c"], max_work=PARSE_UNITS * 1_000)
    assert made[1] is None and made[0] and made[2] and BUDGET_EXCEEDED == "generator_budget_exceeded"
    assert generate("code_docs", [src, big], ["a", "b"], max_work=None)[1] is not None
