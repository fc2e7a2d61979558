"""tokenized: the mixture as one flat token stream with an index (format `curation-tokens-v1`).

Format, written by the IO manager under `<root>/tokenized/_all/<version>/`:
- `tokens.bin`: little-endian unsigned ints (`header.dtype`: `<u2` when the vocabulary fits 16 bits, else `<u4`),
  the documents in mixture order, each followed by the end-of-text id `header.eot_id` (as nanoGPT/datatrove do);
- `index.parquet`: one row per document: `doc_id`, `source`, `epoch`, `offset` (u64, first token), `n_tokens` (u32,
  without the EOT) - document i spans `tokens[offset : offset + n_tokens]` and `tokens[offset + n_tokens] == eot_id`;
- `header.json`: format, tokenizer, vocab_size, dtype, eot_id, sequence_length, documents, tokens, sha256 of
  tokens.bin. A trainer packs `sequence_length + 1`-token windows from the flat stream (or reads per-document
  spans from the index); `np.memmap(path, dtype=header["dtype"])` reads it without copying.
"""

import hashlib
import io
import json
from collections.abc import Callable

import dagster as dg
import numpy as np
import polars as pl
from curation_assets._dagster import DAILY, enforce_transfers, pod
from curation_assets.frames import step_metadata
from resources.cost_guard import CostGuard
from resources.storage import FileSetOutput
from resources.tokenizer import TokenizerResource

FORMAT = "curation-tokens-v1"
BATCH = 2048


def tokenize_docs(docs: pl.DataFrame, encode_batch: Callable[[list[str]], list[list[int]]], eot_id: int,
                  vocab_size: int) -> tuple[np.ndarray, pl.DataFrame]:
    """Encode `docs.text` in order (batches of BATCH docs, so memory is bounded by the output plus one batch).

    Requires: doc_id, source, epoch, text. Returns (flat token array, index frame as in the module docstring).
    """
    dtype = np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")
    chunks, lengths = [], []
    for start in range(0, docs.height, BATCH):
        for ids in encode_batch(docs["text"].slice(start, BATCH).to_list()):
            chunks.append(np.asarray([*ids, eot_id], dtype=dtype))
            lengths.append(len(ids))
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    n = np.asarray(lengths, dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum(n.astype(np.uint64) + 1)[:-1]]).astype(np.uint64) if len(n) else n.astype(np.uint64)
    index = docs.select("doc_id", "source", "epoch").with_columns(
        pl.Series("offset", offsets, dtype=pl.UInt64), pl.Series("n_tokens", n, dtype=pl.UInt32))
    return tokens, index


def read_tokens(store, files: dict[str, str]) -> tuple[np.ndarray, pl.DataFrame, dict]:
    """Load a published `curation-tokens-v1` file set (name -> URI) back into (tokens, index, header)."""
    header = json.loads(store.read_bytes(files["header.json"]))
    tokens = np.frombuffer(store.read_bytes(files["tokens.bin"]), dtype=np.dtype(header["dtype"]))
    return tokens, pl.read_parquet(io.BytesIO(store.read_bytes(files["index.parquet"]))), header


def verify(tokens: np.ndarray, index: pl.DataFrame, eot_id: int) -> dict[str, object]:
    """Facts the `index_matches_tokens` check asserts: the index accounts for every token and every span ends in EOT."""
    ends = (index["offset"] + index["n_tokens"].cast(pl.UInt64)).to_numpy()
    indexed = int(index["n_tokens"].sum() or 0) + index.height
    return {"tokens_in_data": int(tokens.size), "tokens_in_index": indexed,
            "spans_end_in_eot": bool(index.height == 0 or (ends < tokens.size).all() and (tokens[ends] == eot_id).all())}


# --- asset wrapper ---------------------------------------------------------------------------------------------
def build(cfg, version: str) -> dg.AssetsDefinition:

    recipe = cfg.recipe

    @dg.asset(code_version=version, op_tags=pod("2", "8Gi"), group_name="curation", freshness_policy=DAILY,
              check_specs=[dg.AssetCheckSpec("index_matches_tokens", asset="tokenized", blocking=True,
                                             description="tokens in the index == tokens in tokens.bin; spans end in EOT")],
              metadata={"recipe": recipe.name, "format": FORMAT})
    def tokenized(context: dg.AssetExecutionContext, mixed: pl.LazyFrame, tokenizer: TokenizerResource,
                  cost_guard: CostGuard):
        """`curation-tokens-v1` token stream of the mixture (layout in curation_assets/tokenized.py)."""
        docs = mixed.select("doc_id", "source", "epoch", "text").collect()
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(docs.estimated_size())])
        tokens, index = tokenize_docs(docs, tokenizer.encode_batch, tokenizer.eot_id, tokenizer.vocab_size)
        header = {"format": FORMAT, "tokenizer": recipe.tokenizer, "vocab_size": tokenizer.vocab_size,
                  "dtype": tokens.dtype.str, "eot_id": tokenizer.eot_id, "sequence_length": recipe.sequence_length,
                  "documents": index.height, "tokens": int(tokens.size), "recipe": recipe.name,
                  "sha256": hashlib.sha256(tokens.tobytes()).hexdigest()}
        index_bytes = io.BytesIO()
        index.write_parquet(index_bytes, compression="zstd")
        out = FileSetOutput(files=iter([("tokens.bin", tokens.tobytes()), ("index.parquet", index_bytes.getvalue()),
                                        ("header.json", json.dumps(header, indent=1, sort_keys=True).encode())]))
        yield dg.Output(out, metadata=step_metadata(
            rows_in=docs.height, rows_out=index.height, drops={}, bytes_in=docs.estimated_size(),
            bytes_out=tokens.nbytes + len(index_bytes.getvalue()), config_version=version,
            extra={"tokens": int(tokens.size), "sequences": int(tokens.size) // (recipe.sequence_length + 1), **transfer}))
        # re-read what the IO manager wrote, so the check covers persistence, not just the in-memory arrays
        facts = verify(*read_tokens(context.resources.io_manager.store, out.written["files"])[:2], tokenizer.eot_id)
        yield dg.AssetCheckResult(
            check_name="index_matches_tokens",
            passed=facts["tokens_in_data"] == facts["tokens_in_index"] and bool(facts["spans_end_in_eot"]),
            metadata=facts)

    return tokenized
