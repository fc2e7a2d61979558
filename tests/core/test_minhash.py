"""core/minhash.py: signatures equal datasketch's MinHash values for the same shingles; the hash scheme is pinned."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
from datasketch import LeanMinHash, MinHash, MinHashLSH

from curation_assets.core.dedup import DedupParams, signatures
from curation_assets.core.minhash import fmix64, minhash, normalize, permutations, shingle_hashes, word_hashes
from tests.core.test_dedup import ARTICLE, edit_words

ROOT = Path(__file__).resolve().parents[2]


def texts_for_signatures() -> list[str]:
    return [
        ARTICLE,
        ARTICLE.upper(),
        "Hello world",
        "",
        "!!!",
        "a b c d e",
        "Größe straße ΣΊΣΥΦΟΣ 東京都 ｆｕｌｌ ｗｉｄｔｈ",
        edit_words(ARTICLE, 7),
        "x" * 5000 + " tail words here and there",
    ]


def test_signatures_are_datasketch_minhash_hash_values_for_the_same_shingles():
    params = DedupParams()
    texts = texts_for_signatures()
    words, counts = word_hashes([normalize(t) for t in texts])
    hashes, owner = shingle_hashes(words, counts, params.ngram)
    ours = minhash(hashes, owner, len(texts), params.num_perm, params.seed)
    for i in range(len(texts)):
        ref = MinHash(num_perm=params.num_perm, seed=params.seed, hashfunc=int, scheme=params.scheme)
        ref.update_batch((hashes[owner == i] & np.uint64(0xFFFFFFFF)).tolist())
        assert np.array_equal(ref.hashvalues, ours[i]), texts[i][:20]
    assert list(counts) == [101, 101, 2, 0, 0, 5, 6, 101, 6]  # NFKC + casefold: ß -> ss, ｆｕｌｌ -> full
    # the stored frame carries the same values, and datasketch's LSH index accepts them as they are
    frame = pl.concat(
        list(signatures(pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts}), params))
    )
    assert np.array_equal(frame["sig"].to_numpy(), ours)
    lsh = MinHashLSH(num_perm=params.num_perm, params=(params.bands, params.rows))
    for doc_id, sig in zip(frame["doc_id"], frame["sig"].to_numpy()):
        lsh.insert(doc_id, LeanMinHash(seed=params.seed, hashvalues=sig, scheme=params.scheme))
    assert sorted(lsh.query(LeanMinHash(seed=params.seed, hashvalues=ours[0], scheme=params.scheme))) == ["d0", "d1"]


def test_permutations_are_datasketchs_without_importing_it():
    for num_perm, seed in ((128, 1), (256, 42), (9, 0), (1, 2**32 - 1)):
        a, b = MinHash(num_perm=num_perm, seed=seed, hashfunc=int, scheme="affine32").permutations
        ours = permutations(num_perm, seed)
        assert all(x.dtype == np.uint32 for x in ours)
        assert np.array_equal(ours[0], a) and np.array_equal(ours[1], b)
    clean = "import sys, curation_assets.core.minhash as m; m.permutations(128, 1); print('datasketch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", clean], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"  # a hashing worker does not pay datasketch's scipy import


def test_hash_scheme_is_pinned():
    words, _ = word_hashes(["the quick brown fox jumps over the lazy dog"])
    assert hex(int(words[0])) == "0xb6b0f34b49de314f" and words[0] == words[6]
    hashes, _ = shingle_hashes(words, np.array([9]), 5)
    assert hashes.size == 5 and hex(int(hashes[0])) == "0x3e9825ab8778ac9f"
    sig = minhash(hashes, np.zeros(5, np.int64), 1, 128, 1)
    assert sig.dtype == np.uint32 and sig[0, :4].tolist() == [386196382, 783760736, 960146351, 941380184]
    long_word, _ = word_hashes(["x" * 300])  # > 256 bytes: blake2b-64, then fmix64
    assert hex(int(long_word[0])) == hex(
        int(
            fmix64(
                np.array([int.from_bytes(hashlib.blake2b(b"x" * 300, digest_size=8).digest(), "little")], np.uint64)
            )[0]
        )
    )
