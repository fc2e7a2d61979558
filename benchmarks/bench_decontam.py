"""Decontamination recall on planted contamination and false positives on clean documents (core/decontam.py), with
a plain-Python n-gram set (GPT-3's procedure: a set of n-gram strings, one membership test per n-gram) as the
baseline in the same run: the same verdict per document, and its speed.

Usage:
  python benchmarks/bench_decontam.py [--corpus ../shared/corpus] [--items 1000] [--planted 300] [--seed 0]
  python benchmarks/bench_decontam.py --fixture tests/fixtures/eval_set.jsonl   # rebuild the test fixture (sample)

The corpus (every shard of data/*/, read with the project's reader) is split by a seeded hash of doc_id: the
documents of the first `--items` eval items (each 5 consecutive sentences of one document, GPT-3-style "questions")
are the eval source and set aside, the rest is clean. `--planted` clean documents per span length get a span of 1, 2
or 5 consecutive sentences of a random eval item inserted at a random line break (seeded); recall = share of them
dropped as `contaminated`. False positives = share of the other clean documents (not planted) dropped; an overlap
there is real text the corpus shares with an eval source document (a licence line, a quoted passage, a planted
near-duplicate of the eval source), so it is reported as measured. A 1-sentence span shorter than 13 words holds
no 13-gram and cannot match: recall grows with the span length.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from curation_assets.core.decontam import Index, index_items, mark_contaminated, ngram_hashes  # noqa: E402
from curation_assets.core.frames import seeded_hash  # noqa: E402
from curation_assets.core.minhash import normalize  # noqa: E402
from curation_assets.core.readers import detect_format, read_shard  # noqa: E402

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
SPANS = (1, 2, 5)
# clean items of the test fixture: written for it, in no document of the sample
CLEAN = [
    "Which planet in the outer solar system has the most moons according to the counts published this year?",
    "A farmer sells three crates of apples for twelve dollars each; how much money does she take home on Friday?",
    "Explain why the boiling point of water decreases as a hiker climbs higher up a mountain trail in summer.",
    "What is the name of the river that flows through the capital city described in the second paragraph above?",
    "Name two reasons why a lighthouse keeper might have kept a detailed diary of passing ships and storms.",
    "Who wrote the opera whose overture is played at the start of every concert in the old harbour town?",
]


def read_corpus(files: list[str]) -> pl.DataFrame:
    frames = []
    for path in files:
        with open(path, "rb") as f:
            frames.append(read_shard(f, fmt=detect_format(path), source=Path(path).parent.name, shard=path).docs)
    return pl.concat(frames)


def sentences(text: str) -> list[str]:
    """Prose sentences of one text: line-internal runs split at terminal punctuation, whitespace collapsed, 6-60
    words (code, tables and headings are not sentences)."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        out += [s for s in SENTENCE.split(flat) if 6 <= len(s.split()) <= 60 and s[-1] in ".!?"]
    return out


def shared_ngrams(texts: list[str], n: int, batch: int = 1000) -> np.ndarray:
    """The sorted n-gram hashes that occur in more than one of `texts`."""
    per_doc = []
    for lo in range(0, len(texts), batch):
        hashes, owner, _, _ = ngram_hashes([normalize(t) for t in texts[lo : lo + batch]], n)
        per_doc.append(pl.DataFrame({"h": hashes, "o": owner}).unique()["h"].to_numpy())
    values, docs = np.unique(np.concatenate(per_doc), return_counts=True)
    return values[docs > 1]


def eval_items(docs: pl.DataFrame, n_items: int, per_item: int, seed: int, n: int = 13) -> list[dict]:
    """`n_items` items of `per_item` consecutive sentences, at most one per document, documents in seeded order.
    Only sentences none of whose n-grams (nor, for a shorter one, the sentence itself) occurs in another document
    of `docs`, as a benchmark's own text: a licence line or a translator's credit shared by hundreds of pages is
    boilerplate, not a question."""
    split = {doc_id: sentences(text) for doc_id, text in docs.select("doc_id", "text").iter_rows()}
    shared = shared_ngrams(docs["text"].to_list(), n)
    seen: dict[str, int] = {}
    for sents in split.values():
        for key in {" ".join(normalize(x).split()) for x in sents}:
            seen[key] = seen.get(key, 0) + 1

    def own(sents: list[str]) -> list[str]:
        hashes, owner, _, _ = ngram_hashes([normalize(x) for x in sents], n)
        at = np.minimum(np.searchsorted(shared, hashes), max(shared.size - 1, 0))
        common = set(owner[shared[at] == hashes].tolist()) if shared.size else set()
        return [x for k, x in enumerate(sents) if k not in common and seen[" ".join(normalize(x).split())] == 1]

    items = []
    for doc_id in sorted(split, key=lambda d: seeded_hash(f"{seed}:{d}")):
        sents = own(split[doc_id])
        if len(sents) >= per_item:
            start = seeded_hash(f"{seed}:start:{doc_id}") % (len(sents) - per_item + 1)
            chosen = sents[start : start + per_item]
            items.append({"question": " ".join(chosen), "source_doc": doc_id, "sentences": chosen})
            if len(items) == n_items:
                break
    return items


def write_fixture(path: Path) -> None:
    """tests/fixtures/eval_set.jsonl: 12 items of 2 sentences of the bundled sample's documents, the clean items
    above, and 2 items shorter than 13 words."""
    sample = read_corpus(sorted(glob.glob(str(ROOT / "curation_assets/sample/*/part-*.jsonl.zst"))))
    items = eval_items(sample.filter(pl.col("source").is_in(["web", "books"])), 12, 2, seed=0)
    items += [{"question": q, "source_doc": None} for q in CLEAN]
    items += [{"question": q, "source_doc": None} for q in ("What is two plus two?", "Define entropy.")]
    rows = [{"question": i["question"], "source_doc": i["source_doc"]} for i in items]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{path}: {len(items)} items, {path.stat().st_size:,} bytes")


def plant(text: str, span: str, rng: random.Random) -> str:
    lines = text.split("\n")
    at = rng.randrange(len(lines) + 1)
    return "\n".join([*lines[:at], span, *lines[at:]])


def python_baseline(items: list[str], texts: list[str], n: int) -> list[bool]:
    """GPT-3's procedure in plain Python: the set of every eval n-gram string, then each document's n-grams."""
    grams = set()
    for item in items:
        words = re.findall(r"\w+", normalize(item))
        grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    out = []
    for text in texts:
        words = re.findall(r"\w+", normalize(text or ""))
        out.append(any(" ".join(words[i : i + n]) in grams for i in range(len(words) - n + 1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--planted", type=int, default=300, help="planted documents per span length")
    ap.add_argument("--ngram", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixture", type=Path, help="write the test fixture from the bundled sample and exit")
    args = ap.parse_args()
    if args.fixture:
        return write_fixture(args.fixture)

    docs = read_corpus(sorted(glob.glob(f"{args.corpus}/data/*/part-*")))
    items = eval_items(docs, args.items, 5, args.seed, args.ngram)
    held = {i["source_doc"] for i in items}
    # the corpus's planted near-duplicates of an eval source document are contaminated too: not clean documents
    planted = pl.read_csv(f"{args.corpus}/truth/planted.csv", columns=["copy_id", "original_id"])
    record = docs.select("doc_id", rid=pl.col("meta").str.json_path_match("$.id"))
    held_rids = set(record.filter(pl.col("doc_id").is_in(list(held)))["rid"])
    pairs = planted.filter(pl.col("copy_id").is_in(list(held_rids)) | pl.col("original_id").is_in(list(held_rids)))
    related = set(pairs["copy_id"]) | set(pairs["original_id"])
    held |= set(record.filter(pl.col("rid").is_in(list(related)))["doc_id"])
    rows = index_items(
        pl.DataFrame(
            {"eval_set": "bench", "file": "-", "item": range(len(items)), "text": [i["question"] for i in items]}
        ),
        args.ngram,
    )
    index = Index.of(rows.filter(pl.col("n_words") >= args.ngram))

    clean = docs.filter(~pl.col("doc_id").is_in(list(held))).sort(
        pl.col("doc_id").map_elements(lambda d: seeded_hash(f"{args.seed}:clean:{d}"), return_dtype=pl.UInt64)
    )
    rng = random.Random(args.seed)
    texts, kinds = [], []
    for k, span_len in enumerate(SPANS):
        for text in clean.slice(k * args.planted, args.planted)["text"]:
            sents = rng.choice(items)["sentences"]
            start = rng.randrange(len(sents) - span_len + 1)
            texts.append(plant(text, " ".join(sents[start : start + span_len]), rng))
            kinds.append(span_len)
    rest = clean.slice(len(SPANS) * args.planted)["text"].to_list()
    texts += rest
    kinds += [0] * len(rest)
    frame = pl.DataFrame(
        {"text": texts, "drop_reason": [None] * len(texts)}, schema={"text": pl.String, "drop_reason": pl.String}
    )
    mb = frame["text"].str.len_bytes().sum() / 1e6

    t0 = time.perf_counter()
    marked = mark_contaminated(frame, index)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = python_baseline([i["question"] for i in items], texts, args.ngram)
    base_s = time.perf_counter() - t0

    hit = marked["drop_reason"].eq("contaminated").fill_null(False).to_list()
    kinds_s = pl.Series(kinds)
    hit_s = pl.Series(hit)
    recall = {s: hit_s.filter(kinds_s == s).mean() for s in SPANS}
    fp = int(hit_s.filter(kinds_s == 0).sum())
    agree = sum(a == b for a, b in zip(hit, base)) / len(hit)
    print(
        f"corpus: {docs.height:,} documents; eval set: {len(items)} items of 5 sentences ({len(held)} source "
        "documents and their planted copies set aside) "
        f"({len(index):,} distinct {args.ngram}-grams); {len(texts):,} documents checked, {mb:.1f} MB"
    )
    one = [len(re.findall(r"\w+", normalize(s))) for i in items for s in i["sentences"]]
    print(
        f"sentences of eval items with >= {args.ngram} words: {sum(n >= args.ngram for n in one) / len(one):.3f} "
        "(the ceiling of 1-sentence recall)"
    )
    print(
        f"matcher: ours {mb / ours_s:.2f} MB/s ({ours_s:.1f} s), plain-Python n-gram set {mb / base_s:.2f} MB/s "
        f"({base_s:.1f} s), ratio {base_s / ours_s:.1f}x; same verdict on {agree:.4%} of documents"
    )
    shared = marked.filter(kinds_s == 0).drop_nulls("eval_ngram")["eval_ngram"].value_counts(sort=True).head(3)
    for ngram, count in shared.iter_rows():  # what a "false positive" shares with an eval item, for inspection
        print(f"  clean documents sharing {ngram!r}: {count}")
    print(
        f"decontamination {args.ngram}-gram: recall 1/2/5 sentences "
        f"{recall[1]:.3f}/{recall[2]:.3f}/{recall[5]:.3f} ({args.planted} planted each), "
        f"false positives {fp / len(rest):.4f} ({fp}/{len(rest):,} clean docs)"
    )


if __name__ == "__main__":
    main()
