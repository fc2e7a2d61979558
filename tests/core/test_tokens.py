"""core/tokens.py and core/megatron.py: Megatron-LM indexed shards (read back by Megatron's own reader), their
verification, and a sample decoded back to its text."""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation_assets.core import megatron
from curation_assets.core.tokens import (
    decode_sample,
    documents_frame,
    shard_sizes,
    text_batches,
    tokenize_docs,
    tokenizer_json_eos,
    verify_shards,
)
from resources.tokenizer import TokenizerResource
from tests.core.tokenizer_files import sample_texts, small_bpe_json, tiktoken_json

TOK = TokenizerResource()
TEXTS = [
    "hello world",
    "",
    "<|endoftext|> is plain text here",
    "naïve café – 東京 🚀",
    "x" * 3000,
    "def f(x):\n    return x  # code\n",
]


def read_idx_like_megatron(path):
    """megatron/core/datasets/indexed_dataset.py `_IndexReader`, transcribed: header fields, then memmapped arrays."""
    with open(path, "rb") as f:
        assert f.read(9) == b"MMIDIDX\x00\x00"
        (version,) = struct.unpack("<Q", f.read(8))
        (code,) = struct.unpack("<B", f.read(1))
        (sequence_count,) = struct.unpack("<Q", f.read(8))
        (document_count,) = struct.unpack("<Q", f.read(8))
        offset = f.tell()
    buf = np.memmap(path, mode="r", order="C")
    lengths = np.frombuffer(buf, dtype=np.int32, count=sequence_count, offset=offset)
    pointers = np.frombuffer(buf, dtype=np.int64, count=sequence_count, offset=offset + lengths.nbytes)
    docs = np.frombuffer(buf, dtype=np.int64, count=document_count, offset=offset + lengths.nbytes + pointers.nbytes)
    return version, code, lengths, pointers, docs


def build(texts, shard_tokens, batch=3):
    docs = pl.DataFrame({"text": texts})
    return list(
        tokenize_docs(map(TOK.encode_arrays, text_batches(docs, batch)), TOK.eot_id, TOK.vocab_size, shard_tokens)
    )


def manifest_for(shards, vocab=TOK.vocab_size):
    return {
        "eot_id": TOK.eot_id,
        "vocab_size": vocab,
        "documents": sum(len(s.lengths) for s in shards),
        "tokens": sum(int(s.lengths.sum()) for s in shards),
        "shards": [s.manifest_entry() for s in shards],
    }


def test_encode_arrays_is_encode_ordinary_batch_for_any_text():
    texts = (TEXTS + ["lone surrogate \ud800 here"]) * 5  # tiktoken's own fallback for what polars cannot hold
    arrays = TOK.encode_arrays(texts)
    assert [a.tolist() for a in arrays] == TOK.enc.encode_ordinary_batch(texts)
    assert TOK.eot_id not in np.concatenate(arrays)  # special-token text is plain text, never the control id


def test_shards_are_megatron_indexed_datasets_read_back_by_megatrons_reader(tmp_path):
    shards = build(TEXTS * 4, shard_tokens=400)
    assert [len(s.lengths) for s in shards] == shard_sizes(np.concatenate([s.lengths for s in shards]), 400)
    assert len(shards) > 2 and all(s.lengths.sum() <= 400 or len(s.lengths) == 1 for s in shards)
    expected = [a.tolist() + [TOK.eot_id] for a in TOK.encode_arrays(TEXTS * 4)]
    got = []
    for s in shards:
        (tmp_path / f"{s.name}.idx").write_bytes(s.index)
        (tmp_path / f"{s.name}.bin").write_bytes(s.data)
        version, code, lengths, pointers, docs = read_idx_like_megatron(tmp_path / f"{s.name}.idx")
        assert (version, code) == (1, 4)  # int32: cl100k needs more than 16 bits
        assert docs.tolist() == list(range(len(lengths) + 1))
        data = np.memmap(tmp_path / f"{s.name}.bin", dtype=np.int32, mode="r")
        got += [data[p // 4 : p // 4 + n].tolist() for p, n in zip(pointers, lengths)]
    assert got == expected  # every document, in order, each followed by EOT
    small = megatron.read_index(megatron.index_bytes(np.array([3, 2]), megatron.optimal_dtype(50257)))
    assert small.dtype == np.dtype("<u2") and small.pointers.tolist() == [0, 6]  # uint16 (code 8) for gpt2-size


@pytest.mark.parametrize("vocab", [2000, TOK.vocab_size])  # uint16 and int32 shards
@pytest.mark.parametrize("shard_tokens", [1, 4, 7, 12, 1000])
def test_packing_cuts_shards_by_the_rule_across_and_inside_batches(vocab, shard_tokens):
    sizes = [[3, 0, 5], [], [11], [0, 0, 2, 6, 1], [4]]  # empty batches and documents, one longer than most shards
    ids, next_id = [], 0
    for batch in sizes:
        ids.append([np.arange(next_id, next_id + n, dtype=np.uint32) % (vocab - 1) for n in batch])
        next_id += sum(batch)
    shards = list(tokenize_docs(iter(ids), vocab - 1, vocab, shard_tokens))
    lengths = np.array([n + 1 for batch in sizes for n in batch])
    assert [len(s.lengths) for s in shards] == shard_sizes(lengths, shard_tokens)
    assert [s.name for s in shards] == [f"shard-{k:05d}" for k in range(len(shards))]
    assert all(s.lengths.sum() <= shard_tokens or len(s.lengths) == 1 for s in shards)
    dtype = megatron.optimal_dtype(vocab)
    stream = np.concatenate([x for batch in ids for a in batch for x in (a, [vocab - 1])]).astype(dtype)
    assert b"".join(s.data for s in shards) == stream.tobytes()  # every id, in order, each document then its EOT
    for s in shards:
        index = megatron.read_index(s.index)
        assert index.dtype == dtype and np.array_equal(index.lengths, s.lengths)
        assert megatron.check_shard(index, len(s.data)) == []
    assert list(tokenize_docs(iter([[], []]), 1, vocab, 10))[0].lengths.size == 0  # no document: one empty shard


def test_verify_detects_corruption_and_ids_out_of_range():
    shards = build(TEXTS, shard_tokens=10_000)
    files = {f"{s.name}.{ext}": getattr(s, attr) for s in shards for ext, attr in (("bin", "data"), ("idx", "index"))}
    facts = verify_shards(manifest_for(shards), files.__getitem__)
    assert facts["index_ok"] and facts["ids_in_range"], facts["problems"]
    data = bytearray(files["shard-00000.bin"])
    data[-4:] = struct.pack("<i", 7)  # the last EOT overwritten
    broken = {**files, "shard-00000.bin": bytes(data)}
    facts = verify_shards(manifest_for(shards), broken.__getitem__)
    assert not facts["index_ok"] and "EOT" in facts["problems"] and "checksum" in facts["problems"]
    idx = bytearray(files["shard-00000.idx"])
    idx[34:38] = struct.pack("<i", 1)  # first sequence length wrong
    facts = verify_shards(manifest_for(shards), {**files, "shard-00000.idx": bytes(idx)}.__getitem__)
    assert not facts["index_ok"] and "pointers" in facts["problems"]
    assert not verify_shards(manifest_for(shards, vocab=1000), files.__getitem__)["ids_in_range"]
    with pytest.raises(megatron.MegatronIndexError):
        megatron.read_index(b"NOTMEGA" + bytes(40))


def test_sample_decodes_back_to_text_and_a_mismatch_is_found():
    texts = TEXTS * 3
    shards = build(texts, shard_tokens=200)
    files = {f"{s.name}.{ext}": getattr(s, attr) for s in shards for ext, attr in (("bin", "data"), ("idx", "index"))}
    docs = pl.DataFrame({"doc_id": [str(i) for i in range(len(texts))], "source": "s", "component": "s", "epoch": 0})
    documents = documents_frame(docs, manifest_for(shards)["shards"], [s.lengths for s in shards])
    assert documents["n_tokens"].to_list() == [len(a) for a in TOK.encode_arrays(texts)]
    m = manifest_for(shards)
    assert decode_sample(m, documents, pl.Series(texts), files.__getitem__, TOK.decode, k=len(texts)) == []
    wrong = pl.Series(texts[:4] + ["something else"] + texts[5:])
    assert decode_sample(m, documents, wrong, files.__getitem__, TOK.decode, k=len(texts)) == [4]
    assert json.dumps(m)  # the manifest is plain JSON


# --- tokenizer.json files (Hugging Face `tokenizers`), made offline in tests/core/tokenizer_files.py ---


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> TokenizerResource:
    """The small BPE (2,000 ids, `</s>` = 1) as the recipe would name it: a tokenizer.json by path."""
    path = tmp_path_factory.mktemp("tok") / "bpe.json"
    path.write_text(small_bpe_json())
    return TokenizerResource(encoding=str(path))


@pytest.fixture(scope="module")
def cl100k_json(tmp_path_factory) -> TokenizerResource:
    path = tmp_path_factory.mktemp("tok") / "cl100k.json"
    path.write_text(tiktoken_json("cl100k_base"))
    return TokenizerResource(encoding=str(path))


def test_the_eos_of_a_tokenizer_json_is_what_its_post_processor_appends_else_a_known_special_name():
    def spec(*special, plain=(), processor=None):
        added = [{"content": t, "special": True} for t in special] + [{"content": t, "special": False} for t in plain]
        return {"added_tokens": added, "post_processor": processor}

    t5 = {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "</s>"}}]}
    llama3 = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {}}]}
    roberta = {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}
    assert tokenizer_json_eos(spec("<pad>", "</s>", processor=t5)) == "</s>"
    assert tokenizer_json_eos(spec("<s>", "</s>", processor={"type": "Sequence", "processors": [roberta]})) == "</s>"
    assert tokenizer_json_eos(spec("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", processor=llama3)) == (
        "<|end_of_text|>"  # Llama 3 base: the template only prepends BOS
    )
    assert tokenizer_json_eos(spec("<|im_end|>", "<|endoftext|>", processor={"type": "ByteLevel"})) == "<|endoftext|>"
    assert tokenizer_json_eos(spec("<bos>", "<eos>")) == "<eos>"  # Gemma
    assert tokenizer_json_eos(spec("[CLS]", plain=["</s>"])) is None  # a non-special `</s>` is text, not EOS
    assert tokenizer_json_eos({}) is None


def test_a_small_bpe_tokenizer_json_writes_uint16_shards_read_back_by_megatrons_reader(tmp_path, bpe):
    texts = sample_texts(("web",))[:120] + TEXTS + ["<s> and </s> are text here"]
    assert (bpe.vocab_size, bpe.eot_id, bpe.sha256) == (
        2000,
        1,
        hashlib.sha256(Path(bpe.encoding).read_bytes()).hexdigest(),
    )
    encoded = bpe.encode_arrays(texts)
    assert [a.tolist() for a in encoded] == [bpe.enc.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    assert not ({0, 1} & set(np.concatenate(encoded).tolist()))  # no BOS from the template, special text is text
    assert [bpe.decode(a) for a in encoded] == texts  # byte-level: every text round-trips
    docs = pl.DataFrame({"text": texts})
    shards = list(tokenize_docs(map(bpe.encode_arrays, text_batches(docs, 16)), bpe.eot_id, bpe.vocab_size, 5000))
    assert len(shards) > 2
    got = []
    for s in shards:
        (tmp_path / f"{s.name}.idx").write_bytes(s.index)
        (tmp_path / f"{s.name}.bin").write_bytes(s.data)
        version, code, lengths, pointers, _ = read_idx_like_megatron(tmp_path / f"{s.name}.idx")
        assert (version, code) == (1, 8)  # uint16: 2,000 ids < 65,500 (Megatron's DType.optimal_dtype)
        data = np.memmap(tmp_path / f"{s.name}.bin", dtype=np.uint16, mode="r")
        assert pointers.tolist() == (2 * (np.cumsum(lengths) - lengths)).tolist()
        got += [data[p // 2 : p // 2 + n].tolist() for p, n in zip(pointers, lengths)]
    assert got == [a.tolist() + [1] for a in encoded]
    manifest = {**manifest_for(shards, vocab=bpe.vocab_size), "eot_id": bpe.eot_id}
    files = {f"{s.name}.{ext}": getattr(s, attr) for s in shards for ext, attr in (("bin", "data"), ("idx", "index"))}
    facts = verify_shards(manifest, files.__getitem__)
    assert facts["index_ok"] and facts["ids_in_range"] and facts["max_id"] < 2000, facts["problems"]
    frame = docs.with_columns(doc_id=pl.int_range(pl.len()).cast(pl.String), source=pl.lit("s"), component=pl.lit("s"))
    documents = documents_frame(frame.with_columns(epoch=0), manifest["shards"], [s.lengths for s in shards])
    assert decode_sample(manifest, documents, docs["text"], files.__getitem__, bpe.decode, k=len(texts)) == []


def test_cl100k_as_a_tokenizer_json_gives_tiktokens_ids(cl100k_json):
    texts = sample_texts() + TEXTS + ["1999 12345678 3.14159", "don't I'LL WE'VE", "  \n\n  x   ", "a\r\n\r\nb"]
    texts += ["\t\x0b\x0c\u00a0\u2003 x \u0085 y\u2028z", "lone surrogate \ud800 here"]
    assert (cl100k_json.vocab_size, cl100k_json.eot_id) == (TOK.vocab_size, TOK.eot_id) == (100277, 100257)
    for threads in (1, 2):  # one text at a time (a Ray task) and the library's batch
        ours = cl100k_json.model_copy(update={"num_threads": threads}).encode_arrays(texts)
        assert all(np.array_equal(a, b) for a, b in zip(ours, TOK.encode_arrays(texts), strict=True))
    assert [cl100k_json.decode(a) for a in ours[:50]] == texts[:50]
