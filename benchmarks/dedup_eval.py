"""Dedup quality against the shared corpus's planted near-duplicates (`truth/planted.csv`), and a shard reader for it.

Scoring (issue 4): a planted (copy, original) pair is *found* when both are in the same cluster of the ledger. Recall
is over pairs whose true word-5-gram Jaccard is >= 0.85; a found pair whose true Jaccard is < 0.7 is a false positive;
precision = 1 - false positives / found pairs. Pairs in [0.7, 0.85) count as found but are not required.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import zstandard


def read_shard(path: Path, html: bool = False, batch_rows: int = 4096) -> Iterator[pl.DataFrame]:
    """`doc_id, source, text` of a corpus shard (JSONL.zst or Parquet) in batches; `html` extracts web pages."""
    if path.suffix == ".parquet":
        frames = (
            pl.read_parquet(path, columns=["id", "source", "text"]).rename({"id": "doc_id"}).iter_slices(batch_rows)
        )
    else:
        frames = _jsonl_batches(path, batch_rows)
    for frame in frames:
        if html:
            from curation_assets.core.readers import html_to_text

            frame = frame.with_columns(pl.Series("text", [html_to_text(t) for t in frame["text"]], pl.String))
        yield frame


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    rows: list[dict] = []
    with path.open("rb") as f:
        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
            r = json.loads(line)
            rows.append({"doc_id": r["id"], "source": r["source"], "text": r["text"]})
            if len(rows) == batch_rows:
                yield pl.DataFrame(rows, schema={"doc_id": pl.String, "source": pl.String, "text": pl.String})
                rows = []
    if rows:
        yield pl.DataFrame(rows, schema={"doc_id": pl.String, "source": pl.String, "text": pl.String})


def source_shards(corpus: Path, source: str) -> list[Path]:
    return sorted(p for p in (corpus / "data" / source).iterdir() if p.name.endswith((".jsonl.zst", ".parquet")))


def score(clusters: pl.DataFrame, planted: pl.DataFrame) -> dict[str, float | int]:
    """Recall at true Jaccard >= 0.85 and precision (false positive: true Jaccard < 0.7) of `clusters` (`doc_id`,
    `cluster_id`: null or absent = a cluster of its own) on the planted pairs whose copy and original are both in
    `clusters` or absent from it (absent docs are singletons)."""
    ids = clusters.select("doc_id", "cluster_id")
    pairs = (
        planted.join(ids.rename({"doc_id": "copy_id", "cluster_id": "c"}), on="copy_id", how="left")
        .join(ids.rename({"doc_id": "original_id", "cluster_id": "o"}), on="original_id", how="left")
        .with_columns(found=(pl.col("c") == pl.col("o")).fill_null(False))
    )
    pos = pairs.filter(pl.col("jaccard_5gram") >= 0.85)
    found = pairs.filter("found")
    fp = found.filter(pl.col("jaccard_5gram") < 0.7).height
    return {
        "pairs": pairs.height,
        "positives": pos.height,
        "recall": round(pos["found"].mean() or 0.0, 4),
        "found": found.height,
        "false_positives": fp,
        "precision": round(1 - fp / found.height, 4) if found.height else 1.0,
        "recall_at_0.8": round(pairs.filter(pl.col("dup_at_0.8") == 1)["found"].mean() or 0.0, 4),
    }
