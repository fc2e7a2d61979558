"""tokenized: the mixture as Megatron-compatible token shards (`.bin` + `.idx`) with a manifest.

Written by the IO manager under `<root>/tokenized/_all/<version>/`:
- `shard-NNNNN.bin` / `shard-NNNNN.idx`: a Megatron-LM `MMIDIDX` indexed dataset per shard (layout in
  `curation_assets/megatron.py`; the prefix `.../shard-NNNNN` loads with Megatron's `IndexedDataset`). Each
  document of the mixture, in mixture order, is one sequence: its ids followed by the EOT id. The ids are tiktoken's
  `encode_ordinary`, or a tokenizer.json's encoding without template tokens (no BOS), special-token text encoded as
  text either way, so the EOT a sequence ends with is its only one (`resources/tokenizer.py`).
  A shard is closed before the document that would take it past `shard_tokens` (documents never straddle shards).
- `documents.parquet`: one row per document: doc_id, source, component, epoch, shard, sequence (index in its
  shard), n_tokens (without the EOT).
- `manifest.json`: format, tokenizer (as the recipe names it) and tokenizer_sha256 (of a tokenizer.json's bytes; null
  for a tiktoken encoding), vocab_size, dtype (+ Megatron dtype code), eot_id, sequence_length, recipe + recipe hash,
  token and document counts (total, per component, per shard) and the sha256 of every file.
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.core import megatron
from curation_assets.core.frames import parquet_bytes

FORMAT = "curation-megatron-v1"
BATCH = 1024


class TokenizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # tokens per shard; 2^28 int32 tokens = 1 GiB, a size object stores and Megatron's mmap handle well
    shard_tokens: int = Field(default=1 << 28, gt=0)


@dataclass(frozen=True)
class Shard:
    name: str  # Megatron prefix: `<name>.bin`, `<name>.idx`
    data: bytes
    index: bytes
    lengths: np.ndarray  # tokens per sequence, EOT included

    def manifest_entry(self) -> dict[str, object]:
        """The shard's row of `manifest.json`'s `shards`: its files, counts and checksums."""
        return {
            "name": self.name,
            "bin": f"{self.name}.bin",
            "idx": f"{self.name}.idx",
            "documents": len(self.lengths),
            "tokens": int(self.lengths.sum()),
            "bin_sha256": sha256(self.data),
            "idx_sha256": sha256(self.index),
        }


def tokenize_docs(
    encoded: Iterable[list[np.ndarray]],
    eot_id: int,
    vocab_size: int,
    shard_tokens: int,
) -> Iterator[Shard]:
    """Pack batches of encoded documents (uint32 id arrays, in mixture order) into shards and yield each full shard,
    so memory is one shard plus one batch. Encoding is the caller's (`TokenizerResource.encode_arrays`, or Ray tasks
    in the `tokenized` step).

    Work is per batch and per document, never per token: the shard cuts are found with `searchsorted` on a batch's
    running sequence ends (a shard closes before the document that would take it past `shard_tokens`; a document
    longer than a shard gets a shard of its own), and a shard's `.bin` is one `bytes.join` of its documents' id
    buffers and EOTs: with int32 shards, tiktoken's uint32 buffers (ids below 2^31) are already the bytes, so each
    token is copied once."""
    dtype = megatron.optimal_dtype(vocab_size)
    native = dtype.itemsize == 4
    eot = np.array([eot_id], dtype=np.uint32 if native else dtype)
    pieces: list[np.ndarray] = []  # the open shard: each document's ids then its EOT, in the shard's dtype
    lengths: list[np.ndarray] = []  # its sequence lengths (EOT included), one array per batch
    size = n_shards = 0

    def close() -> Shard:
        n = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
        return Shard(f"shard-{n_shards:05d}", b"".join(pieces), megatron.index_bytes(n, dtype), n)

    for batch in encoded:
        seq = np.fromiter((ids.size for ids in batch), np.int32, len(batch)) + 1
        ends = np.cumsum(seq, dtype=np.int64)
        packed = [x for ids in batch for x in (ids if native else ids.astype(dtype), eot)]
        start = 0  # the batch's first document not yet in a shard
        while start < len(batch):
            offset = int(ends[start - 1]) if start else 0
            fit = int(np.searchsorted(ends[start:], offset + shard_tokens - size, side="right"))
            if fit == 0 and size:
                yield close()
                n_shards, pieces, lengths, size = n_shards + 1, [], [], 0
                continue
            stop = start + max(fit, 1)
            pieces += packed[2 * start : 2 * stop]
            lengths.append(seq[start:stop])
            size += int(ends[stop - 1]) - offset
            start = stop
    if lengths or n_shards == 0:
        yield close()


# End-of-document tokens by the names the major vocabularies give them, in this order: GPT-2 / cl100k / Qwen
# `<|endoftext|>`, Llama 3 `<|end_of_text|>`, Llama 2 / Mistral / T5 `</s>`, Gemma `<eos>`.
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


def is_tokenizer_file(tokenizer: str) -> bool:
    """A recipe's `tokenizer` names a Hugging Face tokenizer.json (a path ending in `.json`), else a tiktoken
    encoding."""
    return tokenizer.endswith(".json")


def _appended(processor: dict | None) -> str | None:
    """The special token a post-processor puts after a single sequence: the last `SpecialToken` after `$A` in a
    `TemplateProcessing` `single` template, the `sep` of `RobertaProcessing` / `BertProcessing`; in a `Sequence`,
    the last processor's that has one."""
    if not processor:
        return None
    kind = processor.get("type")
    if kind == "Sequence":
        found = [t for p in processor.get("processors", []) if (t := _appended(p))]
        return found[-1] if found else None
    if kind in ("RobertaProcessing", "BertProcessing"):
        return processor["sep"][0]
    if kind == "TemplateProcessing":
        single = processor.get("single", [])
        seq = next((i for i, piece in enumerate(single) if "Sequence" in piece), len(single))
        after = [piece["SpecialToken"]["id"] for piece in single[seq + 1 :] if "SpecialToken" in piece]
        return after[-1] if after else None
    return None


def tokenizer_json_eos(spec: dict) -> str | None:
    """The end-of-document token of a parsed tokenizer.json: the special token its post-processor appends after a
    sequence (T5's `$A </s>`, RoBERTa's `sep`), else the first of `EOS_NAMES` that is one of its special added
    tokens; None when neither (the recipe must then name one: `eos_token`)."""
    special = {t["content"] for t in spec.get("added_tokens") or [] if t.get("special")}
    appended = _appended(spec.get("post_processor"))
    if appended in special:
        return appended
    return next((name for name in EOS_NAMES if name in special), None)


def text_batches(docs: pl.DataFrame, batch: int = BATCH) -> Iterator[list[str]]:
    for start in range(0, docs.height, batch):
        yield docs["text"].slice(start, batch).to_list()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_shards(manifest: dict, read: Callable[[str], bytes]) -> dict[str, object]:
    """Re-read every shard and check it against its index and the manifest: checksums, pointers and counts agree,
    every sequence ends in EOT and no other token is EOT, every id is below the vocabulary size."""
    problems, tokens, sequences, max_id = [], 0, 0, -1
    eot, vocab = manifest["eot_id"], manifest["vocab_size"]
    for s in manifest["shards"]:
        data, idx_bytes = read(s["bin"]), read(s["idx"])
        if sha256(data) != s["bin_sha256"] or sha256(idx_bytes) != s["idx_sha256"]:
            problems.append(f"{s['name']}: checksum mismatch")
        try:
            idx = megatron.read_index(idx_bytes)
        except megatron.MegatronIndexError as e:
            problems.append(f"{s['name']}: {e}")
            continue
        problems += [f"{s['name']}: {p}" for p in megatron.check_shard(idx, len(data))]
        ids = np.frombuffer(data, dtype=idx.dtype)
        ends = np.cumsum(idx.lengths.astype(np.int64)) - 1
        if ids.size and (ends[-1] >= ids.size or (ids[ends[ends < ids.size]] != eot).any()):
            problems.append(f"{s['name']}: a sequence does not end in EOT")
        if int((ids == eot).sum()) != len(idx.lengths):
            problems.append(f"{s['name']}: EOT inside a document")
        max_id = max(max_id, int(ids.max()) if ids.size else -1)
        if ids.size and int(ids.min()) < 0:
            problems.append(f"{s['name']}: negative id")
        tokens += idx.tokens
        sequences += len(idx.lengths)
    if tokens != manifest["tokens"] or sequences != manifest["documents"]:
        problems.append(
            f"manifest says {manifest['tokens']} tokens / {manifest['documents']} documents, "
            f"the shards hold {tokens} / {sequences}"
        )
    return {
        "tokens_in_data": tokens,
        "sequences_in_data": sequences,
        "max_id": max_id,
        "ids_in_range": max_id < vocab,
        "index_ok": not problems,
        "problems": "; ".join(problems[:10]) or "none",
    }


def sample_positions(n: int, k: int = 16, seed: int = 0) -> list[int]:
    """The seeded sample of mixture positions that `decode_sample` checks."""
    return sorted(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False).tolist())


def decode_sample(
    manifest: dict,
    documents: pl.DataFrame,
    texts: pl.Series | dict[int, str],
    read: Callable[[str], bytes],
    decode: Callable[[np.ndarray], str],
    k: int = 16,
    seed: int = 0,
) -> list[int]:
    """Positions (mixture order) of up to `k` sampled documents whose tokens do NOT decode back to their text."""
    picks = sample_positions(documents.height, k, seed)
    shards = {s["name"]: s for s in manifest["shards"]}
    bad, cache = [], {}
    for i in picks:
        row = documents.row(i, named=True)
        if row["shard"] not in cache:
            s = shards[row["shard"]]
            idx = megatron.read_index(read(s["idx"]))
            cache = {row["shard"]: (idx, np.frombuffer(read(s["bin"]), dtype=idx.dtype))}
        idx, ids = cache[row["shard"]]
        start = int(idx.pointers[row["sequence"]]) // idx.dtype.itemsize
        if decode(ids[start : start + row["n_tokens"]]) != texts[i]:
            bad.append(i)
    return bad


def shard_sizes(lengths: np.ndarray, shard_tokens: int) -> list[int]:
    """Documents per shard under `tokenize_docs`'s rule (close a shard before the sequence that would overflow it)."""
    sizes, size, n = [], 0, 0
    for length in lengths.tolist():
        if size and size + length > shard_tokens:
            sizes.append(n)
            size, n = 0, 0
        size, n = size + length, n + 1
    return sizes + [n] if n or not sizes else sizes


def documents_frame(docs: pl.DataFrame, shards: list[dict], lengths: list[np.ndarray]) -> pl.DataFrame:
    """documents.parquet: provenance of every sequence (its shard and position there) in mixture order."""
    return docs.select("doc_id", "source", "component", "epoch").with_columns(
        pl.Series("shard", np.repeat([s["name"] for s in shards], [len(x) for x in lengths]), dtype=pl.String),
        pl.Series("sequence", np.concatenate([np.arange(len(x)) for x in lengths]), dtype=pl.UInt32),
        pl.Series("n_tokens", np.concatenate(lengths) - 1, dtype=pl.UInt32),
    )


def shard_table(manifest: dict) -> str:
    lines = ["| shard | documents | tokens | bin sha256 |", "|---|---:|---:|---|"]
    lines += [
        f"| {s['name']} | {s['documents']:,} | {s['tokens']:,} | `{s['bin_sha256'][:16]}` |" for s in manifest["shards"]
    ]
    return (
        "\n".join(lines) + f"\n\n{manifest['tokens']:,} tokens ({manifest['tokenizer']}, {manifest['dtype']}, EOT "
        f"{manifest['eot_id']}) in {manifest['documents']:,} documents"
    )


def manifest_header(
    *,
    tokenizer: str,
    tokenizer_sha256: str | None,
    vocab_size: int,
    eot_id: int,
    sequence_length: int,
    shard_tokens: int,
    recipe: str,
    recipe_hash: str,
) -> dict:
    """The manifest's fields known before any token is written (`token_files` adds shards, counts and checksums)."""
    dtype = megatron.optimal_dtype(vocab_size)
    return {
        "format": FORMAT,
        "tokenizer": tokenizer,
        "tokenizer_sha256": tokenizer_sha256,
        "vocab_size": vocab_size,
        "dtype": dtype.str,
        "megatron_dtype_code": megatron.DTYPE_CODES[dtype.newbyteorder("=")],
        "eot_id": eot_id,
        "sequence_length": sequence_length,
        "shard_tokens": shard_tokens,
        "recipe": recipe,
        "recipe_hash": recipe_hash,
        "shards": [],
    }


def token_files(docs: pl.DataFrame, encoded: Iterable[list[np.ndarray]], header: dict) -> Iterator[tuple[str, bytes]]:
    """The `tokenized` file set in write order, one file at a time: each shard's `.bin` and `.idx`, then
    `documents.parquet`, then `manifest.json` (`header` + shards, counts per component and the sha256 of every file).

    `docs` holds the mixture's per-document columns (doc_id, source, component, epoch) in mixture order and `encoded`
    their token ids in batches in the same order."""
    manifest = {**header, "shards": []}
    lengths: list[np.ndarray] = []
    shards = tokenize_docs(encoded, header["eot_id"], header["vocab_size"], header["shard_tokens"])
    for shard in shards:
        manifest["shards"].append(shard.manifest_entry())
        lengths.append(shard.lengths)
        yield f"{shard.name}.bin", shard.data
        yield f"{shard.name}.idx", shard.index
    documents = documents_frame(docs, manifest["shards"], lengths)
    documents_file = parquet_bytes(documents)
    per = documents.group_by("component").agg(
        pl.len().alias("documents"), (pl.col("n_tokens").sum() + pl.len()).alias("tokens")
    )
    manifest.update(
        documents=documents.height,
        tokens=int(sum(int(x.sum()) for x in lengths)),
        documents_sha256=sha256(documents_file),
        components={c: {"documents": d, "tokens": t} for c, d, t in per.sort("component").iter_rows()},
    )
    yield "documents.parquet", documents_file
    yield "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode()
