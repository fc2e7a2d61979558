import time
from pathlib import Path

import polars as pl
import pytest

from curation_assets.filtered import FilterParams, filter_docs, lang_labels

LID_MODEL = Path(__file__).resolve().parents[1] / "resources" / "models" / "lid.176.ftz"

PROSE = (
    "Curation pipelines turn raw crawled text into training data. Each step records why a document was removed, "
    "so that the decisions can be audited later. The filters below follow the heuristics of the Gopher paper, "
    "which were tuned on English web pages and are applied with the thresholds that datatrove ships by default. "
    "A document that survives every rule is passed on to deduplication, where exact and near copies are removed "
    "before the remaining text is mixed with other sources and tokenized for training."
)
LONG_LINE = "This line is long enough to dominate the character count of the whole little document on its own."


def tokens(n: int, stem: str = "term") -> list[str]:
    return [f"{stem}{i:03d}" for i in range(n)]


def reason(text: str, lang: str = "en", score: float = 0.99, **params) -> str | None:
    docs = pl.DataFrame({"doc_id": ["d"], "text": [text]})
    marked = filter_docs(docs, FilterParams(**params), pl.DataFrame({"lang": [lang], "lang_score": [score]}))
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
    ("gopher_too_many_hashes", dict(text=PROSE + " " + " ".join(f"#topic{i}" for i in range(10)))),
    ("gopher_too_many_ellipsis", dict(text=PROSE + " " + " ".join(f"wait{i}..." for i in range(10)))),
    ("gopher_too_many_bullets", dict(text="\n".join(f"  - alpha{i} beta{i} gamma{i}" for i in range(60)))),
    (
        "gopher_too_many_end_ellipsis",
        dict(text="\n".join(" ".join(tokens(12, f"l{i}w")) + ("…" if i < 4 else ".") for i in range(10))),
    ),
    ("gopher_below_alpha_threshold", dict(text=PROSE + " " + " ".join(str(1000 + i) for i in range(25)))),
    ("gopher_enough_stop_words", dict(text=" ".join(tokens(60)))),
]


@pytest.mark.parametrize(("expected", "case"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_with_its_datatrove_reason(expected, case):
    case = dict(case)
    assert reason(case.pop("text"), **case) == expected


def test_real_prose_is_kept_and_columns_are_added():
    docs = pl.DataFrame({"doc_id": ["a", "b"], "text": [PROSE, PROSE.replace("The filters", "Our filters")]})
    lang = pl.DataFrame({"lang": ["en", "en"], "lang_score": [0.93, 0.91]})
    marked = filter_docs(docs, FilterParams(languages=("en",)), lang)
    assert marked.columns == ["doc_id", "text", "lang", "lang_score", "drop_reason"]
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


def test_stop_words_are_unique_case_sensitive_and_ignore_surrounding_punctuation():
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
    start = time.perf_counter()
    marked = filter_docs(docs, FilterParams(), lang)
    assert marked["drop_reason"].to_list() == ["gopher_short_doc"] * 3
    assert time.perf_counter() - start < 30  # linear: a few seconds; quadratic would not finish


def test_lang_labels_prepares_single_line_capped_texts():
    seen: list[str] = []

    def predict(texts: list[str]) -> tuple[list[str], list[float]]:
        seen.extend(texts)
        return ["__label__en", "__label__de", "__label__ja"], [0.91, 0.5, 1.0]

    texts = pl.Series(["line one\nline two", "ä" * 25_000, None])
    frame = lang_labels(predict, texts)
    assert seen == ["line one line two", "ä" * 10_000, ""]
    assert frame.schema == pl.Schema({"lang": pl.String, "lang_score": pl.Float64})
    assert frame.to_dicts() == [
        {"lang": "en", "lang_score": 0.91},
        {"lang": "de", "lang_score": 0.5},
        {"lang": "ja", "lang_score": 1.0},
    ]
    assert lang_labels(predict, pl.Series([], dtype=pl.String)).height == 0


def test_lang_labels_accepts_fasttext_shaped_output():
    def predict(texts):  # fastText model.predict(texts, k=1): per text a tuple of labels and an array of scores
        return [("__label__fr",), ()], [[0.8], []]

    assert lang_labels(predict, pl.Series(["bonjour", ""])).rows() == [("fr", 0.8), (None, 0.0)]


@pytest.mark.skipif(not LID_MODEL.exists(), reason="lid.176.ftz is not vendored")
def test_lid176_labels_english_german_japanese():
    fasttext = pytest.importorskip("fasttext")
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
