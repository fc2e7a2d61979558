"""Dedup's planted-pair precision and recall without and with line-level boilerplate removal, in one run.

Usage:
  python benchmarks/bench_boilerplate.py [--corpus ../shared/corpus] [--min-docs 20] [--min-chars 20]

Every source of the corpus (web's HTML extracted as `raw` does) is deduplicated twice with the dedup core's defaults
(`deduped.signatures` + `deduped.cluster` over all sources together, as `dedup_clusters` does): once as read, once
after `filtered`'s line removal (`core/boilerplate.py`: the line document frequencies of each source counted over
all its documents, batch by batch as the step does; lines in >= min_docs documents removed; a document left empty
dropped). Sources whose bundled thresholds turn the removal off (code) are left as read. No filter rule runs, so the
difference is the line removal alone. Scored against `truth/planted.csv` (`dedup_eval.score`: recall at true Jaccard
>= 0.85, false positive: a found pair below 0.7; the truth's Jaccard counts the planted boilerplate). Also printed:
the near-duplicate removals, and the found/missed pairs that changed, by mutation. The summary line comes last.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dedup_eval import read_shard, score, source_shards  # noqa: E402
from curation_assets.config import load_config  # noqa: E402
from curation_assets.core.boilerplate import DocFrequency, frequent_lines, line_doc_counts, strip_kept  # noqa: E402
from curation_assets.core.dedup import DedupParams, cluster, signatures  # noqa: E402
from curation_assets.core.filtering import BATCH_DOCS  # noqa: E402

SOURCES = ("web", "code", "books", "multilingual")


def clusters(docs: pl.DataFrame) -> pl.DataFrame:
    params = DedupParams()
    return cluster(pl.concat(list(signatures(docs, params))), params)


def pairs(ledger: pl.DataFrame, planted: pl.DataFrame) -> pl.DataFrame:
    ids = ledger.select("doc_id", "cluster_id")
    return (
        planted.join(ids.rename({"doc_id": "copy_id", "cluster_id": "c"}), on="copy_id", how="left")
        .join(ids.rename({"doc_id": "original_id", "cluster_id": "o"}), on="original_id", how="left")
        .select("copy_id", "source", "mutation", "jaccard_5gram", found=(pl.col("c") == pl.col("o")).fill_null(False))
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--min-docs", type=int, help="boilerplate_min_docs (default: the bundled thresholds')")
    ap.add_argument("--min-chars", type=int, help="boilerplate_min_chars (default: the bundled thresholds')")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    thresholds = load_config().thresholds.filtered
    before, after, removed = [], [], []
    for source in SOURCES:
        docs = pl.concat(
            [
                b.select("doc_id", "source", "text")
                for p in source_shards(corpus, source)
                for b in read_shard(p, source == "web")
            ]
        )
        before.append(docs)
        params = thresholds.for_source(source)
        if params.boilerplate_min_docs is None:  # turned off for this source (code)
            after.append(docs)
            continue
        min_docs = args.min_docs or params.boilerplate_min_docs
        min_chars = args.min_chars or params.boilerplate_min_chars
        freq = DocFrequency(int(docs["text"].str.len_bytes().sum()), min_chars)
        for batch in docs.iter_slices(BATCH_DOCS):
            freq.add(line_doc_counts(batch["text"], min_chars))
        frequent = frequent_lines(freq.counts(), min_docs)
        keep, gone, counts = strip_kept(docs, frequent, min_chars)
        after.append(keep)
        removed.append(counts.with_columns(pl.lit(source).alias("source")))
        print(
            f"{source}: {docs.height} docs, lines in >= {min_docs} docs (>= {min_chars} chars): "
            f"{frequent.len()}; removed {int(counts['boilerplate_lines'].sum())} lines, "
            f"{int(counts['boilerplate_bytes'].sum()):,} bytes from {int((counts['boilerplate_lines'] > 0).sum())} "
            f"docs; {gone.height} left empty (boilerplate_only)"
        )
    planted = pl.read_csv(corpus / "truth" / "planted.csv")
    ledger0, ledger1 = clusters(pl.concat(before)), clusters(pl.concat(after))
    s0, s1 = score(ledger0, planted), score(ledger1, planted)
    for name, s, led in (("without line removal", s0, ledger0), ("with line removal", s1, ledger1)):
        print(
            f"{name}: recall {s['recall']} ({s['positives']} positives), precision {s['precision']} "
            f"({s['false_positives']} false positives of {s['found']} found); near/exact duplicates removed "
            f"{int((~led['kept']).sum())}"
        )
    p0, p1 = pairs(ledger0, planted), pairs(ledger1, planted)
    changed = p0.join(p1.select("copy_id", after="found"), on="copy_id").filter(pl.col("found") != pl.col("after"))
    for r in changed.sort("source", "mutation").iter_rows(named=True):
        print(
            f"  pair changed: {r['source']} {r['mutation']} (true Jaccard {r['jaccard_5gram']:.3f}) "
            f"{'found -> missed' if r['found'] else 'missed -> found'}"
        )
    all_removed = pl.concat(removed)
    lines, docs = int(all_removed["boilerplate_lines"].sum()), int((all_removed["boilerplate_lines"] > 0).sum())
    print(
        f"dedup planted pairs before/after line removal: precision {s0['precision']} -> {s1['precision']}, "
        f"recall {s0['recall']} -> {s1['recall']} (removed {lines} lines in {docs} docs)"
    )


if __name__ == "__main__":
    main()
