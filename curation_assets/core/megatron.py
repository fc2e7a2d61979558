"""Megatron-LM indexed dataset (`MMIDIDX`, version 1): one `.bin` of concatenated token ids and one `.idx` per shard.

Layout of `.idx` (little endian, as `megatron/core/datasets/indexed_dataset.py` writes and reads it):
9-byte magic `MMIDIDX\\x00\\x00`, u64 version (1), u8 dtype code, u64 sequence count N, u64 document-index count
(N + 1 here), int32[N] sequence lengths (tokens), int64[N] byte pointers into `.bin`, int64[N + 1] document
indices (sequence index where each document starts, then N). One sequence = one document + its EOT, so the
document indices are 0..N. The dtype is Megatron's `DType.optimal_dtype(vocab_size)` (indexed_dataset.py, as
tools/preprocess_data.py calls it): uint16 (code 8) when the vocabulary has fewer than 65 500 ids (a small BPE,
GPT-2's 50 257), else int32 (code 4: cl100k, Llama 3, Qwen) - unsigned 32-bit ids below 2^31 have the same bytes.

Pure numpy: no Dagster, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}
CODE_DTYPES = {c: d for d, c in DTYPE_CODES.items()}


class MegatronIndexError(ValueError):
    """A `.idx` file that is not a valid Megatron index, or does not match its `.bin`."""


def optimal_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size < 65500 else np.dtype("<i4")


def index_bytes(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The `.idx` of a shard whose sequences (documents + EOT) have these token lengths."""
    n = len(lengths)
    lengths = np.asarray(lengths, dtype="<i4")
    pointers = np.zeros(n, dtype="<i8")
    if n:
        np.cumsum(lengths[:-1].astype("<i8") * dtype.itemsize, out=pointers[1:])
    head = MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", DTYPE_CODES[np.dtype(dtype).newbyteorder("=")])
    head += struct.pack("<Q", n) + struct.pack("<Q", n + 1)
    return head + lengths.tobytes() + pointers.tobytes() + np.arange(n + 1, dtype="<i8").tobytes()


@dataclass(frozen=True)
class Index:
    dtype: np.dtype
    lengths: np.ndarray  # int32, tokens per sequence
    pointers: np.ndarray  # int64, byte offset of each sequence in .bin
    document_indices: np.ndarray  # int64

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))


def read_index(data: bytes) -> Index:
    """Parse a `.idx` exactly as Megatron does (magic, version, dtype code, counts, then three arrays)."""
    if data[:9] != MAGIC:
        raise MegatronIndexError("bad magic: not a Megatron MMIDIDX index")
    (version,), (code,) = struct.unpack_from("<Q", data, 9), struct.unpack_from("<B", data, 17)
    if version != VERSION or code not in CODE_DTYPES:
        raise MegatronIndexError(f"unsupported index version {version} or dtype code {code}")
    n, n_docs = struct.unpack_from("<Q", data, 18)[0], struct.unpack_from("<Q", data, 26)[0]
    off = 34
    expected = off + 4 * n + 8 * n + 8 * n_docs
    if len(data) != expected:
        raise MegatronIndexError(f"index is {len(data)} bytes, its counts say {expected}")
    lengths = np.frombuffer(data, dtype="<i4", count=n, offset=off)
    pointers = np.frombuffer(data, dtype="<i8", count=n, offset=off + 4 * n)
    docs = np.frombuffer(data, dtype="<i8", count=n_docs, offset=off + 12 * n)
    return Index(CODE_DTYPES[code].newbyteorder("<"), lengths, pointers, docs)


def check_shard(index: Index, data_nbytes: int) -> list[str]:
    """What is wrong between an index and its data (empty = consistent)."""
    problems = []
    size = index.dtype.itemsize
    expected_ptrs = (
        np.concatenate([[0], np.cumsum(index.lengths[:-1].astype(np.int64) * size)])
        if len(index.lengths)
        else index.pointers
    )
    if not np.array_equal(index.pointers, expected_ptrs):
        problems.append("sequence pointers are not the running sum of the lengths")
    if index.tokens * size != data_nbytes:
        problems.append(f"index holds {index.tokens} tokens, .bin holds {data_nbytes // size}")
    if (index.lengths <= 0).any():
        problems.append("a sequence has no tokens")
    if (
        index.document_indices.size == 0
        or index.document_indices[0] != 0
        or index.document_indices[-1] != len(index.lengths)
        or (np.diff(index.document_indices) < 0).any()
    ):
        problems.append("document indices do not run from 0 to the sequence count")
    return problems
