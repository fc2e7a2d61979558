"""tokenizer.json files made offline for the tests, with the `tokenizers` library itself (nothing from a hub):
a small byte-level BPE trained on the bundled sample, and tiktoken's cl100k_base in tokenizer.json form."""

from __future__ import annotations

import functools
from pathlib import Path

from curation_assets.core.readers import detect_format, read_shard

SAMPLE = Path(__file__).resolve().parents[2] / "curation_assets" / "sample"


def sample_texts(sources=("books", "code", "multilingual", "web")) -> list[str]:
    """Every document of the bundled sample's `sources`, in file order."""
    texts = []
    for source in sources:
        for p in sorted((SAMPLE / source).glob("part-*")):
            with open(p, "rb") as f:
                texts += read_shard(f, fmt=detect_format(p.name), source=source, shard=p.name).docs["text"].to_list()
    return texts


@functools.cache
def small_bpe_json(vocab_size: int = 2000) -> str:
    """A byte-level BPE of `vocab_size` ids trained on the sample's books and code, Llama-2 style around it: `<s>`
    and `</s>` special tokens and a post-processor that puts `<s>` before a sequence (which `encode_ordinary`
    semantics must leave out) - so its end-of-document token is `</s>` by name."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes, nothing is unknown
        show_progress=False,
    )
    tok.train_from_iterator(sample_texts(("books", "code")), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok.to_str()


# GPT-2's byte-to-unicode mapping (the `ByteLevel` pre-tokenizer's): printable bytes stand for themselves, the rest
# are shifted to 256 and up
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
_BYTE_LEVEL = {b: chr(b) for b in _PRINTABLE} | {
    b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in _PRINTABLE)
}


def _byte_level(token: bytes) -> str:
    return "".join(_BYTE_LEVEL[b] for b in token)


def _halves(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two tokens tiktoken's BPE joins last to make `token`: its bytes merged by rank, ranks below its own."""
    parts, rank = [bytes([b]) for b in token], ranks[token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        assert best < rank, token
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


@functools.cache
def tiktoken_json(name: str = "cl100k_base") -> str:
    """The tiktoken encoding `name` as a tokenizer.json with the same ids: a byte-level BPE whose vocabulary is the
    mergeable ranks (and the special tokens at their ids), one merge per multi-byte token in rank order, tiktoken's
    split pattern as the pre-tokenizer.

    `ignore_merges` does what tiktoken does first: a piece that is a whole token is that token. One rewrite is needed
    for identical ids: tiktoken's possessive `\\p{N}{1,3}+` becomes the atomic group `(?>\\p{N}{1,3})`, because
    Oniguruma, the library's regex engine, reads `{n,m}+` as "one or more of {n,m}" (Ruby syntax) and would keep
    `1999` as one piece where tiktoken cuts `199` + `9` (ids differed on 299 of the sample's 1,044 documents)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from resources.tokenizer import get_encoding

    enc = get_encoding(name)
    ranks = enc._mergeable_ranks
    vocab = {_byte_level(t): r for t, r in ranks.items()} | dict(enc._special_tokens)
    merges = [
        tuple(map(_byte_level, _halves(ranks, t))) for t, _ in sorted(ranks.items(), key=lambda x: x[1]) if len(t) > 1
    ]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    pattern = enc._pat_str.replace(r"\p{N}{1,3}+", r"(?>\p{N}{1,3})")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in enc._special_tokens])
    return tok.to_str()
