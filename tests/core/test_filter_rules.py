"""filter_rules' n-gram statistics against datatrove's own algorithms (find_top_duplicate, find_all_duplicate, as in
datatrove 0.10.1's gopher_repetition_filter) written out in Python over the same words, on seeded repetitive texts."""

import random
from collections import Counter

import polars as pl

from curation_assets.core.filter_rules import features, split_words


def top_duplicate(words: list[str], n: int) -> int | None:
    grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return None
    gram, count = Counter(grams).most_common(1)[0]  # ties: the first occurring (Counter order)
    return len(gram) * count


def all_duplicate(words: list[str], n: int) -> int:
    seen, total, idx = set(), 0, 0
    while idx < len(words) - n + 1:
        gram = "".join(words[idx : idx + n])
        if gram in seen:
            total += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return total


def repetitive_text(rng: random.Random) -> str:
    """Small vocabularies and copied spans: what makes n-gram keys collide if they are a linear hash of the words."""
    vocab = [rng.choice(["a", "bb", "the", "ça", "x-y"]) + str(i) for i in range(rng.choice([2, 3, 20]))]
    words: list[str] = []
    for _ in range(rng.choice([1, 6, 12, 40, 200])):
        if words and rng.random() < 0.3:
            k = rng.randint(1, min(12, len(words)))
            s = rng.randint(0, len(words) - k)
            words += words[s : s + k]
        else:
            words.append(rng.choice(vocab))
    return " ".join(words)


def test_mirrored_ngrams_do_not_collide():
    # "a b b a" and "b a a b" are different 4-grams: none of the 4..7-grams of this text repeats
    text = "a b b a b a a b"
    out = features(pl.Series([text]), top_n_grams=((4, 0.0),), dup_n_grams=tuple((n, 0.0) for n in range(4, 8)))
    assert out["_top4"].item() == len("a b b a")  # each occurs once: the first one wins
    assert [out[f"_dup{n}"].item() for n in range(4, 8)] == [0, 0, 0, 0]


def test_top_and_duplicated_ngrams_equal_datatrove_algorithms_on_repetitive_texts():
    rng = random.Random(7)
    tops = ((2, 0.2), (3, 0.18), (4, 0.16))
    dups = tuple((n, 0.0) for n in range(5, 11))  # threshold 0: the exact scan runs on every document
    for _ in range(12):
        texts = pl.Series([repetitive_text(rng) for _ in range(25)], dtype=pl.String)
        words = split_words(texts).to_list()
        out = features(texts, top_n_grams=tops, dup_n_grams=dups)
        for n, _ in tops:
            assert out[f"_top{n}"].to_list() == [top_duplicate(w, n) for w in words], n
        dropped = [False] * len(words)  # a document an earlier n drops never reaches the next (null there)
        for n, _ in dups:
            want = [None if gone or len(w) < n else all_duplicate(w, n) for w, gone in zip(words, dropped)]
            assert out[f"_dup{n}"].to_list() == want, n
            dropped = [gone or bool(v) for gone, v in zip(dropped, want)]


def test_duplicated_ngram_values_under_their_threshold_are_upper_bounds_that_decide_as_the_exact_ones():
    # datatrove's thresholds: where a bound (every non-first occurrence, or the words they cover) is <= the
    # threshold the exact scan is skipped; the decision must be the exact value's
    rng = random.Random(11)
    dups = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    def copied_passages() -> str:  # distinct words and a few copied spans: a bound near the threshold
        words = [f"w{i}" for i in range(rng.choice([60, 120, 250]))]
        for _ in range(rng.randint(1, 3)):
            k = rng.randint(5, 30)
            s = rng.randint(0, len(words) - k)
            words[s + rng.randint(0, 3) : s] = words[s : s + k]
        return " ".join(words)

    texts = pl.Series([f() for _ in range(150) for f in (copied_passages, lambda: repetitive_text(rng))])
    words = split_words(texts).to_list()
    chars = [len(t) for t in texts]
    bounded = 0
    for n, frac in dups:
        out = features(texts, dup_n_grams=((n, frac),))[f"_dup{n}"].to_list()
        for w, c, got in zip(words, chars, out, strict=True):
            if len(w) < n:
                continue
            exact = all_duplicate(w, n)
            assert got >= exact and (got > frac * c) == (exact > frac * c), (n, w)
            bounded += got != exact
    assert bounded  # the bounds were used


def test_words_split_contractions_as_spacy_whatever_character_follows():
    # "'s" / "n't" are split off only before a non-word character; before a non-ASCII letter ("'sé", "n'tä") the
    # texts take the Unicode-boundary regex, spliced back in their rows between texts that do not
    texts = pl.Series(
        [
            "the cat's toy 'tis",
            "She said 'sévère' and 'sa' then: it's l'été, don'tä stop; I'd've O'Reilly's n’té",
            "plain ascii, no quote",
            "d'ya 'mé",
            None,
        ]
    )
    assert split_words(texts).to_list() == [
        ["the", "cat", "'s", "toy", "'", "tis"],
        ["She", "said", "'", "sévère", "'", "and", "'", "sa", "'", "then", ":", "it", "'s", "l'été", ","]
        + ["don'tä", "stop", ";", "I", "'d", "'ve", "O'Reilly", "'s", "n’té"],
        ["plain", "ascii", ",", "no", "quote"],
        ["d'ya", "'", "mé"],
        None,
    ]
