"""Tokenizer resource: tiktoken encodings or Hugging Face tokenizer.json files; nothing is downloaded at run time.

Both kinds encode like tiktoken's `encode_ordinary`: a document's ids are its text's tokens only (no BOS or other
template token) and text that spells a special token (`<|endoftext|>`, `</s>`) is encoded as plain text, so the EOS
id a step appends is the only EOS in a sequence.
"""

from __future__ import annotations

import functools
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import PrivateAttr

from curation_assets.config.tokenizer import OFFLINE_NAMES
from curation_assets.core.tokens import is_tokenizer_file, tokenizer_json_eos


def get_encoding(name: str):
    """A tiktoken encoding by its canonical name, preferring the bundled offline copy."""
    import tiktoken

    return tiktoken.get_encoding(OFFLINE_NAMES.get(name, name))


def _encodable(text: str) -> str:
    """Lone surrogates (which polars cannot hold, but a caller's str can) replaced, as tiktoken's `encode_ordinary`
    does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


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
            except UnicodeEncodeError:
                buf = core.encode_to_tiktoken_buffer(_encodable(t), none)
            out.append(np.frombuffer(buf, dtype=np.uint32))
        return out

    if num_threads <= 1 or len(texts) < 2 * num_threads:
        return work(texts)
    k = -(-len(texts) // num_threads)
    with ThreadPoolExecutor(num_threads) as ex:
        return [a for part in ex.map(work, [texts[i : i + k] for i in range(0, len(texts), k)]) for a in part]


class TokenizerJson:
    """A tokenizer.json through the `tokenizers` library (`Tokenizer.from_str`: the file's bytes, never the hub).

    `eot_token` is `eos_token` (the config's choice, `curation_assets/config/tokenizer.py`) or the file's own
    (`core.tokens.tokenizer_json_eos`); `n_vocab` is the highest id + 1, the number of tokens of a contiguous
    vocabulary (Megatron's `len(tokenizer)`), and never less than what the ids need, so `optimal_dtype` always holds
    them."""

    def __init__(self, data: bytes, eos_token: str | None = None):
        from tokenizers import Tokenizer

        spec = json.loads(data)
        self.tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        self.tokenizer.encode_special_tokens = True  # special-token text is plain text (tiktoken's encode_ordinary)
        self.sha256 = hashlib.sha256(data).hexdigest()
        eos = eos_token or tokenizer_json_eos(spec)
        if eos is None or self.tokenizer.token_to_id(eos) is None:
            raise ValueError(f"tokenizer.json has no end-of-document token {eos!r}: set recipe.eos_token")
        self.eot_token = self.tokenizer.token_to_id(eos)
        self.n_vocab = max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def encode_arrays(self, texts: list[str], num_threads: int) -> list[np.ndarray]:
        """Every text's ids (no template tokens) as a uint32 array, in order. One thread: one text at a time, so a Ray
        task takes the one CPU it asked for; more: the library's own batch (its Rayon pool)."""

        def work(texts: list[str]) -> list:
            if num_threads <= 1:
                return [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
            return self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)

        try:
            encodings = work(texts)
        except TypeError:  # the library refuses a str with a lone surrogate: replaced, as tiktoken does
            encodings = work([_encodable(t) for t in texts])
        return [np.asarray(e.ids, np.uint32) for e in encodings]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


@functools.lru_cache(maxsize=4)
def _tokenizer_json(path: str, eos_token: str | None) -> TokenizerJson:
    return TokenizerJson(Path(path).read_bytes(), eos_token)


class TokenizerResource(dg.ConfigurableResource):
    """The recipe's tokenizer (`encoding`: a tiktoken encoding name, or the absolute path of a tokenizer.json;
    `eos_token`: a tokenizer.json's EOS as the config resolved it). `encode_arrays` turns texts into token ids."""

    encoding: str = "cl100k_base"
    eos_token: str | None = None
    num_threads: int = 2
    _enc = PrivateAttr(default=None)

    @property
    def is_tokenizer_json(self) -> bool:
        return is_tokenizer_file(self.encoding)

    @property
    def enc(self):
        """The loaded tokenizer: a `tiktoken.Encoding`, or a `TokenizerJson` (its `tokenizers.Tokenizer` is
        `.tokenizer`)."""
        if self._enc is None:  # loaded lazily: building Definitions must stay cheap
            self._enc = (
                _tokenizer_json(self.encoding, self.eos_token)
                if self.is_tokenizer_json
                else get_encoding(self.encoding)
            )
        return self._enc

    @property
    def eot_id(self) -> int:
        return self.enc.eot_token

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    @property
    def sha256(self) -> str | None:
        """The sha256 of the tokenizer.json's bytes as loaded (None for a tiktoken encoding)."""
        return self.enc.sha256 if self.is_tokenizer_json else None

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        if self.is_tokenizer_json:
            return self.enc.encode_arrays(texts, self.num_threads)
        return encode_arrays(self.enc, texts, self.num_threads)

    def decode(self, ids) -> str:
        return self.enc.decode(list(map(int, ids)))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t) for t in self.encode_arrays(texts)]


@functools.cache
def task_tokenizer(encoding: str) -> TokenizerResource:
    """The tokenizer `encoding` in a Ray task (one thread: a task is one CPU), loaded once per worker process."""
    return TokenizerResource(encoding=encoding, num_threads=1)
