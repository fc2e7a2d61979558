"""`filtered`: raw docs -> docs passing fastText language ID and the Gopher repetition + quality heuristics.

Pure polars core (no Dagster, no I/O): per-document statistics are computed once, vectorised (words are exploded into
one long frame and aggregated; no per-row Python), then every rule is a column comparison and `mark_dropped` keeps the
first failing rule. Rule order is datatrove's FineWeb recipe (`examples/fineweb.py`): LanguageFilter ->
GopherRepetitionFilter -> GopherQualityFilter, with datatrove 0.10.1's definitions and reason names.

Known deviations from datatrove:
- Words are whitespace runs (`\\S+`). datatrove uses a language-aware word tokenizer (spaCy for English, which splits
  punctuation off words; jieba, sudachi, ... for CJK). In CJK text a whole sentence is one "word", so
  `gopher_short_doc` / `gopher_above_avg_threshold` fire on most zh/ja documents: set those params to None for such
  sources until a CJK-aware splitter exists. For stop words, punctuation around a word is stripped ("the," is "the").
- "Symbol-only" words are words made only of Unicode punctuation, symbol or control chars (datatrove: PUNCTUATION_SET).
- Not implemented: the sequential `duplicated_{5..10}_n_grams` scan (it jumps ahead after every hit: not vectorisable).
"""


from collections.abc import Callable, Sequence

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict

from curation_assets._dagster import drop_rate_result, drop_rate_spec, enforce_transfers, pod, source_partitions
from curation_assets.frames import StepOutput, mark_dropped, split_kept, stable_id
from resources.classifiers import LanguageIdResource
from resources.cost_guard import CostGuard

# Gopher (Rae et al. 2021, Table A1) stop words, as in datatrove's GopherQualityFilter.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# A word that contains any char outside punctuation/symbols/controls is a "non-symbol word".
_NON_SYMBOL_CHAR = r"[^\p{P}\p{S}\p{Cc}]"
_STRIP_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»„…–—¡¿。，、；：？！（）「」"
# Python's str.splitlines() boundaries; normalised to "\n" before counting lines.
_LINE_BREAK = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"
LANG_MAX_CHARS = 10_000


class FilterParams(BaseModel):
    """Per-source filter thresholds. Every rule is disabled by setting its threshold to None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # datatrove LanguageFilter: languages=None (any), language_threshold=0.65 (also FineWeb, DCLM). ft176 labels.
    languages: tuple[str, ...] | None = None
    min_lang_score: float | None = 0.65
    # datatrove GopherRepetitionFilter defaults (Gopher Table A1).
    dup_para_frac: float | None = 0.3
    dup_para_char_frac: float | None = 0.2
    dup_line_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] | None = ((2, 0.2), (3, 0.18), (4, 0.16))
    # datatrove GopherQualityFilter defaults (Gopher §A.1).
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8  # drop if share of words with a letter < this (name is datatrove's)
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS

    @property
    def version(self) -> str:
        return stable_id(self.model_dump_json())[:12]


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    # null (rule not triggered) instead of NaN/inf: polars orders NaN above every number.
    return pl.when(den > 0).then(num / den)


def _part_dups(docs: pl.LazyFrame, parts: pl.Expr, name: str) -> pl.LazyFrame:
    """datatrove `find_duplicates` per doc: (# parts seen before in the doc, # chars of those parts)."""
    counts = docs.select("_i", parts.alias("_p")).explode("_p").group_by("_i", "_p").len()
    extra = pl.col("len") - 1
    return counts.group_by("_i").agg(
        pl.len().alias(f"_{name}_unique"),
        extra.sum().alias(f"_{name}_dups"),
        (extra * pl.col("_p").str.len_chars()).sum().alias(f"_{name}_dup_chars"),
    )


def _top_ngram_chars(words: pl.LazyFrame, n: int) -> pl.LazyFrame:
    """datatrove `find_top_duplicate`: len(top n-gram) * its count; ties -> first occurring (Counter order).

    n-grams are grouped by a polars hash of their text: used only within this call, never persisted, and a 64-bit
    collision inside one document is negligible.
    """
    gram = pl.concat_str([pl.col("_w").shift(-k) for k in range(n)], separator=" ")
    chars = pl.sum_horizontal([pl.col("_len").shift(-k) for k in range(n)]) + (n - 1)
    grams = words.select("_i", "_pos", gram.hash().alias("_g"), chars.alias("_chars")).filter(
        pl.col("_i").shift(-(n - 1)) == pl.col("_i")
    )
    counts = grams.group_by("_i", "_g").agg(pl.len().alias("_c"), pl.col("_pos").min(), pl.col("_chars").first())
    top = counts.filter(pl.col("_c") == pl.col("_c").max().over("_i")).filter(
        pl.col("_pos") == pl.col("_pos").min().over("_i")
    )
    return top.select("_i", (pl.col("_c") * pl.col("_chars")).alias(f"_top{n}"))


def _features(docs: pl.DataFrame, p: FilterParams) -> pl.DataFrame:
    """One row per doc (aligned with `docs`) holding every statistic the rules compare, as `_`-prefixed columns."""
    text = pl.col("text").fill_null("")
    base = docs.lazy().select(text.alias("text")).with_row_index("_i")
    words = (
        base.select("_i", text.str.extract_all(r"\S+").alias("_w"))
        .explode("_w")
        .drop_nulls("_w")
        .with_row_index("_pos")
        .with_columns(
            pl.col("_w").str.len_chars().alias("_len"), pl.col("_w").str.contains(_NON_SYMBOL_CHAR).alias("_nsw")
        )
        .collect()  # materialised once: four queries below read it
        .lazy()
    )
    stripped = pl.col("_w").str.strip_chars(_STRIP_PUNCT)
    word_stats = words.group_by("_i").agg(
        pl.len().alias("_n_words"),
        pl.col("_nsw").sum().alias("_n_nsw"),
        pl.col("_len").filter("_nsw").sum().alias("_nsw_chars"),
        pl.col("_w").str.contains(r"\p{L}").sum().alias("_alpha_words"),
        stripped.filter(stripped.is_in(list(p.stop_words))).n_unique().alias("_stop_words"),
    )
    lines = text.str.replace_all(_LINE_BREAK, "\n")
    n_chars = text.str.len_chars()
    per_doc = base.select(
        "_i",
        n_chars.alias("_chars"),
        (lines.str.count_matches("\n", literal=True) + ((n_chars > 0) & ~lines.str.ends_with("\n")).cast(pl.UInt32))
        .alias("_lines"),
        lines.str.count_matches(r"(?m)^[^\S\n]*[•\-]").alias("_bullet_lines"),
        lines.str.count_matches(r"(?m)(?:\.\.\.|…)[^\S\n]*$").alias("_end_lines"),
        text.str.count_matches("#", literal=True).alias("_hashes"),
        (text.str.count_matches("...", literal=True) + text.str.count_matches("…", literal=True)).alias("_ellipsis"),
    )
    parts = [
        _part_dups(base, text.str.strip_chars().str.replace_all(r"\n{2,}", "\n\n").str.split("\n\n"), "para"),
        _part_dups(base, text.str.replace_all(r"\n+", "\n").str.split("\n"), "line"),  # re.split("\n+", text)
        word_stats,
        *(_top_ngram_chars(words, n) for n, _ in p.top_n_grams or ()),
    ]
    for part in parts:
        per_doc = per_doc.join(part, on="_i", how="left")
    return per_doc.sort("_i").drop("_i").collect()


def _rules(p: FilterParams) -> dict[str, pl.Expr]:
    c = pl.col
    rules: dict[str, pl.Expr] = {}
    if p.languages is not None:
        rules["lang_not_allowed"] = ~c("lang").is_in(list(p.languages)).fill_null(False)
    if p.min_lang_score is not None:  # datatrove keeps iff score > threshold (strict)
        rules["low_lang_score"] = c("lang_score").fill_null(0.0) <= p.min_lang_score
    rules["empty"] = c("_chars") == 0
    checks: list[tuple[str, float | None, pl.Expr, bool]] = [
        # (reason, threshold, value, drop when value > threshold (else <))
        ("dup_para_frac", p.dup_para_frac, _ratio(c("_para_dups"), c("_para_dups") + c("_para_unique")), True),
        ("dup_para_char_frac", p.dup_para_char_frac, _ratio(c("_para_dup_chars"), c("_chars")), True),
        ("dup_line_frac", p.dup_line_frac, _ratio(c("_line_dups"), c("_line_dups") + c("_line_unique")), True),
        ("dup_line_char_frac", p.dup_line_char_frac, _ratio(c("_line_dup_chars"), c("_chars")), True),
        *((f"top_{n}_gram", frac, _ratio(c(f"_top{n}"), c("_chars")), True) for n, frac in p.top_n_grams or ()),
        ("gopher_short_doc", p.min_doc_words, c("_n_nsw").fill_null(0), False),
        ("gopher_long_doc", p.max_doc_words, c("_n_nsw"), True),
        ("gopher_below_avg_threshold", p.min_avg_word_length, _ratio(c("_nsw_chars"), c("_n_nsw")), False),
        ("gopher_above_avg_threshold", p.max_avg_word_length, _ratio(c("_nsw_chars"), c("_n_nsw")), True),
        ("gopher_too_many_hashes", p.max_symbol_word_ratio, _ratio(c("_hashes"), c("_n_words")), True),
        ("gopher_too_many_ellipsis", p.max_symbol_word_ratio, _ratio(c("_ellipsis"), c("_n_words")), True),
        ("gopher_too_many_bullets", p.max_bullet_lines_ratio, _ratio(c("_bullet_lines"), c("_lines")), True),
        ("gopher_too_many_end_ellipsis", p.max_ellipsis_lines_ratio, _ratio(c("_end_lines"), c("_lines")), True),
        ("gopher_below_alpha_threshold", p.max_non_alpha_words_ratio, _ratio(c("_alpha_words"), c("_n_words")), False),
        ("gopher_enough_stop_words", p.min_stop_words, c("_stop_words").fill_null(0), False),
    ]
    for name, thr, value, drop_if_above in checks:
        if thr is not None:
            rules[name] = value > thr if drop_if_above else value < thr
    return rules


def filter_docs(docs: pl.DataFrame, params: FilterParams, lang: pl.DataFrame) -> pl.DataFrame:
    """Return `docs` + `lang`, `lang_score` (from `lang`, aligned row-wise) + `drop_reason` (null = kept).

    Requires `text`. Rules run in datatrove's FineWeb order and the first failure wins: `lang_not_allowed`,
    `low_lang_score`, `empty`, `dup_para_frac`, `dup_para_char_frac`, `dup_line_frac`, `dup_line_char_frac`,
    `top_{n}_gram`, then the `gopher_*` quality reasons.
    """
    if lang.height != docs.height:
        raise ValueError(f"lang has {lang.height} rows, docs has {docs.height}")
    scored = docs.with_columns(
        lang["lang"].cast(pl.String).alias("lang"), lang["lang_score"].cast(pl.Float64).alias("lang_score")
    )
    features = _features(docs, params)
    marked = mark_dropped(pl.concat([scored, features], how="horizontal"), _rules(params))
    return marked.drop(features.columns)


def lang_labels(
    predict: Callable[[list[str]], tuple[Sequence, Sequence]], texts: pl.Series, max_chars: int = LANG_MAX_CHARS
) -> pl.DataFrame:
    """Top-1 language per text as a `lang` (ft176 label without `__label__`) / `lang_score` frame.

    `predict` is fastText-like: a list of single-line strings -> (labels, scores), one per text; a label/score may also
    be fastText's per-text sequence (k=1), whose first element is used. Newlines become spaces (fastText's predict
    rejects "\\n"). Only the first `max_chars` characters are classified: fastText's cost is linear in the input (every
    word expands into char n-grams), a few hundred words settle the language, and a 16 MiB text without spaces would
    otherwise be one huge token. An empty prediction gives lang=null, lang_score=0.
    """
    prepared = texts.cast(pl.String).fill_null("").str.slice(0, max_chars).str.replace_all("\n", " ", literal=True)
    labels, scores = predict(prepared.to_list()) if len(prepared) else ([], [])
    langs: list[str | None] = []
    probs: list[float] = []
    for label, score in zip(labels, scores, strict=True):
        if not isinstance(label, str):  # fastText returns a tuple of k labels and an array of k scores per text
            label, score = (label[0], score[0]) if len(label) else (None, 0.0)
        langs.append(None if label is None else label.removeprefix("__label__"))
        probs.append(float(score))
    return pl.DataFrame({"lang": langs, "lang_score": probs}, schema={"lang": pl.String, "lang_score": pl.Float64})


# --- asset wrapper (added by lead) ---
def build(cfg, version: str) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=source_partitions, code_version=version, op_tags=pod("2", "4Gi"), group_name="curation",
              check_specs=[drop_rate_spec("filtered")])
    def filtered(context: dg.AssetExecutionContext, raw: pl.LazyFrame, lid: LanguageIdResource, cost_guard: CostGuard):
        """Raw documents that pass language ID and the Gopher rules, + `lang`, `lang_score`; dropped rows keep
        every column and their `drop_reason`."""
        docs = raw.collect()
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        params = FilterParams(**cfg.thresholds.filtered.for_source(context.partition_key))
        kept, dropped = split_kept(filter_docs(docs, params, lang_labels(lid.predict, docs["text"])))
        out = StepOutput(kept=kept, dropped=dropped, rows_in=docs.height, bytes_in=docs.estimated_size(),
                         config_version=version, extra=transfer)
        yield dg.Output(out)
        yield drop_rate_result(out, cfg.thresholds.filtered.max_drop_rate)

    return filtered
