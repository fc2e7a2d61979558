"""The offline/online dial: fixed-length training sequences from the tokenized shards, or straight from the mixture.

One switch (`mode`) picks the path; both produce the same token stream - every document of the mixture in mixture
order, its ids in the recipe's tokenizer (a tiktoken encoding or a tokenizer.json) then EOT - cut into consecutive,
non-overlapping windows of `seq_len` tokens (a trailing partial window is dropped). Sequence `i` is
`stream[i * seq_len : (i + 1) * seq_len]`; so a trainer that wants inputs and shifted targets asks for
`seq_len = context + 1`.

- `offline`: reads the Megatron `.bin` shards of `tokenized` (memory-mapped when local), no tokenizer needed.
- `online`: tokenizes the `mixed` documents on the fly (batched; `TokenizerResource.encode_arrays` of the same
  tokenizer, with the EOT id the manifest records), so a recipe change needs no re-tokenization; the documents'
  `n_tokens` (counted by the same tokenizer in `filtered`) let it skip to a position without encoding what it skips.

Resumable: `sequences(start=i)` begins at global sequence `i` (pass the last index seen + 1). Data-parallel: rank
`r` of `world_size` yields the sequences with `i % world_size == r`, so ranks never overlap and together cover all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from curation_assets.core import megatron
from curation_assets.core.frames import range_frames, read_parquet_bytes

Mode = Literal["offline", "online"]


@dataclass(frozen=True)
class Position:
    """Where sequence `index` starts: token `offset` of the stream."""

    index: int
    offset: int


def _windows(
    chunks: Iterator[tuple[int, np.ndarray]], seq_len: int, start: int, rank: int, world: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a token stream, given as (stream offset, ids) pieces in order, into this rank's windows from `start`."""
    i = start + (rank - start) % world  # first index >= start that belongs to this rank
    buf, buf_start = None, 0  # buf[0] is stream token buf_start
    for offset, ids in chunks:
        if buf is None or buf.size == 0:
            trim = max(0, i * seq_len - offset)  # tokens before this rank's next window are never needed
            buf, buf_start = ids[trim:], offset + min(trim, ids.size)
        else:
            buf = np.concatenate([buf, ids])
        while (i + 1) * seq_len <= buf_start + buf.size:
            lo = i * seq_len - buf_start
            yield i, np.asarray(buf[lo : lo + seq_len], dtype=np.uint32).copy()
            i += world
        cut = min(i * seq_len - buf_start, buf.size)
        buf, buf_start = buf[cut:], buf_start + cut


class OfflineSource:
    """The `tokenized` file set: name -> URI (what the IO manager hands a downstream asset) plus a byte reader."""

    def __init__(self, files: dict[str, str], read: Callable[[str], bytes]):
        self.files, self.read = files, read
        self.manifest = json.loads(read(files["manifest.json"]))

    def _shard(self, s: dict) -> np.ndarray:
        uri = self.files[s["bin"]]
        dtype = np.dtype(self.manifest["dtype"])
        if os.path.isfile(uri):  # local: memory-map, nothing is read until touched
            return np.memmap(uri, dtype=dtype, mode="r") if s["tokens"] else np.zeros(0, dtype)
        return np.frombuffer(self.read(uri), dtype=dtype)

    def chunks(self, from_token: int) -> Iterator[tuple[int, np.ndarray]]:
        offset = 0
        for s in self.manifest["shards"]:
            if offset + s["tokens"] > from_token:
                ids = self._shard(s)
                skip = max(0, from_token - offset)
                yield offset + skip, ids[skip:]
            offset += s["tokens"]


class OnlineSource:
    """The `mixed` documents (text + n_tokens, in mixture order) and an encoder (texts -> uint32 arrays)."""

    def __init__(
        self,
        docs: pl.LazyFrame | pl.DataFrame,
        encode: Callable[[list[str]], list[np.ndarray]],
        eot_id: int,
        batch: int = 256,
    ):
        self.docs, self.encode, self.eot, self.batch = docs.lazy(), encode, np.array([eot_id], np.uint32), batch

    def chunks(self, from_token: int) -> Iterator[tuple[int, np.ndarray]]:
        spans = self.docs.select(pl.col("n_tokens").cast(pl.Int64) + 1).collect().to_series()
        ends = spans.cum_sum().to_numpy()
        first = int(np.searchsorted(ends, from_token, side="right"))  # first document not wholly before from_token
        offset = int(ends[first - 1]) if first else 0
        starts = range(first, len(ends), self.batch)
        ranges = [(start - first, min(self.batch, len(ends) - start)) for start in starts]
        batches = range_frames(self.docs.slice(first).select("text").collect_batches(), ranges)
        for start, batch in zip(starts, batches, strict=True):
            for j, ids in enumerate(self.encode(batch["text"].to_list())):
                if ids.size + 1 != spans[start + j]:
                    raise ValueError(
                        f"document {start + j} encodes to {ids.size} tokens, the mixture counted "
                        f"{spans[start + j] - 1}: a different tokenizer wrote n_tokens"
                    )
                yield offset, np.concatenate([ids, self.eot])
                offset += ids.size + 1


def sequences(
    mode: Mode,
    *,
    seq_len: int,
    offline: OfflineSource | None = None,
    online: OnlineSource | None = None,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """(global sequence index, `seq_len` uint32 ids) for this rank, from `start`. `mode` is the dial."""
    if not 0 <= rank < world_size or seq_len <= 0 or start < 0:
        raise ValueError("need 0 <= rank < world_size, seq_len > 0, start >= 0")
    src = {"offline": offline, "online": online}[mode]
    if src is None:
        raise ValueError(f"mode {mode!r} needs its source")
    first = start + (rank - start) % world_size
    yield from _windows(src.chunks(first * seq_len), seq_len, start, rank, world_size)


def read_documents(src: OfflineSource) -> pl.DataFrame:
    return read_parquet_bytes(src.read(src.files["documents.parquet"]))


def read_shard_index(src: OfflineSource, name: str) -> megatron.Index:
    return megatron.read_index(src.read(src.files[f"{name}.idx"]))
