import polars as pl

from curation_assets.frames import DOC_SCHEMA
from curation_assets.synthetic import SynthParams, synthesize
from resources.synthetic import SyntheticBackend, cloze

TEXT = ("The lighthouse keeper climbed the spiral staircase every evening at dusk. "
        "He polished the enormous lens until it gleamed like a second moon. ") * 10


def test_synthetic_rows_point_at_their_parent_and_are_deterministic():
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(200)], "source": "books", "text": TEXT,
                         "url": None, "shard": "s", "meta": "{}"}, schema=DOC_SCHEMA)
    backend = SyntheticBackend()
    made = synthesize(docs, SynthParams(rate=0.2), backend.generator, backend.generate)
    assert 20 < made.height < 70  # Bernoulli(0.2) over 200 seeds
    assert made.schema == pl.Schema(DOC_SCHEMA)
    assert made["shard"].unique().to_list() == ["synthetic:cloze"]
    assert made["meta"].str.json_decode().struct.field("parent").is_in(docs["doc_id"].implode()).all()
    assert made.equals(synthesize(docs, SynthParams(rate=0.2), backend.generator, backend.generate))


def test_cloze_blanks_a_word_and_lists_it_as_the_answer():
    out = cloze(TEXT, seed="x")
    assert out.startswith("Fill in the blanks.") and "_____" in out
    answers = out.split("Answers:\n")[1].splitlines()
    assert answers and all(a.split(". ", 1)[1].isalpha() for a in answers)
    assert cloze("too short.", seed="x") is None
