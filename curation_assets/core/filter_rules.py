"""Per-document statistics behind datatrove 0.10.1's rule families, computed column-wise in polars.

`features(texts, ...)` returns one row per text (aligned) of `_`-prefixed statistics; `filtered.py` turns them into
rules. Everything is vectorised (texts are exploded into words / lines and aggregated); the one sequential algorithm,
datatrove's greedy `find_all_duplicate` scan for duplicated 5..10-grams, runs in Python only for the few documents
whose upper bounds (the chars of every non-first occurrence of a repeated n-gram, then of the words those occurrences
cover) both exceed the threshold, and only over their repeated n-grams; a document under the threshold gets the bound
as its value. n-gram statistics run on numpy arrays of 64-bit word-tuple hashes, hashing only n-grams that can repeat.

Words emulate datatrove's English word tokenizer (spaCy `blank("en")`, tokens stripped, empty ones dropped):
whitespace chunks, with spaCy's single-char prefix/suffix punctuation split off, a final `.` split off, contractions
(`n't`, `'s`, `'re`, ...) split, and hyphen / `:` `/` `<` `>` `=` / comma infixes between letters split. Known residual
differences: abbreviations (`U.S.`, `e.g.` and `Mr.` stay whole in spaCy), `10km` (spaCy splits units), `a...b`,
and emoticons; they move counts by a token or two and flip a decision only at a threshold's edge (see the parity test).
"""

from __future__ import annotations

import bisect

import numpy as np
import polars as pl

from curation_assets.core._dt_chars import PUNCTUATION, SENTENCE_PUNCT, SPACY_AFFIXES, TERMINAL_PUNCTUATION


def _cls(chars: str) -> str:
    return "".join(f"\\x{{{ord(c):X}}}" for c in chars)


_A = _cls(SPACY_AFFIXES)
# `(\W|$)` is `\b` after the contraction's last letter, consumed and put back: a `\b` makes the regex engine fall back
# from its DFA on non-ASCII text (several times slower); the consumed char is no letter, so no next match needs it
_CONTRACTION = r"(?i)(\p{L})(n['’]t|['’](?:s|re|ve|ll|d|m))(\W|$)"
_INFIX = r"([\p{L}\p{N}])(-+|–|—|[:/<>=])(\p{L})|(\p{L})(,)(\p{L})"


def _token(boundary: str) -> str:
    """One word of `split_words`: spaCy's contraction suffixes (followed by `boundary`), abbreviations, ellipses, an affix,
    affix-joined chunks, any other character."""
    chunk = rf"[^\s{_A}.]+(?:[{_A}.]+[^\s{_A}.]+)*"
    return rf"(?i:n['’]t|['’](?:s|re|ve|ll|d|m)){boundary}|\p{{L}}\.(?:\p{{L}}\.)*|\.{{2,}}|[{_A}]|{chunk}|\S"


TOKEN = _token(r"\b")
# The Unicode `\b` after a contraction makes the regex engine leave its DFA on any text with a non-ASCII character
# (2.2x slower over the shared corpus); the ASCII one does not. They differ only where the contraction is followed by
# a non-ASCII word character (`'sé`): texts holding that take TOKEN (25 of the shared corpus's 15,409).
_TOKEN_ASCII = _token(r"(?-u:\b)")
_BOUNDARIES_DIFFER = r"(?i)['’](?:t|s|re|ve|ll|d|m)[\w&&[^\x00-\x7F]]"
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


def split_words(texts: pl.Series) -> pl.Series:
    """List of words per text as datatrove's English `split_into_words` (spaCy) would give them (see module
    docstring)."""

    def split(t: pl.Series, token: str) -> pl.Series:
        t = t.str.replace_all(_CONTRACTION, "$1 $2$3")
        for _ in range(2):  # non-overlapping matches: "a-b-c" needs a second pass
            t = t.str.replace_all(_INFIX, "$1$4 $2$5 $3$6")
        return t.str.extract_all(token)

    out = split(texts, _TOKEN_ASCII)
    odd = texts.str.contains(_BOUNDARIES_DIFFER).fill_null(False).arg_true().to_list()
    if not odd:
        return out
    slow = split(texts.gather(odd), TOKEN)
    # spliced in as slices (a list Series has no scatter): no copy of the other rows' words
    pieces, at = [], 0
    for j, row in enumerate(odd):
        pieces += [out.slice(at, row - at), slow.slice(j, 1)]
        at = row + 1
    return pl.concat([*pieces, out.slice(at)])


def _part_dups(frame: pl.LazyFrame, parts: pl.Expr, name: str) -> pl.LazyFrame:
    """datatrove `find_duplicates` per doc: (# parts, # parts seen before in the doc, # chars of those)."""
    counts = frame.select("_i", parts.alias("_p")).explode("_p").group_by("_i", "_p").len()
    extra = pl.col("len") - 1
    return counts.group_by("_i").agg(
        pl.col("len").sum().alias(f"_{name}_n"),
        extra.sum().alias(f"_{name}_dups"),
        (extra * pl.col("_p").str.len_chars()).sum().alias(f"_{name}_dup_chars"),
    )


# An n-gram's key chains splitmix64's finalizer over (doc index, word hashes): key = mix(... mix(mix(doc) ^ h0) ^ h1 ...).
# A linear key (sum of hash(word_k) * M_k) would collide on structured n-grams ("a b b a" vs "b a a b" whenever the
# multipliers are in arithmetic progression); a mixed one collides with probability ~2^-64 per pair.
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB), np.uint64(31))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place."""
    s1, m1, s2, m2, s3 = _MIX
    x ^= x >> s1
    x *= m1
    x ^= x >> s2
    x *= m2
    x ^= x >> s3
    return x


_CHUNK = 65_536  # n-gram positions per `_Words.scan` step


class _Words:
    """The exploded words as numpy arrays (positions in doc order): doc index, word hash, char-length prefix sums and
    the number of words from each position to its doc's end (an n-gram starts at p iff that is >= n).
    n-gram keys are 64-bit hashes of (doc, word tuple) (see _MIX): keys are never persisted.

    Only n-grams that can repeat are hashed: an n-gram at p repeats (occurs again in its doc) only if, for any m < n,
    the m-grams at p .. p + n - m all do; `repeats` keeps, per m already scanned, that flag per position (and whether
    it covered every doc or only those still live then)."""

    def __init__(self, words: pl.DataFrame, n_docs: int):
        self.n_docs = n_docs
        self.doc = words["_i"].to_numpy().astype(np.int64)
        self.h = words["_h"].to_numpy()
        self.cum = np.concatenate([[0], np.cumsum(words["_len"].to_numpy(), dtype=np.int64)])
        self.n_words = np.bincount(self.doc, minlength=n_docs)
        self.start = np.cumsum(self.n_words) - self.n_words
        self.left = (self.start + self.n_words)[self.doc] - np.arange(len(self.doc))
        self.salt = _mix(self.doc.astype(np.uint64))
        self.repeats: dict[int, tuple[np.ndarray, bool]] = {}

    def keys(self, pos: np.ndarray, n: int) -> np.ndarray:
        key = self.salt[pos]
        for k in range(n):
            key ^= self.h[pos + k]
            _mix(key)
        return key

    def chars(self, pos: np.ndarray, n: int, sep: int) -> np.ndarray:
        return self.cum[pos + n] - self.cum[pos] + sep * (n - 1)

    def per_doc_sum(self, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Sum of `values` per doc, `pos` sorted."""
        csum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
        cut = np.searchsorted(self.doc[pos], np.arange(self.n_docs + 1))
        return csum[cut[1:]] - csum[cut[:-1]]

    def scan(self, n: int, live: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The n-grams (of the `live` docs, None = all) that repeat in their doc: positions, keys, occurrence count of
        the key (> 1) and the position of its first occurrence."""
        size = len(self.doc)
        cand = self.left >= n
        if live is not None:
            cand &= live[self.doc]
        known = [m for m, (_, every) in self.repeats.items() if m < n and (every or live is not None)]
        if known:
            m = max(known)
            repeats = self.repeats[m][0]
            for j in range(n - m + 1):
                cand[: size - j] &= repeats[j:]
        pos = np.flatnonzero(cand)
        # in chunks of whole docs (keys never repeat across docs): a chunk's arrays and hash table stay in the CPU
        # cache, 2-10x faster than one pass over the batch
        doc = self.doc[pos]
        cuts = np.unique(np.searchsorted(doc, doc[np.arange(_CHUNK, len(pos), _CHUNK)]))
        keys, count, first = [], [], []
        parts = []
        for part in np.split(pos, cuts):
            k = self.keys(part, n)
            if not known:  # one hash pass keeps the repeating keys (about half of all), counted below
                rep = pl.Series(k).is_duplicated().to_numpy()
                k, part = k[rep], part[rep]
            occ = pl.DataFrame({"k": k, "p": part}).select(
                pl.len().over("k").alias("c"), pl.col("p").first().over("k").alias("f")
            )
            parts.append(part)
            keys.append(k)
            count.append(occ["c"].to_numpy())
            first.append(occ["f"].to_numpy())
        pos, keys, count, first = map(np.concatenate, (parts, keys, count, first))
        rep = count > 1
        pos, keys, count, first = pos[rep], keys[rep], count[rep], first[rep]
        repeats = np.zeros(size, bool)
        repeats[pos] = True
        self.repeats[n] = (repeats, live is None)
        return pos, keys, count, first


def _top_ngram_chars(w: _Words, n: int, live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """datatrove `find_top_duplicate`: len(top n-gram) * its count; ties -> the first occurring (Counter order), which
    is the doc's first n-gram when none repeats. For the `live` docs (None = all) with >= n words: (values, defined)."""
    pos, _, count, first = w.scan(n, live)
    groups = np.flatnonzero((count > 1) & (pos == first))  # repeating n-grams, in order of first occurrence
    doc = w.doc[pos[groups]]
    top_count = np.ones(w.n_docs, np.uint32)
    top_pos = w.start.copy()  # no repeat: the doc's first n-gram, once
    if len(groups):
        count = count[groups].astype(np.uint32)
        new_doc = np.concatenate([[True], doc[1:] != doc[:-1]])
        seg = np.cumsum(new_doc) - 1
        hit = np.flatnonzero(count == np.maximum.reduceat(count, np.flatnonzero(new_doc))[seg])
        top = hit[np.concatenate([[True], seg[hit][1:] != seg[hit][:-1]])]  # first max of each doc
        top_count[doc[top]] = count[top]
        top_pos[doc[top]] = pos[groups[top]]
    defined = w.n_words >= n
    if live is not None:
        defined &= live
    value = np.zeros(w.n_docs, np.uint32)
    value[defined] = top_count[defined] * w.chars(top_pos[defined], n, 1).astype(np.uint32)
    return value, defined


def greedy_dup_chars(pos: list[int], keys: list[int], firsts: list[int], chars: list[int], n: int) -> int:
    """datatrove `find_all_duplicate` (a repeat of an n-gram seen at a visited position adds its chars and jumps n
    words), walking only the doc's repeated n-grams: position, key, position of the key's first occurrence, chars.
    A first occurrence is visited unless it lies in a jump (r, r + n) after a repeat r."""
    seen: set[int] = set()  # keys of the visited repeated n-grams
    jumps: list[int] = []
    total = idx = 0
    for p, k, f, c in zip(pos, keys, firsts, chars):
        if p < idx:
            continue
        if k in seen:
            hit = True
        else:
            j = bisect.bisect_right(jumps, f)
            hit = j == 0 or f >= jumps[j - 1] + n
            seen.add(k)
        if hit:
            total += c
            idx = p + n
            jumps.append(p)
    return total


def _dup_ngram_chars(w: _Words, chars: np.ndarray, skip: np.ndarray, n: int, frac: float) -> tuple:
    """`_dup{n}`: datatrove's duplicated-n-gram chars for the docs not `skip`ped (null for the others: an earlier
    rule already drops them, so they never reach this one) with >= n words; exact wherever it can exceed
    `frac` * len(text), else an upper bound, which is then <= the threshold: the chars of every non-first occurrence,
    or, where that exceeds the threshold, the chars of the words those occurrences cover (the greedy scan counts
    non-first occurrences that do not overlap: a copied passage of k words is k - n + 1 overlapping occurrences).
    Returns (values, defined)."""
    pos, keys, _, first = w.scan(n, ~skip)
    ch = w.chars(pos, n, 0)
    later = pos != first
    values = w.per_doc_sum(pos[later], ch[later])
    defined = ~skip & (w.n_words >= n)
    hot = defined & (values > frac * chars)
    if hot.any():
        rows = later & hot[w.doc[pos]]
        p_hot, k_hot, f_hot, c_hot = pos[rows], keys[rows], first[rows], ch[rows]
        # the covered words as runs of occurrences that overlap (all are n words long, in position order)
        run = np.flatnonzero(np.concatenate([[True], p_hot[1:] >= p_hot[:-1] + n]))
        last = np.concatenate([run[1:], [len(p_hot)]]) - 1
        covered = w.per_doc_sum(p_hot[run], w.cum[p_hot[last] + n] - w.cum[p_hot[run]])
        values[hot] = covered[hot]
        cut = np.searchsorted(w.doc[p_hot], np.arange(w.n_docs + 1))
        for d in np.flatnonzero(hot & (covered > frac * chars)):  # 386 of 3,724 on the shared corpus
            a, b = cut[d], cut[d + 1]
            values[d] = greedy_dup_chars(
                p_hot[a:b].tolist(), k_hot[a:b].tolist(), f_hot[a:b].tolist(), c_hot[a:b].tolist(), n
            )
    return values, defined


def c4_lines(base: pl.LazyFrame, terminal_punct: bool, text: bool = True) -> pl.LazyFrame:
    """C4QualityFilter (split_paragraph=True) per line, in datatrove's order: `_c4_event` (first doc-level drop:
    lorem_ipsum / curly_bracket), `_c4_sentences` over kept lines, `_c4_text` (kept lines joined by "\\n"; only
    with `text`)."""
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
            | ~c("_l").str.contains(r"\S\s+\S+\s+\S")  # fewer than 3 words
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
        *([pl.col("_c").filter("_k").str.join("\n").str.strip_chars().alias("_c4_text")] if text else []),
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


def _gopher(
    base: pl.LazyFrame, texts: pl.Series, top_n_grams, dup_n_grams, stop_words
) -> tuple[pl.LazyFrame, list, _Words | None]:
    """`features`' Gopher statistics: per-doc counts, the parts to join to them, the words for the dup n-gram scan."""
    text = pl.col("text")
    words = (
        pl.DataFrame({"_w": split_words(texts)})
        .lazy()
        .with_row_index("_i")
        .explode("_w")
        .drop_nulls("_w")
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
    )
    # distinct stop words per doc: the words whose hash is a stop word's (a cheap integer test), then by string
    stop = pl.Series(list(stop_words), dtype=pl.String)
    stop_counts = (
        words.filter(pl.col("_h").is_in(stop.hash().implode()))
        .filter(pl.col("_w").is_in(stop.implode()))
        .group_by("_i")
        .agg(pl.col("_w").n_unique().alias("_stop_words"))
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
        # regexes, not literal=True: a literal needle takes polars' generic substring search (several times slower)
        text.str.count_matches("#").alias("_hashes"),
        (text.str.count_matches(r"\.\.\.") + text.str.count_matches("…")).alias("_ellipsis"),
        text.str.count_matches("\n", literal=True).alias("_newlines"),
    )
    parts = [
        _part_dups(base, text.str.strip_chars().str.replace_all(r"\n{2,}", "\n\n").str.split("\n\n"), "para"),
        _part_dups(base, text.str.replace_all(r"\n+", "\n").str.split("\n"), "line"),  # re.split("\n+", text)
        word_stats,
        stop_counts,
    ]
    w = None
    if top_n_grams or dup_n_grams:
        w = _Words(words.collect(), len(texts))
    return per_doc, parts, w


def _flags(frame: pl.DataFrame, cond: pl.Expr) -> np.ndarray:
    """`cond` (null = false) over `frame`'s rows, as a writable numpy bool array."""
    return frame.with_columns(cond.fill_null(False).alias("_f"))["_f"].to_numpy().astype(bool, copy=True)


def features(
    texts: pl.Series,
    *,
    gopher: bool = True,
    top_n_grams=(),
    dup_n_grams=(),
    stop_words=(),
    c4: bool = False,
    c4_terminal_punct: bool = False,
    c4_text: bool = True,
    fineweb: bool = False,
    short_line_length: int = 30,
    dropped_before_dup: pl.Expr | None = None,
    dropped_before_top: pl.Expr | None = None,
) -> pl.DataFrame:
    """One row per text: every statistic the rules compare (see filtered._rules). Null = not defined for the doc.
    The Gopher ones (word, line, paragraph and n-gram statistics, `_chars`, `_newlines`) only with `gopher`.

    `dropped_before_dup` (over these features) marks docs that a rule before the duplicated-n-gram rules already
    drops: the sequential n-gram scan skips them, and a doc whose n-gram rule fired skips the larger n.
    `dropped_before_top` (over the features before the top-n-gram ones) does the same for the top-n-gram rules (the
    docs a rule before them drops, then each top rule, `_top{n}` / `_chars` > its threshold, for the next n); without
    it every doc gets every top-n-gram value."""
    texts = texts.cast(pl.String).fill_null("")
    base = pl.DataFrame({"text": texts}).lazy().with_row_index("_i")
    per_doc, parts, w = base.select("_i"), [], None
    if gopher:
        per_doc, parts, w = _gopher(base, texts, top_n_grams, dup_n_grams, stop_words)
    if c4:
        parts.append(c4_lines(base, c4_terminal_punct, c4_text))
    if fineweb:
        parts.append(fineweb_lines(base, short_line_length))
    for part in parts:
        per_doc = per_doc.join(part, on="_i", how="left")
    out = per_doc.collect().sort("_i")
    if w is not None and top_n_grams:
        prune = dropped_before_top is not None
        skip = _flags(out, dropped_before_top) if prune else np.zeros(len(texts), bool)
        for n, frac in top_n_grams:
            values, defined = _top_ngram_chars(w, n, ~skip if skip.any() else None)
            out = out.with_columns(pl.Series(f"_top{n}", values, pl.UInt32).set(pl.Series(~defined), None))
            if prune:  # the rule as filtering._rules states it: a ratio > threshold
                ratio = pl.when(pl.col("_chars") > 0).then(pl.col(f"_top{n}").cast(pl.Float64) / pl.col("_chars"))
                skip |= _flags(out, ratio > frac)
    if w is not None and dup_n_grams:
        skip = _flags(out, pl.lit(False) if dropped_before_dup is None else dropped_before_dup)
        chars = out["_chars"].to_numpy()
        for n, frac in dup_n_grams:
            values, defined = _dup_ngram_chars(w, chars, skip, n, frac)
            out = out.with_columns(pl.Series(f"_dup{n}", values, pl.Int64).set(pl.Series(~defined), None))
            skip |= defined & (values > frac * chars)
    return out.drop("_i")
