"""MinHash near-duplicate detection as three independent, data-parallel stages (pure numpy/polars: no Dagster, no I/O).

1. map, `signature_frame(docs)`: per document `exact_key`, `n_words`, `sig` (the datasketch `MinHash` hash values).
   Runs per shard or partition; its output is data (Parquet), so an unchanged partition's signatures are reused.
2. shuffle, `band_edges(sigs, band, part, n_parts)`: the documents of one LSH band whose band key falls in hash
   partition `part`; candidate edges are a star (every member to the bucket's best-ranked member) plus a chain (every
   member to the previous one), so a bucket of k documents gives < 2k edges, never k^2. Every (band, part) is its own
   task and holds only its slice. `verify_edges` keeps the edges whose estimated Jaccard (share of equal signature
   values over all `num_perm`) reaches the threshold: a join of the (small) edge list with the signatures.
3. reduce, `components(edges)`: connected components by min-label propagation with pointer jumping (a polars join and
   group-by per round over the edges only, O(log diameter) rounds); the label is the best-ranked node.

Hash scheme (pinned as `poly64_fmix64_fold`, part of `DedupParams.version`): words are the `\\w+` runs (Rust regex,
Unicode) of the NFKC-normalised, case-folded text; a word's 64-bit hash is fmix64 of the polynomial
sum((byte_j + 1) * K^j) mod 2^64 over its UTF-8 bytes (K = 0x100000001B3), or for a word of more than 256 bytes fmix64
of its blake2b-64 (little-endian); a shingle (n consecutive words) folds its words' hashes,
h = w0, h = fmix64(h * 0x9E3779B97F4A7C15 + w_k); a text of fewer than n words has one shingle, all of its words.
All of it is numpy over the concatenated bytes of a batch: no Python object per word. The low 32 bits of a shingle hash
go into `datasketch.MinHash(num_perm, seed, hashfunc=int, scheme="affine32")`: `sig` equals its `hashvalues`, so the
signatures can be loaded into datasketch (`LeanMinHash(seed=..., hashvalues=sig, scheme="affine32")`) and its indexes.
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
import polars as pl

HASH_SCHEME = "poly64_fmix64_fold"
_K = np.uint64(0x100000001B3)  # polynomial base (FNV-64 prime, odd)
_FOLD = np.uint64(0x9E3779B97F4A7C15)
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_LONG = 256  # words of more bytes are hashed with blake2b-64 instead
_K_POW = np.cumprod(np.concatenate([[np.uint64(1)], np.full(_LONG - 1, _K, np.uint64)]), dtype=np.uint64)
_CHUNK = 8192  # shingles per (num_perm x chunk) uint32 block: 4 MiB at 128 permutations


def fmix64(h: np.ndarray) -> np.ndarray:
    shift, m1, m2 = _FMIX64
    h = (h ^ (h >> shift)) * m1
    h = (h ^ (h >> shift)) * m2
    return h ^ (h >> shift)


def fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2 = _FMIX32
    h = (h ^ (h >> s1)) * m1
    h = (h ^ (h >> s2)) * m2
    return h ^ (h >> s1)


def normalize(text: str, enabled: bool = True) -> str:
    return unicodedata.normalize("NFKC", text).casefold() if enabled else text


def exact_key(normalized: str, enabled: bool = True) -> bytes:
    """blake2b-128 of the text with whitespace runs collapsed (CRLF, tabs, trailing spaces are exact duplicates)."""
    key = " ".join(normalized.split()) if enabled else normalized
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def word_hashes(normalized: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every `\\w+` word of every text, in order; word count per text)."""
    words = pl.Series(normalized, dtype=pl.String).str.extract_all(r"\w+")
    counts = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls()
    if flat.is_empty():
        return np.zeros(0, np.uint64), counts
    arrow = flat.to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string: int64 offsets + one byte buffer
    offsets = np.frombuffer(arrow.buffers()[1], np.int64)[arrow.offset : arrow.offset + len(arrow) + 1]
    data = np.frombuffer(arrow.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    lens = np.diff(offsets)
    out = np.empty(lens.size, np.uint64)
    long = lens > _LONG
    if long.any():  # a "word" of thousands of bytes (base64, a 16 MiB run of one letter): hashlib, not per-byte arrays
        for i in np.flatnonzero(long):
            chunk = data[offsets[i] - offsets[0] : offsets[i + 1] - offsets[0]].tobytes()
            out[i] = int.from_bytes(hashlib.blake2b(chunk, digest_size=8).digest(), "little")
        data, lens = data[np.repeat(~long, lens)], lens[~long]
    if lens.size:
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        step = np.ones(data.size, np.int32)  # position of each byte inside its word: a cumsum restarting per word
        step[starts[1:]] = 1 - lens[:-1]
        terms = data.astype(np.uint64)
        terms += np.uint64(1)
        terms *= _K_POW[np.cumsum(step, dtype=np.int32) - 1]
        out[~long] = np.add.reduceat(terms, starts)
    return fmix64(out), counts


def shingle_hashes(words: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fold hash of every word n-gram of every text, index of its text); a text of 1..n-1 words has one shingle."""
    total = words.size
    ends = np.cumsum(counts)
    starts = ends - counts
    padded = np.concatenate([words, np.zeros(n - 1, np.uint64)])
    h = padded[:total].copy()
    short = (counts > 0) & (counts < n)
    short_hash = np.zeros(counts.size, np.uint64)
    for k in range(1, n):
        sel = short & (counts == k)
        short_hash[sel] = h[starts[sel]]
        h = fmix64(h * _FOLD + padded[k : k + total])
    doc_of = np.repeat(np.arange(counts.size), counts)
    pos = np.arange(total) - np.repeat(starts, counts)
    full = pos <= np.repeat(counts, counts) - n
    hashes = np.concatenate([h[full], short_hash[short]])
    docs = np.concatenate([doc_of[full], np.flatnonzero(short)])
    order = np.argsort(docs, kind="stable")
    return hashes[order], docs[order]


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd, b) for `num_perm` and `seed`: its
    `MinHash._init_permutations` (datasketch 2.0.0, the pinned version; tests/core/test_minhash.py compares them),
    drawn here rather than through a `MinHash`: the datasketch package imports scipy (0.4 CPU s in every process
    that hashes, once per Ray runner)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    return a, gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)


def minhash(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int, seed: int) -> np.ndarray:
    """(n_docs, num_perm) uint32: per text, min over its shingles of a * fmix32(low32(h)) + b mod 2^32 (datasketch
    affine32); a text without shingles keeps datasketch's empty value 2^32 - 1."""
    a, b = permutations(num_perm, seed)
    at, bt = a[:, None], b[:, None]
    sig = np.full((n_docs, num_perm), np.iinfo(np.uint32).max, np.uint32)
    hv = fmix32((hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    buf = np.empty((num_perm, _CHUNK), np.uint32)  # permutation-major: the per-text min runs over contiguous memory
    for lo in range(0, hv.size, _CHUNK):
        x = hv[lo : lo + _CHUNK]
        block = buf[:, : x.size]
        np.multiply(at, x[None, :], out=block)
        block += bt
        d = docs[lo : lo + _CHUNK]
        cut = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
        sig[d[cut]] = np.minimum(sig[d[cut]], np.minimum.reduceat(block, cut, axis=1).T)
    return sig


def signature_frame(
    docs: pl.DataFrame, *, num_perm: int, seed: int, ngram: int, normalize_text: bool = True, source: str | None = None
) -> pl.DataFrame:
    """`doc_id, source, exact_key, n_words, sig` (Array[UInt32, num_perm]) per row of `docs` (needs `doc_id`, `text`;
    `source` from the column if present, else the argument)."""
    texts = [normalize(t or "", normalize_text) for t in docs.get_column("text").to_list()]
    words, counts = word_hashes(texts)
    hashes, owner = shingle_hashes(words, counts, ngram)
    sig = minhash(hashes, owner, len(texts), num_perm, seed)
    src = docs.get_column("source") if "source" in docs.columns else pl.Series([source] * docs.height, dtype=pl.String)
    return pl.DataFrame(
        {
            "doc_id": docs.get_column("doc_id"),
            "source": src.cast(pl.String),
            "exact_key": pl.Series([exact_key(t, normalize_text) for t in texts], dtype=pl.Binary),
            "n_words": pl.Series(counts, dtype=pl.Int64),
            "sig": pl.Series(sig, dtype=pl.Array(pl.UInt32, num_perm)),
        }
    )


# --- shuffle: band buckets -> candidate edges ----------------------------------------------------------------------
# A document is a `node`: a string whose byte order is the keep order (4-digit source priority, doc_id, NUL, source),
# so the best-ranked member of any set is its minimum and no task needs a corpus-wide ranking. Its `loc` says where
# its signature is stored: (signature part index << 32) | row in that part, so a task fetches the signatures it needs
# from the stored parts by position and never holds the corpus's signature matrix.
LOC_BITS = 32
SHUFFLE_SCHEMA = {
    "part": pl.UInt32,  # hash partition of the band key: one band task per partition
    "band": pl.UInt8,
    "band_key": pl.UInt64,
    "node": pl.String,
    "loc": pl.Int64,
    "exact_key": pl.Binary,
    "words": pl.Boolean,  # n_words > 0: a text without words never near-matches
}
PAIR_SCHEMA = {"a": pl.String, "b": pl.String, "a_loc": pl.Int64, "b_loc": pl.Int64}


def node_expr(priority: list[str] | tuple[str, ...] = ()) -> pl.Expr:
    """`node` of each row of a frame with `doc_id`, `source`: keep order = source priority (sources not listed come
    last), then `doc_id`, then `source` (so ties never depend on row order)."""
    prio = pl.col("source").replace_strict(
        list(priority), list(range(len(priority))), default=len(priority), return_dtype=pl.Int64
    )
    parts = [prio.cast(pl.String).str.zfill(4), pl.col("doc_id"), pl.lit("\x00"), pl.col("source")]
    return pl.concat_str(parts, ignore_nulls=True)  # a frame without sources (one partition's own dedup)


def node_doc_id(node: pl.Expr) -> pl.Expr:
    return node.str.slice(4).str.split_exact("\x00", 1).struct.field("field_0")


def node_source(node: pl.Expr) -> pl.Expr:
    source = node.str.split_exact("\x00", 1).struct.field("field_1")
    return pl.when(source != "").then(source)


def band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """64-bit key of rows `band*rows .. band*rows+rows-1` of each signature (folded like shingles)."""
    cols = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
    h = cols[:, 0] + np.uint64(band)
    for j in range(1, rows):
        h = fmix64(h * _FOLD + cols[:, j])
    return h


def shuffle_rows(
    sigs: pl.DataFrame,
    part_index: int,
    *,
    bands: int,
    rows: int,
    n_parts: int,
    priority: list[str] | tuple[str, ...] = (),
    near: bool = True,
) -> pl.DataFrame:
    """The map side of the shuffle for one signature part (`doc_id, source, exact_key, n_words, sig`, stored as part
    `part_index`): one row per (document, band) in `SHUFFLE_SCHEMA`, sorted by `part`. Every document is in band 0
    (exact duplicates are found there); bands 1.. hold only documents with words, and none without `near`.

    Exact copies share their representative's signature, hence every band key and partition: each (band, part) task
    sees whole exact groups, and band 0's tasks find every exact duplicate."""
    sig = sigs.get_column("sig").to_numpy()
    base = sigs.select(
        node=node_expr(priority),
        loc=pl.int_range(pl.len(), dtype=pl.Int64) + (part_index << LOC_BITS),
        exact_key="exact_key",
        words=pl.col("n_words") > 0,
    )
    frames = []
    for b in range(bands if near else 1):
        keys = band_keys(sig, b, rows)
        frame = base.with_columns(band=pl.lit(b, pl.UInt8), band_key=pl.Series(keys, dtype=pl.UInt64))
        frames.append(frame if b == 0 else frame.filter("words"))
    out = pl.concat(frames).with_columns(part=(pl.col("band_key") % n_parts).cast(pl.UInt32))
    return out.select(list(SHUFFLE_SCHEMA)).sort("part", "band", maintain_order=True)


def bucket_edges(slice_: pl.DataFrame, *, exact: bool = True, near: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(exact pairs, candidate edges) of one hash partition's shuffle rows (any bands), both `PAIR_SCHEMA` with
    a < b (a is the better-ranked node).

    Exact: in band 0, every member of an exact-key group pairs with the group's best-ranked member. Near (every band,
    the exact copies left out): in each band bucket sorted by node, a star (every member to the first) plus a chain
    (every member to the previous one), so a bucket of k documents gives < 2k edges, never k^2."""
    rows = slice_.with_columns(
        first=pl.col("node").min().over("band", "exact_key"),
        first_loc=pl.col("loc").sort_by("node").first().over("band", "exact_key"),
    )
    copy = pl.col("node") != pl.col("first")
    pairs = pl.DataFrame(schema=PAIR_SCHEMA)
    if exact:
        pairs = rows.filter((pl.col("band") == 0) & copy).select(a="first", b="node", a_loc="first_loc", b_loc="loc")
        rows = rows.filter(~copy)
    edges = pl.DataFrame(schema=PAIR_SCHEMA)
    if near:
        ranked = rows.filter("words").sort("band", "band_key", "node")
        bucket = ("band", "band_key")
        grouped = ranked.select(
            "node",
            "loc",
            first=pl.col("node").first().over(bucket),
            first_loc=pl.col("loc").first().over(bucket),
            prev=pl.col("node").shift(1).over(bucket),
            prev_loc=pl.col("loc").shift(1).over(bucket),
        )
        star = grouped.filter(pl.col("node") != pl.col("first")).select(
            a="first", b="node", a_loc="first_loc", b_loc="loc"
        )
        chain = grouped.filter(pl.col("prev").is_not_null() & (pl.col("prev") != pl.col("first"))).select(
            a="prev", b="node", a_loc="prev_loc", b_loc="loc"
        )
        edges = pl.concat([star, chain]).unique(maintain_order=True)
    return pairs, edges


# --- verification: each pair's estimated Jaccard from the two stored signatures -------------------------------------
def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    return (sig_a == sig_b).mean(axis=1) if len(sig_a) else np.zeros(0)


def part_of(loc: pl.Expr) -> pl.Expr:
    """The signature part a `loc` points into."""
    return loc // (1 << LOC_BITS)


def attach_signatures(pairs: pl.DataFrame, sig: np.ndarray, side: str) -> np.ndarray:
    """The signatures (rows of one part's `sig` matrix) of `pairs`' `{side}_loc` nodes, all of which are in it."""
    return sig[pairs.get_column(f"{side}_loc").to_numpy() & ((1 << LOC_BITS) - 1)]


def components(edges: pl.DataFrame) -> pl.DataFrame:
    """`node, label` for every node of `edges` (`a`, `b`): label = smallest node of its connected component. Nodes
    are ranked locally (order-preserving), so the rounds join integers whatever the node type."""
    names = pl.concat([edges["a"], edges["b"]]).unique().sort()
    if names.is_empty():
        return pl.DataFrame(schema={"node": edges.schema["a"], "label": edges.schema["a"]})
    index = pl.DataFrame({"name": names, "i": pl.int_range(len(names), dtype=pl.UInt32, eager=True)})
    ranked = edges.join(index.rename({"name": "a", "i": "ia"}), on="a").join(
        index.rename({"name": "b", "i": "ib"}), on="b"
    )
    e = pl.concat([ranked.select(a="ia", b="ib"), ranked.select(a="ib", b="ia")]).unique()
    label = e.group_by("a").agg(label=pl.min("b")).select(node="a", label=pl.min_horizontal("a", "label"))
    while True:
        # each node takes the smallest label among its neighbours, then jumps to its label's label
        nxt = (
            e.join(label, left_on="b", right_on="node")
            .group_by("a")
            .agg(pl.min("label"))
            .rename({"a": "node", "label": "nb"})
            .join(label, on="node")
            .select("node", label=pl.min_horizontal("label", "nb"))
        )
        nxt = nxt.join(nxt.rename({"node": "label", "label": "jump"}), on="label", how="left").select(
            "node", label=pl.min_horizontal("label", "jump")
        )
        if nxt.sort("node").equals(label.sort("node")):
            break
        label = nxt
    return (
        label.sort("node")
        .join(index.rename({"i": "node"}), on="node")
        .join(index.rename({"i": "label", "name": "label_name"}), on="label")
        .select(node="name", label="label_name")
    )


def members(pairs: pl.DataFrame, verified: pl.DataFrame) -> pl.DataFrame:
    """The reduce: `node, loc, label, label_loc, exact_copy` for every document in a cluster of two or more, from the
    exact pairs and the verified near edges (`PAIR_SCHEMA`); label = the component's best-ranked node. The
    components run on the integer `loc`s (16 bytes per edge), the node strings are read once per member."""
    edges = pl.concat([pairs, verified])
    nodes = pl.concat([edges.select(node="a", loc="a_loc"), edges.select(node="b", loc="b_loc")]).unique("loc")
    comp = components(edges.select(a="a_loc", b="b_loc")).rename({"node": "loc", "label": "comp"})
    return (
        comp.join(nodes, on="loc")
        .with_columns(
            label=pl.col("node").min().over("comp"),
            label_loc=pl.col("loc").sort_by("node").first().over("comp"),
            exact_copy=pl.col("loc").is_in(pairs["b_loc"].implode()),
        )
        .select("node", "loc", "label", "label_loc", "exact_copy")
        .sort("node")
    )


def ledger(clustered: pl.DataFrame, jaccard: pl.Series) -> pl.DataFrame:
    """Cluster ledger from `members` and each member's estimated Jaccard to its label (1.0 for the label itself).

    Columns: `doc_id, source, cluster_id` (= `kept_doc_id`, the kept representative), `cluster_size, kept,
    kept_doc_id, kept_source, drop_reason` (`exact_duplicate`: the same exact key as a better-ranked document, else
    `near_duplicate`; null when kept), `jaccard` (estimated from the signatures, vs the kept representative)."""
    if clustered.is_empty():
        return empty_ledger()
    kept = pl.col("node") == pl.col("label")
    return (
        clustered.with_columns(jaccard=jaccard.cast(pl.Float64))
        .select(
            doc_id=node_doc_id(pl.col("node")),
            source=node_source(pl.col("node")),
            cluster_id=node_doc_id(pl.col("label")),
            cluster_size=pl.len().over("label").cast(pl.Int64),
            kept=kept,
            kept_doc_id=node_doc_id(pl.col("label")),
            kept_source=node_source(pl.col("label")),
            drop_reason=pl.when(kept)
            .then(None)
            .when(pl.col("exact_copy"))
            .then(pl.lit("exact_duplicate"))
            .otherwise(pl.lit("near_duplicate")),
            jaccard=pl.col("jaccard").round(4),
        )
        .sort("cluster_id", "kept", "doc_id", descending=[False, True, False])
    )


# --- the whole clustering in one process (a partition's own dedup; the reference of the distributed step) ----------
def cluster_signatures(
    sigs: pl.DataFrame,
    *,
    bands: int,
    rows: int,
    threshold: float | None,
    exact: bool = True,
    near: bool = True,
    priority: list[str] | tuple[str, ...] = (),
    n_parts: int = 1,
) -> pl.DataFrame:
    """Cluster ledger (`ledger`) of one signature frame: the same stages as `dedup_clusters`' tasks (shuffle,
    band edges per partition, verification, components), run here one after another on one part."""
    sig = sigs.get_column("sig").to_numpy()
    shuffled = shuffle_rows(sigs, 0, bands=bands, rows=rows, n_parts=n_parts, priority=priority, near=near)
    found = [bucket_edges(s, exact=exact, near=near) for s in shuffled.partition_by("part", maintain_order=True)]
    pairs = pl.concat([pl.DataFrame(schema=PAIR_SCHEMA), *(p for p, _ in found)])
    cand = pl.concat([pl.DataFrame(schema=PAIR_SCHEMA), *(e for _, e in found)]).unique().sort("a", "b")
    if threshold is not None and cand.height:
        est = estimated_jaccard(attach_signatures(cand, sig, "a"), attach_signatures(cand, sig, "b"))
        cand = cand.filter(pl.Series(est >= threshold))
    clustered = members(pairs, cand)
    mine = clustered.select(a_loc="label_loc", b_loc="loc")
    jac = estimated_jaccard(attach_signatures(mine, sig, "a"), attach_signatures(mine, sig, "b"))
    return ledger(clustered, pl.Series(jac))


LEDGER_SCHEMA = {
    "doc_id": pl.String,
    "source": pl.String,
    "cluster_id": pl.String,
    "cluster_size": pl.Int64,
    "kept": pl.Boolean,
    "kept_doc_id": pl.String,
    "kept_source": pl.String,
    "drop_reason": pl.String,
    "jaccard": pl.Float64,
}


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)
