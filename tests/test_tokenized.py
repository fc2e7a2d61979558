import numpy as np
import polars as pl

from curation_assets.tokenized import tokenize_docs, verify
from resources.tokenizer import TokenizerResource


def test_token_stream_and_index_agree_with_tiktoken_cl100k():
    tok = TokenizerResource()
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "source": ["s"] * 3, "epoch": [0, 0, 0],
                         "text": ["hello world", "", "<|endoftext|> is plain text here"]})
    tokens, index = tokenize_docs(docs, tok.encode_batch, tok.eot_id, tok.vocab_size)
    assert tokens.dtype == np.dtype("<u4")  # cl100k has 100 277 ids: does not fit 16 bits
    assert tokens[:3].tolist() == [15339, 1917, tok.eot_id]
    assert index["n_tokens"].to_list() == [2, 0, len(tok.encode_batch([docs["text"][2]])[0])]
    assert index["offset"].to_list() == [0, 3, 4]
    assert tok.eot_id not in tokens[4:-1].tolist()  # special tokens in text are never encoded as control ids
    facts = verify(tokens, index, tok.eot_id)
    assert facts["tokens_in_data"] == facts["tokens_in_index"] and facts["spans_end_in_eot"]


def test_verify_detects_a_corrupted_index():
    tokens = np.array([5, 6, 99, 7, 99], dtype="<u4")
    index = pl.DataFrame({"doc_id": ["a", "b"], "offset": pl.Series([0, 3], dtype=pl.UInt64),
                          "n_tokens": pl.Series([2, 2], dtype=pl.UInt32)})
    facts = verify(tokens, index, eot_id=99)
    assert facts["tokens_in_index"] == 6 != facts["tokens_in_data"]
    assert not facts["spans_end_in_eot"]
