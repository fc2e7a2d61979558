import json
import re
from fractions import Fraction

import polars as pl
import pytest

from curation_assets.core.frames import DOC_SCHEMA
from curation_assets.core.synthesis import SYNTH_SCHEMA, SynthParams, synthesize
from curation_assets.core.generators import gen_code_docs, gen_glossary_qa, gen_math
from resources.storage import ObjectStore
from resources.synthetic import SyntheticBackend, cloze, llm_requests
from tests.openai_stub import StubServer

TEXT = (
    "The lighthouse keeper climbed the spiral staircase every evening at dusk. "
    "He polished the enormous lens until it gleamed like a second moon. "
) * 10
DOCS = pl.DataFrame(
    {
        "doc_id": [f"d{i}" for i in range(200)],
        "source": "books",
        "text": [f"Entry {i}. {TEXT}" for i in range(200)],
        "url": None,
        "shard": "s",
        "meta": "{}",
    },
    schema=DOC_SCHEMA,
)


def test_synthetic_rows_carry_provenance_and_are_deterministic():
    backend = SyntheticBackend()
    params = SynthParams(rate=0.2, generators=["cloze", "math"])
    made = synthesize(DOCS, params, backend.generate)
    assert made.schema == pl.Schema(SYNTH_SCHEMA)
    assert 2 * 20 < made.height < 2 * 70  # Bernoulli(0.2) over 200 seeds, one row per generator
    assert set(made["generator"]) == {"cloze", "math"} and made["model"].is_null().all()
    assert made["parent_doc_id"].is_in(DOCS["doc_id"].implode()).all()
    meta = made["meta"].str.json_decode()
    assert meta.struct.field("parent_doc_id").equals(made["parent_doc_id"], check_names=False)
    assert made["template_id"].str.contains(r"^(cloze|math\.\w+)\.v1$").all()
    assert made.equals(synthesize(DOCS, params, backend.generate))
    with pytest.raises(ValueError, match="unknown"):
        SynthParams(generators=["poetry"])


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


def llm_for(server, cache_dir, params: SynthParams, temperature=0.7, max_tokens=None):
    backend = SyntheticBackend(
        base_url=server.base_url, model="stub-model", backoff_s=0.01, concurrency=4, temperature=temperature
    )
    client = backend.client(
        ObjectStore(), str(cache_dir), max_tokens if max_tokens is not None else params.budget_tokens, params.budget_usd
    )

    def llm(template, texts):
        reqs = llm_requests(
            texts, template, backend.model, backend.llm_params, params.max_input_chars, params.max_output_tokens
        )
        res = client.run(reqs)
        return [res[r.key] for r in reqs]

    return backend, client, llm


def test_llm_rows_through_a_real_endpoint_are_cached_and_a_new_config_writes_beside_the_old(tmp_path):
    params = SynthParams(
        rate=0.0,
        generators=[],
        llm_templates=["wrap.easy.v1", "nemotron.diverse_qa.v1"],
        llm_rate=0.1,
        max_input_chars=200,
    )
    with StubServer() as server:
        backend, client, llm = llm_for(server, tmp_path / "cache", params)
        made = synthesize(DOCS, params, backend.generate, llm, backend.llm_params)
        calls = len(server.prompts())
        n = made.height
        assert n == calls and 2 * 10 <= n <= 2 * 35  # two templates over a Bernoulli(0.1) sample
        assert set(made["template_id"]) == {"wrap.easy.v1", "nemotron.diverse_qa.v1"}
        assert set(made["model"]) == {"stub-model"} and set(made["generator"]) == {"llm"}
        assert json.loads(made["gen_params"][0]) == {"max_tokens": 512, "temperature": 0.7, "top_p": 0.9}
        assert made["text"].str.starts_with("REWRITTEN<").all()
        # re-materialization: every item from the cache, no call
        backend, client, llm = llm_for(server, tmp_path / "cache", params)
        again = synthesize(DOCS, params, backend.generate, llm, backend.llm_params)
        assert len(server.prompts()) == calls and client.stats.cache_hits == n and again.equals(made)
        # a new config (temperature) = new keys: new calls, new results beside the old ones
        backend, client, llm = llm_for(server, tmp_path / "cache", params, temperature=0.2)
        synthesize(DOCS, params, backend.generate, llm, backend.llm_params)
        assert len(server.prompts()) == 2 * calls and len(list((tmp_path / "cache").rglob("*.json"))) == 2 * n


def test_llm_budget_stop_keeps_what_fits(tmp_path):
    params = SynthParams(
        rate=0.0,
        generators=[],
        llm_templates=["wrap.qa.v1"],
        llm_rate=0.5,
        max_input_chars=200,
        max_output_tokens=100,
        budget_tokens=2000,
    )
    with StubServer() as server:
        backend, client, llm = llm_for(server, tmp_path / "cache", params)
        made = synthesize(DOCS, params, backend.generate, llm, backend.llm_params)
    assert 0 < made.height == len(server.prompts()) < 60 and client.stats.budget_skipped > 0
    assert client.budget.spent_tokens <= 2000
