"""Dedup: documents -> exact and near-duplicate clusters (MinHash LSH, datasketch-compatible signatures) and a ledger
that says which document of each cluster is kept.

Pure (no Dagster, no I/O). The stages live in `core/minhash.py` (signatures -> band edges -> verified edges ->
connected components); this module holds the params and applies a cluster ledger to documents. Scope: `dedup_docs`
dedups the frame it is given (one source partition); `steps/dedup.py` runs the same stages across sources as separate
assets (map per source, shuffle and reduce over all as Ray tasks), with a source priority.

Keep rule (deterministic, independent of row order and sharding): in a cluster the document of the highest-priority
source is kept (`priority`, sources not listed come last), then the smallest `doc_id`. Exact duplicates (same
blake2b-128 of the NFKC-normalised, case-folded, whitespace-collapsed text) join their representative's cluster and
skip LSH. Near duplicates: word `ngram`-shingles, `num_perm` permutations, `bands` x `rows` LSH, then each candidate
edge is kept only if its estimated Jaccard (share of equal signature values) is >= `threshold`. Clusters are
connected components, so a member may be similar only to another member (its Jaccard to the kept one is in the ledger).
"""

from collections import Counter
from collections.abc import Iterator
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_assets.core.frames import stable_id
from curation_assets.core.minhash import HASH_SCHEME, cluster_signatures, signature_frame


class DedupParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exact: bool = True
    normalize: bool = True  # NFKC + casefold (+ whitespace collapse for the exact key); False = raw text
    near: bool = True
    # 128 permutations, 16 bands x 8 rows, estimated-Jaccard check at 0.78: chosen for recall >= 0.95 at true Jaccard
    # >= 0.85 and no pair below 0.7 (thresholds.yaml has the arithmetic). datatrove: 112 = 14 x 8, no check.
    num_perm: int = 128
    bands: int = 16
    rows: int = 8
    ngram: int = 5
    seed: int = 1
    threshold: float | None = 0.78  # None trusts LSH alone (datatrove behaviour)
    priority: tuple[str, ...] = ()  # cross-source keep order; sources not listed come after, by name
    batch_bytes: int = 8 << 20  # text per signature batch: bounds memory independently of the partition size
    removal_band: tuple[float, float] = (0.0, 0.5)  # blocking check of dedup_clusters: removed share of all docs
    # Documents per hash partition of dedup_clusters' shuffle: a band task holds ~bands x this many rows. The ledger
    # is the same whatever the value (not part of `version`); larger means fewer, bigger tasks (docs/scale.md).
    shuffle_docs: int = Field(default=8192, ge=1)
    # Pinned hash scheme; changing either changes signatures, so it is part of the config version.
    hashfunc: Literal["poly64_fmix64_fold"] = HASH_SCHEME
    scheme: Literal["affine32"] = "affine32"

    @model_validator(mode="after")
    def _check_bands(self) -> "DedupParams":
        if self.bands < 1 or self.bands * self.rows > self.num_perm:
            raise ValueError(f"need bands >= 1, bands * rows <= num_perm: {self.bands}x{self.rows}/{self.num_perm}")
        return self

    @property
    def version(self) -> str:
        return stable_id(self.model_dump_json(exclude={"shuffle_docs"}))[:12]

    @property
    def signature_version(self) -> str:
        """Signatures depend only on these fields: signatures of different versions are never compared."""
        return stable_id(
            self.model_dump_json(include={"normalize", "num_perm", "ngram", "seed", "hashfunc", "scheme"})
        )[:12]


def batches(docs: pl.DataFrame, max_bytes: int) -> Iterator[pl.DataFrame]:
    """Consecutive slices of `docs` of about `max_bytes` of text each (a larger document is a batch of its own)."""
    sizes = docs.get_column("text").fill_null("").str.len_bytes().cum_sum().to_list()
    start, base = 0, 0
    for i, end in enumerate(sizes):
        if end - base >= max_bytes:
            yield docs.slice(start, i + 1 - start)
            start, base = i + 1, end
    if start < docs.height or docs.height == 0:
        yield docs.slice(start)


def signatures(docs: pl.DataFrame, params: DedupParams, source: str | None = None) -> Iterator[pl.DataFrame]:
    """Signature frames (`dedup_minhash.signature_frame`), one per batch of about `batch_bytes` of text."""
    for batch in batches(docs, params.batch_bytes):
        yield signature_frame(
            batch,
            num_perm=params.num_perm,
            seed=params.seed,
            ngram=params.ngram,
            normalize_text=params.normalize,
            source=source,
        )


def cluster(sigs: pl.DataFrame, params: DedupParams, n_parts: int = 1) -> pl.DataFrame:
    """The cluster ledger of `sigs` (see `dedup_minhash.cluster_signatures`)."""
    return cluster_signatures(
        sigs,
        bands=params.bands,
        rows=params.rows,
        threshold=params.threshold,
        exact=params.exact,
        near=params.near,
        priority=params.priority,
        n_parts=n_parts,
    )


def apply_ledger(docs: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """`docs` + `dup_cluster` (kept representative's `doc_id` for every member of a cluster, itself included; null for
    unique docs) + `drop_reason` (`exact_duplicate`, `near_duplicate`, null = kept), in the order of `docs`."""
    return docs.join(
        ledger.select("doc_id", dup_cluster="cluster_id", drop_reason="drop_reason"),
        on="doc_id",
        how="left",
        maintain_order="left",
    )


def dedup_docs(docs: pl.DataFrame, params: DedupParams) -> pl.DataFrame:
    """Return `docs` + `dup_cluster` + `drop_reason` (null = kept). Requires `doc_id`, `text`; scope = this frame."""
    sigs = pl.concat(list(signatures(docs.select("doc_id", "text"), params, source="")))
    return apply_ledger(docs, cluster(sigs, params))


def ledger_summary(ledger: pl.DataFrame, n_docs: int) -> dict[str, object]:
    """What a cluster ledger removed: counts by reason and across sources, the removal rate, the cluster size
    histogram (size -> clusters) and removals per `source/reason`."""
    dropped = ledger.filter(~pl.col("kept"))
    cross = dropped.filter(pl.col("source") != pl.col("kept_source"))
    sizes = Counter(ledger.group_by("cluster_id").agg(n=pl.len())["n"].to_list())
    by_source = dropped.group_by("source", "drop_reason").len().sort("source", "drop_reason")
    return {
        "docs": n_docs,
        "clusters": len(ledger["cluster_id"].unique()),
        "removed_exact": dropped.filter(pl.col("drop_reason") == "exact_duplicate").height,
        "removed_near": dropped.filter(pl.col("drop_reason") == "near_duplicate").height,
        "removed_cross_source": cross.height,
        "removal_rate": round(dropped.height / n_docs, 6) if n_docs else 0.0,
        "cluster_size_histogram": {str(k): v for k, v in sorted(sizes.items())},
        "removed_by_source": {f"{s}/{r}": n for s, r, n in by_source.iter_rows()},
    }
