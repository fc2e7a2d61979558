"""core/synthesis.py: synthetic rows carry their provenance and are deterministic; LLM rows through a real HTTP endpoint
(tests/openai_stub.py) are cached and budgeted. (The generators: test_generators.py; the asset:
tests/steps/test_synthetic.py.)"""

import json

import polars as pl
import pytest

from curation_assets.core.frames import DOC_SCHEMA
from curation_assets.core.generators import BUDGET_EXCEEDED, generate
from curation_assets.core.prompts import llm_requests
from curation_assets.core.synthesis import SYNTH_SCHEMA, SynthParams, synthesize
from resources.store import ObjectStore
from resources.synthetic import SyntheticBackend
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
    params = SynthParams(rate=0.2, generators=["cloze", "math"])
    made, skipped = synthesize(DOCS, params, generate)
    assert skipped.is_empty() and made.schema == pl.Schema(SYNTH_SCHEMA)
    assert 2 * 20 < made.height < 2 * 70  # Bernoulli(0.2) over 200 seeds, one row per generator
    assert set(made["generator"]) == {"cloze", "math"} and made["model"].is_null().all()
    assert made["parent_doc_id"].is_in(DOCS["doc_id"].implode()).all()
    meta = made["meta"].str.json_decode()
    assert meta.struct.field("parent_doc_id").equals(made["parent_doc_id"], check_names=False)
    assert made["template_id"].str.contains(r"^(cloze|math\.\w+)\.v1$").all()
    assert made.equals(synthesize(DOCS, params, generate)[0])
    with pytest.raises(ValueError, match="unknown"):
        SynthParams(generators=["poetry"])


def llm_for(server, cache_dir, params: SynthParams, temperature=0.7, max_tokens=None):
    backend = SyntheticBackend(
        base_url=server.base_url,
        model="stub-model",
        backoff_s=0.01,
        concurrency=4,
        temperature=temperature,
        cache_uri=str(cache_dir),
    )
    client = backend.client(
        ObjectStore(), max_tokens if max_tokens is not None else params.budget_tokens, params.budget_usd
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
        made, _ = synthesize(DOCS, params, generate, llm, backend.llm_params)
        calls = len(server.prompts())
        n = made.height
        assert n == calls and 2 * 10 <= n <= 2 * 35  # two templates over a Bernoulli(0.1) sample
        assert set(made["template_id"]) == {"wrap.easy.v1", "nemotron.diverse_qa.v1"}
        assert set(made["model"]) == {"stub-model"} and set(made["generator"]) == {"llm"}
        assert json.loads(made["gen_params"][0]) == {"max_tokens": 512, "temperature": 0.7, "top_p": 0.9}
        assert made["text"].str.starts_with("REWRITTEN<").all()
        # re-materialization: every item from the cache, no call
        backend, client, llm = llm_for(server, tmp_path / "cache", params)
        again, _ = synthesize(DOCS, params, generate, llm, backend.llm_params)
        assert len(server.prompts()) == calls and client.stats.cache_hits == n and again.equals(made)
        # a new config (temperature) = new keys: new calls, new results beside the old ones
        backend, client, llm = llm_for(server, tmp_path / "cache", params, temperature=0.2)
        synthesize(DOCS, params, generate, llm, backend.llm_params)
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
        made, _ = synthesize(DOCS, params, generate, llm, backend.llm_params)
    assert 0 < made.height == len(server.prompts()) < 60 and client.stats.budget_skipped > 0
    assert client.budget.spent_tokens <= 2000


def test_a_seed_over_the_work_budget_is_skipped_with_its_reason_and_the_rest_are_made():
    """The budget counts work (characters and AST nodes), not seconds: the same seeds are skipped on every run."""
    long = DOCS.with_columns(text=pl.when(pl.col("doc_id") == "d3").then(pl.lit(TEXT * 20)).otherwise(pl.col("text")))
    params = SynthParams(rate=1.0, generators=["cloze"], max_work=2 * 5_000)  # cloze: 2 units per character read
    made, skipped = synthesize(long, params, generate)
    assert skipped.rows() == [("d3", "cloze", BUDGET_EXCEEDED)]
    assert made.height == 199 and "d3" not in made["parent_doc_id"]
    assert synthesize(long, params, generate)[1].equals(skipped)
    made, skipped = synthesize(long, params.model_copy(update={"max_work": None}), generate)
    assert skipped.is_empty() and made.height == 200
