"""core/filtering.py: every rule fires with datatrove's reason, language ID, the quality cut and the decision ledger.
(Agreement with datatrove on real documents: test_filtering_parity.py; the n-gram features: test_filter_rules.py.)"""

import time
from pathlib import Path

import polars as pl
import pytest

from curation_assets.core.filtering import FilterParams, family_params, filter_docs, lang_labels

LID_MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "lid.176.ftz"

PROSE = (
    "Curation pipelines turn raw crawled text into training data. Each step records why a document was removed, "
    "so that the decisions can be audited later. The filters below follow the heuristics of the Gopher paper, "
    "which were tuned on English web pages and are applied with the thresholds that datatrove ships by default. "
    "A document that survives every rule is passed on to deduplication, where exact and near copies are removed "
    "before the remaining text is mixed with other sources and tokenized for training."
)
LONG_LINE = "This line is long enough to dominate the character count of the whole little document on its own."


def english(batch: list[str]) -> tuple[list[str], list[float]]:
    """A language ID stand-in: every text English at 0.9."""
    return ["en"] * len(batch), [0.9] * len(batch)


def tokens(n: int, stem: str = "term") -> list[str]:
    return [f"{stem}{i:03d}" for i in range(n)]


def reason(text: str, lang: str = "en", score: float = 0.99, **params) -> str | None:
    """First failing rule; C4 and FineWeb are off unless a case turns them on (the Gopher cases are not prose)."""
    family = params.pop("family", None)
    p = (
        family_params(family, **params)
        if family
        else FilterParams(**{"c4_quality": False, "fineweb_quality": False, **params})
    )
    docs = pl.DataFrame({"doc_id": ["d"], "text": [text]})
    marked = filter_docs(docs, p, pl.DataFrame({"lang": [lang], "lang_score": [score]}))
    return marked["drop_reason"][0]


def repeated_ngram_text(gram: str, unit_chars: int, units: int = 10) -> str:
    """`units` copies of `gram`, each padded with distinct filler words to `unit_chars` characters."""
    parts, k = [], 0
    for _ in range(units):
        unit = gram
        while len(unit) + 8 <= unit_chars:
            unit += f" f{k:06d}"
            k += 1
        parts.append(unit)
    return " ".join(parts)


CASES = [
    ("lang_not_allowed", dict(text=PROSE, languages=("de", "fr"))),
    ("low_lang_score", dict(text=PROSE, score=0.65)),  # datatrove keeps only score > 0.65
    ("empty", dict(text="")),
    ("dup_para_frac", dict(text="\n\n".join(["First paragraph.", "Second one.", "First paragraph."] * 2))),
    ("dup_para_char_frac", dict(text="\n\n".join([LONG_LINE, "short a", "short b", LONG_LINE]))),
    ("dup_line_frac", dict(text="\n".join(["same line", "other line", "same line", "same line"]))),
    ("dup_line_char_frac", dict(text="\n".join([LONG_LINE, "short a", "short b", LONG_LINE]))),
    ("top_2_gram", dict(text=" ".join(f"New York {w}" for w in tokens(30)))),
    # top 2-gram 17/99 <= 0.2 but top 3-gram 27/99 > 0.18
    ("top_3_gram", dict(text=repeated_ngram_text("xylophone quartet marmalade", 100))),
    # top 3-gram 36/216 <= 0.18 but top 4-gram 39/216 > 0.16
    ("top_4_gram", dict(text=repeated_ngram_text("aa bb cc " + "d" * 30, 216))),
    ("gopher_short_doc", dict(text=" ".join(PROSE.split()[:40]))),
    ("gopher_long_doc", dict(text=" ".join(f"w{i}" for i in range(100_001)))),
    ("gopher_below_avg_threshold", dict(text=" ".join(a + b for a in "abcdef" for b in "ghijklmnop"))),
    ("gopher_above_avg_threshold", dict(text=" ".join(tokens(60, "extraordinarily")))),
    ("gopher_too_many_hashes", dict(text=PROSE + " " + " ".join(f"#topic{i}" for i in range(16)))),
    ("gopher_too_many_ellipsis", dict(text=PROSE + " " + " ".join(f"wait{i}..." for i in range(16)))),
    ("gopher_too_many_bullets", dict(text="\n".join(f"  - alpha{i} beta{i} gamma{i}" for i in range(60)))),
    (
        "gopher_too_many_end_ellipsis",
        dict(text="\n".join(" ".join(tokens(12, f"l{i}w")) + ("…" if i < 4 else ".") for i in range(10))),
    ),
    ("gopher_below_alpha_threshold", dict(text=PROSE + " " + " ".join(str(1000 + i) for i in range(25)))),
    ("gopher_enough_stop_words", dict(text=" ".join(tokens(60)))),
    # a 12-word phrase repeated with distinct filler: top n-grams stay low, repeated 5..10-grams cover > 15 %
    (
        "duplicated_5_n_grams",
        dict(
            text=" ".join(f"{' '.join(tokens(15, 'rep'))} {' '.join(tokens(30, f'u{i}x'))}" for i in range(3)),
            family="gopher_repetition",
        ),
    ),
    ("c4_lorem_ipsum", dict(text=PROSE + "\nLorem ipsum dolor sit amet, consectetur.", c4_quality=True)),
    ("c4_curly_bracket", dict(text=PROSE + "\nThe config is { a: 1 } in braces.", c4_quality=True)),
    ("c4_too_few_sentences", dict(text=PROSE, c4_quality=True)),  # 4 sentences < 5
    (
        "fineweb_line_punct_ratio",
        dict(text="\n".join(f"Heading number {i} without a full stop at all" for i in range(9)), family="fineweb"),
    ),
    (
        "fineweb_short_line_ratio",
        dict(text="\n".join([f"Short line {i}." for i in range(3)] + [PROSE]), family="fineweb"),
    ),
    ("fineweb_char_dup_ratio", dict(text=PROSE + "\n" + LONG_LINE + "\n" + LONG_LINE, family="fineweb")),
    (
        "fineweb_list_ratio",
        dict(text="\n".join(f"W{i}." for i in range(80)) + "\n" + PROSE, family="fineweb", short_line_thr=None),
    ),
]


@pytest.mark.parametrize(("expected", "case"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_with_its_datatrove_reason(expected, case):
    case = dict(case)
    assert reason(case.pop("text"), **case) == expected


def test_real_prose_is_kept_and_columns_are_added():
    docs = pl.DataFrame({"doc_id": ["a", "b"], "text": [PROSE, PROSE.replace("The filters", "Our filters")]})
    lang = pl.DataFrame({"lang": ["en", "en"], "lang_score": [0.93, 0.91]})
    marked = filter_docs(docs, FilterParams(languages=("en",), c4_quality=False), lang)
    assert marked.columns == ["doc_id", "text", "lang", "lang_score", "drop_reason", "drop_value", "values"]
    assert marked["drop_reason"].to_list() == [None, None]
    assert marked["lang_score"].to_list() == [0.93, 0.91]


def test_first_failing_rule_wins_and_disabled_rules_never_fire():
    short = " ".join(PROSE.split()[:40])
    assert reason(short, lang="de", languages=("en",)) == "lang_not_allowed"  # before gopher_short_doc
    assert reason(short, score=0.2) == "low_lang_score"
    assert reason(short, min_doc_words=None) is None
    assert reason("", min_lang_score=None, lang=None, score=None) == "empty"
    assert reason(" ".join(tokens(60)), min_stop_words=None) is None
    assert reason(" ".join(f"New York {w}" for w in tokens(30)), top_n_grams=None, min_stop_words=None) is None


def test_stop_words_are_unique_case_sensitive_and_punctuation_is_split_off_like_spacy():
    words = tokens(60)
    assert reason(" ".join(words + ["the,", "(and)"])) is None
    assert reason(" ".join(words + ["the", "the", "the"])) == "gopher_enough_stop_words"  # one unique stop word
    assert reason(" ".join(words + ["The", "AND"])) == "gopher_enough_stop_words"


def test_alpha_ratio_threshold_is_strict():
    # exactly 80 % of the words contain a letter -> kept (datatrove drops only when the share is < 0.8)
    text = " ".join(tokens(58) + ["the", "of"] + [str(i) for i in range(1000, 1015)])
    assert reason(text) is None
    assert reason(text + " 999") == "gopher_below_alpha_threshold"


def test_misaligned_lang_frame_is_rejected():
    docs = pl.DataFrame({"doc_id": ["a", "b"], "text": [PROSE, PROSE]})
    with pytest.raises(ValueError, match="rows"):
        filter_docs(docs, FilterParams(), pl.DataFrame({"lang": ["en"], "lang_score": [0.9]}))


def test_sixteen_mib_texts_without_whitespace_stay_fast():
    n = 16 * 1024 * 1024
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": ["x" * n, "." * n, "ab.-#…" * (n // 8)]})
    lang = pl.DataFrame({"lang": ["en"] * 3, "lang_score": [0.9] * 3})
    start = time.process_time()
    marked = filter_docs(docs, FilterParams(), lang)
    # the top-2-gram of "x"*n... has no second word; "ab.-#…" repeats: datatrove's order puts repetition first
    assert marked["drop_reason"].to_list() == ["gopher_short_doc", "gopher_short_doc", "top_2_gram"]
    # linear: a few CPU seconds; quadratic would not finish (CPU time of this process, not wall-clock: the machine
    # is shared)
    assert time.process_time() - start < 60


def test_lang_labels_reads_single_line_bounded_samples_in_stages():
    seen: list[str] = []

    def sample(char: str, budget: int) -> str:  # a text of one repeated character, read as k evenly spaced chunks
        k = min(budget // 125, 80)
        return " ".join([char * (budget // k)] * k)

    scores = {  # per (first character, characters read)
        ("l", 17): 0.91,
        ("ä", 503): 0.5,  # probe 500: below 0.9 -> 2,000
        ("ä", 2015): 0.6,  # within 0.1 of the score threshold 0.65 -> 10,000
        ("ä", 10079): 0.7,
        ("b", 503): 0.95,  # settled by the probe
        ("b", 5000): 0.97,
        ("c", 503): 0.8,  # -> 2,000: 0.8 is outside the band, settled
        ("c", 2015): 0.8,
        ("c", 3000): 0.85,
    }

    def predict(texts: list[str]) -> tuple[list[str], list[float]]:
        seen.extend(texts)
        return [f"__label__{t[:1] or 'ja'}" for t in texts], [scores.get((t[:1], len(t)), 1.0) for t in texts]

    texts = pl.Series(["line one\nline two", "ä" * 25_000, "b" * 5_000, "c" * 3_000, None])
    frame = lang_labels(predict, texts, threshold=0.65)
    assert seen == [
        "line one line two", sample("ä", 500), sample("b", 500), sample("c", 500), "",
        sample("ä", 2_000), sample("c", 2_000),
        sample("ä", 10_000),
    ]  # fmt: skip
    assert frame.schema == pl.Schema({"lang": pl.String, "lang_score": pl.Float64})
    assert frame.rows() == [("l", 0.91), ("ä", 0.7), ("b", 0.95), ("c", 0.8), ("ja", 1.0)]
    seen.clear()  # without a score rule nothing is near a threshold: two stages
    assert lang_labels(predict, texts)["lang_score"].to_list() == [0.91, 0.6, 0.95, 0.8, 1.0]
    assert sample("ä", 10_000) not in seen
    seen.clear()
    assert lang_labels(predict, texts, probe_chars=None)["lang_score"].to_list() == [0.91, 0.7, 0.97, 0.85, 1.0]
    assert seen == ["line one line two", sample("ä", 10_000), "b" * 5_000, "c" * 3_000, ""]
    assert lang_labels(predict, pl.Series([], dtype=pl.String)).height == 0


def test_lang_sample_spreads_chunks_from_start_to_end():
    from curation_assets.core.filtering import _sample

    text = "a" * 1_000 + "m" * 1_000 + "z" * 1_000
    probe = _sample(pl.Series([text, "short\ntext"]), 500).to_list()
    chunks = probe[0].split(" ")
    assert [len(c) for c in chunks] == [125] * 4
    assert chunks[0] == "a" * 125 and chunks[-1] == "z" * 125 and "m" in chunks[1] + chunks[2]
    assert probe[1] == "short text"


def test_lang_labels_accepts_fasttext_shaped_output():
    def predict(texts):  # fastText model.predict(texts, k=1): per text a tuple of labels and an array of scores
        return [("__label__fr",), ()], [[0.8], []]

    assert lang_labels(predict, pl.Series(["bonjour", ""])).rows() == [("fr", 0.8), (None, 0.0)]


def test_lid176_labels_english_german_japanese():
    import fasttext  # a required dependency: a missing or broken install must fail, not skip

    model = fasttext.load_model(str(LID_MODEL))
    texts = pl.Series(
        [
            "The quick brown fox jumps over the lazy dog.\nIt was a sunny afternoon in the park.",
            "Der schnelle braune Fuchs springt über den faulen Hund.\nEs war ein sonniger Nachmittag im Park.",
            "素早い茶色の狐が怠け者の犬を飛び越える。公園で晴れた午後のことでした。",
        ]
    )
    frame = lang_labels(lambda batch: model.predict(batch, k=1), texts)
    assert frame["lang"].to_list() == ["en", "de", "ja"]
    assert all(score > 0.65 for score in frame["lang_score"])


def test_ledger_records_decision_value_and_scores_and_the_quality_cut_keeps_the_fraction():
    from curation_assets.core.filtering import (
        annotate_batch,
        apply_decisions,
        distributions_markdown,
        ledger_of,
        partition_ledger,
        score_batch,
    )
    from curation_assets.core.frames import drop_counts, funnel_markdown

    texts = [PROSE.replace("Curation", f"Curation{i}") for i in range(40)] + [" ".join(PROSE.split()[:20])] * 2
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    params = FilterParams(
        quality_keep_fraction=0.25, c4_quality=False, top_n_grams=None
    )  # a 20-word doc: 1 gram > 18 %

    def score(batch):
        return [len(t) % 97 / 97 for t in batch]

    # per batch: annotated (no model), then scored, then the partition-wide cut (as `annotated` and `filtered` run them)
    marked = [
        score_batch(annotate_batch(batch, params, english), params, score)
        for batch in (docs.slice(0, 20), docs.slice(20))
    ]
    ledger = partition_ledger([ledger_of(m) for m in marked], params)
    assert ledger.columns == [
        "doc_id",
        "kept",
        "drop_reason",
        "drop_value",
        "lang",
        "lang_score",
        "quality_score",
        "pii_emails",
        "pii_ips",
        "values",
    ]
    short = ledger.filter(pl.col("doc_id") == "d40").row(0, named=True)
    assert short["drop_reason"] == "gopher_short_doc" and short["drop_value"] == 20 and not short["kept"]
    assert short["values"]["gopher_short_doc"] == 20 and short["lang_score"] == 0.9
    assert short["quality_score"] is None  # dropped by a heuristic rule: never reaches the classifier
    passed = 40  # every prose doc passes the heuristics; the classifier keeps round(0.25 * 40) of them
    assert ledger["kept"].sum() == 10
    cut = ledger.filter(pl.col("drop_reason") == "low_quality_score")
    assert cut.height == passed - 10
    assert cut["quality_score"].max() <= ledger.filter("kept")["quality_score"].min()
    # pass 2: each batch's final decisions, from its slice of the ledger
    kept_parts, dropped, offset = [], [], 0
    for m in marked:
        keep, gone = apply_decisions(m, ledger["drop_reason"].slice(offset, m.height))
        offset += m.height
        kept_parts.append(keep)
        dropped.append(gone)
    kept = pl.concat(kept_parts)
    assert sorted(kept["doc_id"]) == sorted(ledger.filter("kept")["doc_id"])
    assert "drop_reason" not in kept.columns and pl.concat(dropped).height == 32
    funnel = funnel_markdown(ledger.height, 10, drop_counts(pl.concat(dropped)), None, {})
    assert "| dropped: low_quality_score | 30 |  | 71.4% `" in funnel and "| **kept** | 10 |  | 23.8% `" in funnel
    table = distributions_markdown(ledger)
    assert "| gopher_short_doc | 42 |" in table and "| quality_score | 40 |" in table and "| lang_score | 42 |" in table


def test_c4_line_removing_variant_rewrites_kept_text():
    text = "\n".join(
        [PROSE.split(". ")[0] + ".", "Click here to enable JavaScript now.", "menu", *PROSE.split(". ")[1:]]
    )
    docs = pl.DataFrame({"doc_id": ["a"], "text": [text + " One more. And another. Then a last one."]})
    lang = pl.DataFrame({"lang": ["en"], "lang_score": [0.9]})
    p = family_params("c4", c4_remove_lines=True, c4_min_num_sentences=3)
    out = filter_docs(docs, p, lang)
    assert out["drop_reason"][0] is None
    assert "JavaScript" not in out["text"][0] and "menu" not in out["text"][0]
    assert out["text"][0].startswith("Curation pipelines turn raw crawled text into training data.")
    # pass 2 keeps the text C4 rewrote (the step counts its tokens then: tests/steps/test_filtered.py)
    from curation_assets.core.filtering import annotate_batch, apply_decisions

    marked = annotate_batch(docs, p, english)
    keep, _ = apply_decisions(marked, marked["drop_reason"])
    assert keep["text"].to_list() == out["text"].to_list() and "n_tokens" not in keep.columns


def test_the_classifier_scores_only_what_the_heuristics_passed_and_its_threshold_is_the_last_rule():
    from curation_assets.core.filtering import score_batch

    annotated = pl.DataFrame(
        {
            "doc_id": ["a", "b", "c"],
            "text": ["good\ntext", "weak text", "short"],
            "drop_reason": [None, None, "gopher_short_doc"],
            "drop_value": [None, None, 1.0],
        }
    )
    seen = []

    def score(lines):
        seen.extend(lines)
        return [0.9 if line.startswith("good") else 0.2 for line in lines]

    out = score_batch(annotated, FilterParams(min_quality_score=0.5), score)
    assert seen == ["good text", "weak text"]  # one line each (DCLM's normalisation), the dropped one never scored
    assert out["quality_score"].to_list() == [0.9, 0.2, None]
    assert out["drop_reason"].to_list() == [None, "low_quality_score", "gopher_short_doc"]
    assert out["drop_value"].to_list() == [None, 0.2, 1.0]
    assert score_batch(annotated, FilterParams(), score)["drop_reason"].to_list() == [None, None, "gopher_short_doc"]


def test_the_quality_cut_ranks_only_the_documents_that_passed_every_rule():
    from curation_assets.core.filtering import keep_top_fraction

    ledger = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(6)],
            "drop_reason": [None, None, None, None, "gopher_short_doc", "low_lang_score"],
            "drop_value": [None, None, None, None, 12.0, 0.3],
            "quality_score": [0.1, 0.2, 0.4, None, 0.9, 0.95],  # the best scores belong to dropped documents
        }
    )
    out = keep_top_fraction(ledger, 0.5)
    assert out.filter(pl.col("drop_reason").is_null())["doc_id"].to_list() == ["d1", "d2"]
    cut = out.filter(pl.col("drop_reason") == "low_quality_score")
    assert cut["doc_id"].to_list() == ["d0", "d3"]  # an unscored survivor ranks last
    assert cut["drop_value"].to_list() == [0.1, None]
    assert out["drop_reason"].to_list()[4:] == ["gopher_short_doc", "low_lang_score"]  # earlier reasons stay


def test_pii_is_redacted_in_the_documents_that_pass_every_rule_and_counted_in_the_ledger():
    from curation_assets.core.filtering import annotate_batch, apply_decisions, ledger_of, partition_ledger, pii_totals

    pii = " Write to jane.doe@example.org from 93.184.216.34, not from 10.0.0.1 on the office network."
    texts = [PROSE + pii, "Too short: jane.doe@example.org", PROSE]
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": texts})
    params = FilterParams(c4_quality=False, top_n_grams=None)
    marked = annotate_batch(docs, params, english)
    ledger = partition_ledger([ledger_of(marked)], params)
    assert ledger["drop_reason"].to_list() == [None, "gopher_short_doc", None]
    assert ledger["pii_emails"].to_list() == [1, None, 0] and ledger["pii_ips"].to_list() == [1, None, 0]
    assert pii_totals(ledger) == {"documents": 1, "emails": 1, "ips": 1}
    keep, gone = apply_decisions(marked, ledger["drop_reason"])
    redacted = keep["text"][0]
    assert "jane.doe" not in redacted and "93.184.216.34" not in redacted and "from 10.0.0.1 on" in redacted
    assert redacted.startswith(PROSE) and keep["text"][1] == PROSE
    assert gone["text"][0] == texts[1]  # a dropped document keeps its text as it came
    assert not {"pii_emails", "pii_ips"} & set(keep.columns)
    off = annotate_batch(
        docs, FilterParams(c4_quality=False, top_n_grams=None, redact_emails=False, redact_ips=False), english
    )
    assert off["text"].to_list() == texts and off["pii_emails"].null_count() == 3
