"""Per-document statistics behind datatrove 0.10.1's rule families, computed column-wise in polars.

`features(texts, ...)` returns one row per text (aligned) of `_`-prefixed statistics; `filtered.py` turns them into
rules. Everything is vectorised (texts are exploded into words / lines and aggregated); the one sequential algorithm,
datatrove's greedy `find_all_duplicate` scan for duplicated 5..10-grams, runs in Python only for the few documents
whose exact upper bound (chars of every repeated n-gram occurrence) exceeds the threshold.

Words emulate datatrove's English word tokenizer (spaCy `blank("en")`, tokens stripped, empty ones dropped):
whitespace chunks, with spaCy's single-char prefix/suffix punctuation split off, a final `.` split off, contractions
(`n't`, `'s`, `'re`, ...) split, and hyphen / `:` `/` `<` `>` `=` / comma infixes between letters split. Known residual
differences: abbreviations (`U.S.`, `e.g.` and `Mr.` stay whole in spaCy), `10km` (spaCy splits units), `a...b`,
and emoticons; they move counts by a token or two and flip a decision only at a threshold's edge (see the parity test).
"""

from __future__ import annotations

import polars as pl

from curation_assets._dt_chars import PUNCTUATION, SENTENCE_PUNCT, SPACY_AFFIXES, TERMINAL_PUNCTUATION


def _cls(chars: str) -> str:
    return "".join(f"\\x{{{ord(c):X}}}" for c in chars)


_A = _cls(SPACY_AFFIXES)
_CONTRACTION = r"(?i)(\p{L})(n['’]t|['’](?:s|re|ve|ll|d|m))\b"
_INFIX = r"([\p{L}\p{N}])(-+|–|—|[:/<>=])(\p{L})|(\p{L})(,)(\p{L})"
TOKEN = rf"(?i:n['’]t|['’](?:s|re|ve|ll|d|m))\b|\p{{L}}\.(?:\p{{L}}\.)*|\.{{2,}}|[{_A}]|[^\s{_A}.]+(?:[{_A}.]+[^\s{_A}.]+)*|\S"
_NON_SYMBOL = rf"[^{_cls(PUNCTUATION)}]"
_TERMINAL_END = rf"[{_cls(TERMINAL_PUNCTUATION)}]$"
_SENT = _cls(SENTENCE_PUNCT)
# A sentence break as spaCy's sentencizer finds one on our tokens: a sentence-punct token (split off the word it ends)
# followed, after optional closing quotes/brackets, by a token that is not punctuation.
_SENT_BREAK = rf"[^\s{_SENT}][{_SENT}]+[\"'”’)\]»]*\s+[\"'“‘(\[«]*[\p{{L}}\p{{N}}]"
# Python str.splitlines() boundaries, normalised to "\n" before counting lines.
LINE_BREAK = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"
_CITATION = r"\[\d*]|\[edit]|\[citation needed]"
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


def words_expr(text: pl.Expr) -> pl.Expr:
    """List of words as datatrove's English `split_into_words` (spaCy) would give them (see module docstring)."""
    t = text.str.replace_all(_CONTRACTION, "$1 $2")
    for _ in range(2):  # non-overlapping matches: "a-b-c" needs a second pass
        t = t.str.replace_all(_INFIX, "$1$4 $2$5 $3$6")
    return t.str.extract_all(TOKEN)


def _part_dups(frame: pl.LazyFrame, parts: pl.Expr, name: str) -> pl.LazyFrame:
    """datatrove `find_duplicates` per doc: (# parts, # parts seen before in the doc, # chars of those)."""
    counts = frame.select("_i", parts.alias("_p")).explode("_p").group_by("_i", "_p").len()
    extra = pl.col("len") - 1
    return counts.group_by("_i").agg(
        pl.col("len").sum().alias(f"_{name}_n"),
        extra.sum().alias(f"_{name}_dups"),
        (extra * pl.col("_p").str.len_chars()).sum().alias(f"_{name}_dup_chars"),
    )


# odd 64-bit multipliers: an n-gram's key is sum(hash(word_k) * M_k) (wrapping), i.e. a hash of the word tuple
_MULT = [(0x9E3779B97F4A7C15 + 2 * k * 0x632BE59BD9B4E019) % 2**64 | 1 for k in range(10)]


def _grams(words: pl.LazyFrame, n: int, sep: str) -> pl.LazyFrame:
    """Every n-gram of every doc: its key (a 64-bit hash of the word tuple; a collision inside one document is
    negligible, and keys are never persisted) and its length in chars when joined with `sep`."""
    key = pl.sum_horizontal([pl.col("_h").shift(-k) * pl.lit(_MULT[k], pl.UInt64) for k in range(n)])
    chars = pl.sum_horizontal([pl.col("_len").shift(-k) for k in range(n)]) + len(sep) * (n - 1)
    return words.select("_i", "_pos", key.alias("_g"), chars.alias("_chars")).filter(
        pl.col("_i").shift(-(n - 1)) == pl.col("_i")
    )


def _top_ngram_chars(words: pl.LazyFrame, n: int) -> pl.LazyFrame:
    """datatrove `find_top_duplicate`: len(top n-gram) * its count; ties -> the first occurring (Counter order).
    n-grams are grouped by a 64-bit hash of their text, within one document and one call (never persisted)."""
    counts = (
        _grams(words, n, " ")
        .group_by("_i", "_g")
        .agg(pl.len().alias("_c"), pl.col("_pos").min(), pl.col("_chars").first())
    )
    top = counts.filter(pl.col("_c") == pl.col("_c").max().over("_i")).filter(
        pl.col("_pos") == pl.col("_pos").min().over("_i")
    )
    return top.select("_i", (pl.col("_c") * pl.col("_chars")).alias(f"_top{n}"))


def greedy_dup_chars(grams: list[int], chars: list[int], n: int) -> int:
    """datatrove `find_all_duplicate` on precomputed n-gram keys: a repeat adds its chars and jumps n words."""
    seen: set[int] = set()
    total = idx = 0
    while idx < len(grams):
        if grams[idx] in seen:
            total += chars[idx]
            idx += n
        else:
            seen.add(grams[idx])
            idx += 1
    return total


def _dup_ngram_chars(words: pl.LazyFrame, docs: pl.DataFrame, n: int, frac: float) -> pl.DataFrame:
    """`_dup{n}`: datatrove's duplicated-n-gram chars for the docs whose `_skip` is false (null for the others: an
    earlier rule already drops them, so they never reach this one); exact wherever it can exceed `frac` * len(text),
    else the upper bound (the chars of every non-first occurrence), which is then <= the threshold."""
    live = docs.filter(~pl.col("_skip"))["_i"].implode()
    grams = (
        _grams(words.filter(pl.col("_i").is_in(live)), n, "")
        .with_columns(pl.col("_g").is_first_distinct().over("_i").alias("_first"))
        .collect()
    )
    bound = grams.group_by("_i").agg(pl.col("_chars").filter(~pl.col("_first")).sum().alias("_b"))
    hot = bound.join(docs, on="_i").filter(pl.col("_b") > frac * pl.col("_chars"))["_i"]
    exact = grams.filter(pl.col("_i").is_in(hot.implode())).group_by("_i", maintain_order=True).agg("_g", "_chars")
    values = [greedy_dup_chars(g, c, n) for g, c in exact.select("_g", "_chars").iter_rows()]
    exact = pl.DataFrame({"_i": exact["_i"], "_x": pl.Series(values, dtype=pl.Int64)})
    return bound.join(exact, on="_i", how="left").select("_i", pl.coalesce("_x", "_b").cast(pl.Int64).alias(f"_dup{n}"))


def c4_lines(base: pl.LazyFrame, terminal_punct: bool) -> pl.LazyFrame:
    """C4QualityFilter (split_paragraph=True) per line, in datatrove's order: `_c4_event` (first doc-level drop:
    lorem_ipsum / curly_bracket), `_c4_sentences` over kept lines, `_c4_text` (kept lines joined by "\\n")."""
    c = pl.col
    lines = base.select("_i", c("text").str.replace_all(LINE_BREAK, "\n").str.split("\n").alias("_l")).explode("_l")
    lines = lines.with_columns(c("_l").str.strip_chars()).with_columns(
        c("_l").str.replace_all(_CITATION, "").alias("_c")
    )  # intermediate columns: each computed once
    lines = lines.with_columns(
        c("_c").str.to_lowercase().alias("_low"),
        (
            c("_l").str.contains(r"\S{1001}")  # a word longer than 1000 chars
            | (~c("_c").str.contains(r"[.?!\"']$") | c("_c").str.ends_with("...") if terminal_punct else pl.lit(False))
            | (c("_l").str.count_matches(r"\S+") < 3)
        ).alias("_skip"),
    )
    lines = lines.with_columns(
        (~c("_skip") & c("_low").str.contains("lorem ipsum", literal=True)).alias("_lorem"),
        c("_low").str.contains("javascript", literal=True).alias("_js"),
        c("_low").str.contains_any(list(POLICY)).alias("_policy"),
    )
    lines = lines.with_columns(
        (~c("_skip") & ~c("_lorem") & ~c("_js") & c("_c").str.contains("{", literal=True)).alias("_curly")
    )
    kept = ~c("_skip") & ~c("_lorem") & ~c("_js") & ~c("_curly") & ~c("_policy")
    event = pl.when(c("_lorem")).then(pl.lit("lorem_ipsum")).when(c("_curly")).then(pl.lit("curly_bracket"))
    per_line = lines.select(
        "_i", "_c", event.alias("_ev"), kept.alias("_k"), (c("_c").str.count_matches(_SENT_BREAK) + 1).alias("_s")
    )
    return per_line.group_by("_i").agg(
        pl.col("_ev").drop_nulls().first().alias("_c4_event"),
        pl.col("_s").filter("_k").sum().alias("_c4_sentences"),
        pl.col("_c").filter("_k").str.join("\n").str.strip_chars().alias("_c4_text"),
    )


def fineweb_lines(base: pl.LazyFrame, short_line_length: int) -> pl.LazyFrame:
    """FineWebQualityFilter's line statistics over the non-blank `\\n`-separated lines."""
    lines = (
        base.select("_i", pl.col("text").str.split("\n").alias("_l"))
        .explode("_l")
        .filter(pl.col("_l").str.strip_chars() != "")
    )
    dups = (
        lines.group_by("_i", "_l")
        .len()
        .group_by("_i")
        .agg(((pl.col("len") - 1) * pl.col("_l").str.len_chars()).sum().alias("_fw_dup_chars"))
    )
    stats = lines.group_by("_i").agg(
        pl.len().alias("_fw_lines"),
        pl.col("_l").str.contains(_TERMINAL_END).sum().alias("_fw_punct_lines"),
        (pl.col("_l").str.len_chars() <= short_line_length).sum().alias("_fw_short_lines"),
    )
    return stats.join(dups, on="_i", how="left")


def features(
    texts: pl.Series,
    *,
    top_n_grams=(),
    dup_n_grams=(),
    stop_words=(),
    c4: bool = False,
    c4_terminal_punct: bool = False,
    fineweb: bool = False,
    short_line_length: int = 30,
    dropped_before_dup: pl.Expr | None = None,
) -> pl.DataFrame:
    """One row per text: every statistic the rules compare (see filtered._rules). Null = not defined for the doc.

    `dropped_before_dup` (over these features) marks docs that a rule before the duplicated-n-gram rules already
    drops: the sequential n-gram scan skips them, and a doc whose n-gram rule fired skips the larger n."""
    text = pl.col("text")
    base = pl.DataFrame({"text": texts.cast(pl.String).fill_null("")}).lazy().with_row_index("_i")
    words = (
        base.select("_i", words_expr(text).alias("_w"))
        .explode("_w")
        .drop_nulls("_w")
        .with_row_index("_pos")
        .with_columns(
            pl.col("_w").str.len_chars().alias("_len"),
            pl.col("_w").str.contains(_NON_SYMBOL).alias("_nsw"),
            pl.col("_w").hash().alias("_h"),
        )
        .collect()
        .lazy()
    )
    word_stats = words.group_by("_i").agg(
        pl.len().alias("_n_words"),
        pl.col("_nsw").sum().alias("_n_nsw"),
        pl.col("_len").filter("_nsw").sum().alias("_nsw_chars"),
        pl.col("_w").str.contains(r"\p{L}").sum().alias("_alpha_words"),
        pl.col("_w").filter(pl.col("_w").is_in(list(stop_words))).n_unique().alias("_stop_words"),
    )
    lines = text.str.replace_all(LINE_BREAK, "\n")
    n_chars = text.str.len_chars()
    per_doc = base.select(
        "_i",
        n_chars.alias("_chars"),
        (
            lines.str.count_matches("\n", literal=True) + ((n_chars > 0) & ~lines.str.ends_with("\n")).cast(pl.UInt32)
        ).alias("_lines"),
        lines.str.count_matches(r"(?m)^[^\S\n]*[•\-]").alias("_bullet_lines"),
        lines.str.count_matches(r"(?m)(?:\.\.\.|…)[^\S\n]*$").alias("_end_lines"),
        text.str.count_matches("#", literal=True).alias("_hashes"),
        (text.str.count_matches("...", literal=True) + text.str.count_matches("…", literal=True)).alias("_ellipsis"),
        text.str.count_matches("\n", literal=True).alias("_newlines"),
    )
    parts = [
        _part_dups(base, text.str.strip_chars().str.replace_all(r"\n{2,}", "\n\n").str.split("\n\n"), "para"),
        _part_dups(base, text.str.replace_all(r"\n+", "\n").str.split("\n"), "line"),  # re.split("\n+", text)
        word_stats,
        *(_top_ngram_chars(words, n) for n, _ in top_n_grams),
    ]
    if c4:
        parts.append(c4_lines(base, c4_terminal_punct))
    if fineweb:
        parts.append(fineweb_lines(base, short_line_length))
    for part in parts:
        per_doc = per_doc.join(part, on="_i", how="left")
    out = per_doc.collect()
    skip = pl.lit(False) if dropped_before_dup is None else dropped_before_dup.fill_null(False)
    docs = out.select("_i", "_chars", skip.alias("_skip"))
    for n, frac in dup_n_grams:
        dup = _dup_ngram_chars(words, docs, n, frac)
        out = out.join(dup, on="_i", how="left")
        docs = docs.join(dup, on="_i", how="left").select(
            "_i", "_chars", pl.col("_skip") | (pl.col(f"_dup{n}").fill_null(0) > frac * pl.col("_chars"))
        )
    return out.sort("_i").drop("_i")
