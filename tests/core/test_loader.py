"""The offline/online dial: pre-tokenized shards and on-the-fly tokenization yield the same sequences."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation_assets.core import megatron
from curation_assets.core.loader import OfflineSource, OnlineSource, sequences
from curation_assets.core.readers import detect_format, read_shard
from curation_assets.core.tokens import text_batches, tokenize_docs
from resources.tokenizer import TokenizerResource
from tests.core.tokenizer_files import small_bpe_json, tiktoken_json

SAMPLE = Path(__file__).resolve().parents[2] / "curation_assets" / "sample"
TOK = TokenizerResource()


@pytest.fixture(scope="module")
def mixture() -> pl.DataFrame:
    """Real documents (bundled books + code sample) in a shuffled 'mixture order' with their n_tokens."""
    frames = []
    for p in sorted(SAMPLE.glob("books/*")) + sorted(SAMPLE.glob("code/*")):
        with open(p, "rb") as f:
            frames.append(read_shard(f, fmt=detect_format(p.name), source=p.parent.name, shard=p.name).docs)
    docs = pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=3).head(300)
    return docs.with_columns(pl.Series("n_tokens", TOK.count_tokens(docs["text"].to_list()), dtype=pl.Int64))


def shards_of(mixture: pl.DataFrame, tok: TokenizerResource, out: Path) -> OfflineSource:
    """The mixture as `tokenized` writes it (shards of 20,000 tokens, the manifest's dtype), read back offline."""
    shards = []
    for s in tokenize_docs(map(tok.encode_arrays, text_batches(mixture, 64)), tok.eot_id, tok.vocab_size, 20_000):
        (out / f"{s.name}.bin").write_bytes(s.data)
        (out / f"{s.name}.idx").write_bytes(s.index)
        shards.append(s.manifest_entry())
    dtype = megatron.optimal_dtype(tok.vocab_size).str
    (out / "manifest.json").write_text(json.dumps({"dtype": dtype, "shards": shards}))
    files = {p.name: str(p) for p in out.iterdir()}
    return OfflineSource(files, lambda uri: Path(uri).read_bytes())


@pytest.fixture(scope="module")
def offline(mixture, tmp_path_factory) -> OfflineSource:
    return shards_of(mixture, TOK, tmp_path_factory.mktemp("tokenized"))


@pytest.fixture(scope="module")
def online(mixture) -> OnlineSource:
    return OnlineSource(mixture.select("text", "n_tokens"), TOK.encode_arrays, TOK.eot_id, batch=50)


def collect(mode, src, **kw):
    return list(sequences(mode, seq_len=kw.pop("seq_len", 512), **{mode: src}, **kw))


def test_offline_and_online_yield_token_identical_sequences(offline, online, mixture):
    assert len(offline.manifest["shards"]) > 5  # windows cross shard boundaries
    off, on = collect("offline", offline), collect("online", online)
    assert [i for i, _ in off] == list(range(len(off))) and len(off) > 500
    assert len(off) == len(on) and all(np.array_equal(a, b) for (_, a), (_, b) in zip(off, on))
    stream = np.concatenate([np.append(a, TOK.eot_id) for a in TOK.encode_arrays(mixture["text"].to_list())])
    assert len(off) == stream.size // 512
    assert all(np.array_equal(seq, stream[i * 512 : (i + 1) * 512]) for i, seq in off)


def test_resume_from_a_position_continues_exactly(offline, online):
    full = collect("offline", offline)
    for mode, src in (("offline", offline), ("online", online)):
        resumed = collect(mode, src, start=137)
        assert [i for i, _ in resumed] == [i for i, _ in full[137:]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(resumed, full[137:]))


def test_data_parallel_ranks_partition_the_sequences(offline, online):
    full = dict(collect("offline", offline, seq_len=1024))
    for mode, src in (("offline", offline), ("online", online)):
        ranks = [collect(mode, src, seq_len=1024, rank=r, world_size=3, start=10) for r in range(3)]
        seen = [i for r in ranks for i, _ in r]
        assert sorted(seen) == [i for i in full if i >= 10] and len(seen) == len(set(seen))
        assert all(i % 3 == r for r, part in enumerate(ranks) for i, _ in part)
        assert all(np.array_equal(seq, full[i]) for part in ranks for i, seq in part)


def test_online_refuses_counts_from_another_tokenizer(mixture):
    wrong = mixture.select("text", (pl.col("n_tokens") + 1).alias("n_tokens"))
    with pytest.raises(ValueError, match="different tokenizer"):
        collect("online", OnlineSource(wrong, TOK.encode_arrays, TOK.eot_id))
    with pytest.raises(ValueError):
        collect("offline", None)


def test_a_tokenizer_json_online_is_token_identical_to_its_uint16_shards(mixture, tmp_path):
    (tmp_path / "bpe.json").write_text(small_bpe_json())
    bpe = TokenizerResource(encoding=str(tmp_path / "bpe.json"))
    # n_tokens as raw counts them: with the recipe's tokenizer
    counted = mixture.with_columns(pl.Series("n_tokens", bpe.count_tokens(mixture["text"].to_list()), pl.Int64))
    offline = shards_of(counted, bpe, tmp_path)
    assert offline.manifest["dtype"] == "<u2" and len(offline.manifest["shards"]) > 5
    online = OnlineSource(counted.select("text", "n_tokens"), bpe.encode_arrays, bpe.eot_id, batch=50)
    off, on = collect("offline", offline, seq_len=256), collect("online", online, seq_len=256)
    assert len(off) == len(on) > 500 and all(i == j and np.array_equal(a, b) for (i, a), (j, b) in zip(off, on))
    stream = np.concatenate([np.append(a, bpe.eot_id) for a in bpe.encode_arrays(mixture["text"].to_list())])
    assert all(np.array_equal(seq, stream[i * 256 : (i + 1) * 256]) for i, seq in off)
    for mode, src in (("offline", offline), ("online", online)):  # resumed, on rank 1 of 2
        part = collect(mode, src, seq_len=256, start=137, rank=1, world_size=2)
        assert [i for i, _ in part] == [i for i, _ in off if i >= 137 and i % 2 == 1]
        assert all(np.array_equal(seq, dict(off)[i]) for i, seq in part)
    with pytest.raises(ValueError, match="different tokenizer"):  # cl100k's counts are not this tokenizer's
        collect("online", OnlineSource(mixture.select("text", "n_tokens"), bpe.encode_arrays, bpe.eot_id))


def test_cl100k_as_a_tokenizer_json_online_yields_the_tiktoken_shards_sequences(offline, mixture, tmp_path):
    (tmp_path / "cl100k.json").write_text(tiktoken_json("cl100k_base"))
    cl100k = TokenizerResource(encoding=str(tmp_path / "cl100k.json"))
    online = OnlineSource(mixture.select("text", "n_tokens"), cl100k.encode_arrays, cl100k.eot_id, batch=50)
    off, on = collect("offline", offline), collect("online", online)
    assert len(off) == len(on) > 500 and all(np.array_equal(a, b) for (_, a), (_, b) in zip(off, on))
