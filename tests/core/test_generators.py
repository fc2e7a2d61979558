"""core/generators.py: the programmatic generators (cloze, math word problems with computed answers, code docstring
pairs, dictionary Q/A)."""

import ast
import random
import re
from fractions import Fraction
from pathlib import Path

from curation_assets.core import generators
from curation_assets.core.generators import (
    SourceSegments,
    cloze,
    gen_code_docs,
    gen_glossary_qa,
    gen_math,
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
