"""core/dedup.py: exact and near duplicates, the keep rule (source priority, then smallest doc_id), the params and
the planted duplicates of the shared corpus. (Signatures and the hash scheme: test_minhash.py.)"""

import hashlib
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from benchmarks.dedup_eval import read_shard, score, source_shards
from curation_assets.core.dedup import DedupParams, cluster, dedup_docs, signatures
from curation_assets.core.frames import parquet_bytes
from curation_assets.steps.dedup import cluster_parts
from resources.engine import RayEngine
from resources.scratch import Scratch
from resources.store import ObjectStore
from tests.background import background, workers
from tests.helpers import find_shared_corpus

ARTICLE = (
    "Near duplicate detection compares documents by the sets of word sequences they contain. Every document is cut "
    "into overlapping windows of five words, each window is hashed, and a compact signature keeps the smallest hash "
    "value under many random permutations. Two signatures agree in a given position with a probability equal to the "
    "Jaccard similarity of the underlying sets, so banding the signature lets an index propose candidate pairs "
    "without comparing every document against every other one. Candidates are then verified exactly, clustered with "
    "a union find structure, and only the first member of each cluster survives into the training mixture."
)


def in_process_tasks():
    """`cluster_parts`' task runner with the same task functions Ray runs, in this process (`RayEngine(workers=0)`)."""
    engine = RayEngine(workers=0, state_dir="unused")
    return lambda fn, items, labels, progress: engine.map(fn, items, labels, progress=progress)


def dedup(texts: list[str], **params) -> list[tuple[str, str | None, str | None]]:
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    return dedup_docs(docs, DedupParams(**params)).select("doc_id", "dup_cluster", "drop_reason").rows()


def edit_words(text: str, every: int) -> str:
    return " ".join("CHANGED" if i % every == every // 2 else w for i, w in enumerate(text.split()))


def test_exact_whitespace_case_and_near_copies_join_the_first_document():
    texts = [
        ARTICLE,
        "Something else entirely, with no relation to the first text at all.",
        ARTICLE,  # exact
        ARTICLE.replace(" ", "\t").replace(". ", ".\r\n\r\n") + "   \n",  # whitespace
        ARTICLE.upper(),  # case
        ARTICLE.replace("compact", "small"),  # one word edited: 5-gram Jaccard 0.90
        edit_words(ARTICLE, 4),  # a quarter of the words edited: Jaccard far below 0.8
    ]
    assert dedup(texts) == [
        ("d0", "d0", None),
        ("d1", None, None),
        ("d2", "d0", "exact_duplicate"),
        ("d3", "d0", "exact_duplicate"),
        ("d4", "d0", "exact_duplicate"),
        ("d5", "d0", "near_duplicate"),
        ("d6", None, None),
    ]


def test_the_smallest_doc_id_wins_whatever_the_row_order():
    rows = dedup([ARTICLE.replace("compact", "small"), ARTICLE, ARTICLE.lower()])
    assert rows == [("d0", "d0", None), ("d1", "d0", "near_duplicate"), ("d2", "d0", "exact_duplicate")]
    docs = pl.DataFrame({"doc_id": ["b", "a", "c"], "text": [ARTICLE, ARTICLE.replace("compact", "small"), "other"]})
    out = dedup_docs(docs, DedupParams())
    assert out.select("doc_id", "dup_cluster", "drop_reason").rows() == [
        ("b", "a", "near_duplicate"),
        ("a", "a", None),
        ("c", None, None),
    ]
    assert (
        dedup_docs(docs.reverse(), DedupParams()).sort("doc_id").equals(out.sort("doc_id"))
    )  # row order is irrelevant


def test_exact_copies_follow_their_representative_into_an_earlier_near_cluster():
    edited = ARTICLE.replace("compact", "small")
    rows = dedup([edited, "An unrelated note.", ARTICLE, ARTICLE])
    assert rows[2] == ("d2", "d0", "near_duplicate")
    assert rows[3] == ("d3", "d0", "exact_duplicate")


def test_short_texts_are_one_shingle_and_texts_without_words_never_near_match():
    rows = dedup(["Hello world", "hello, world!", "!!!", "???", ""])
    assert rows == [
        ("d0", "d0", None),
        ("d1", "d0", "near_duplicate"),  # same word sequence once punctuation is ignored
        ("d2", None, None),
        ("d3", None, None),
        ("d4", None, None),
    ]


def test_switches_change_what_counts_as_a_duplicate():
    texts = [ARTICLE, ARTICLE.upper(), ARTICLE.replace("compact", "small")]
    assert [r[2] for r in dedup(texts, normalize=False)] == [None, None, "near_duplicate"]
    assert [r[2] for r in dedup(texts, exact=False)] == [None, "near_duplicate", "near_duplicate"]
    assert [r[2] for r in dedup(texts, near=False)] == [None, "exact_duplicate", None]
    # 4 words edited: Jaccard 0.66. This pair is an LSH candidate (14x8 bands); the 0.8 check rejects it.
    loose = [ARTICLE, edit_words(ARTICLE, 25)]
    assert [r[2] for r in dedup(loose, threshold=None)] == [None, "near_duplicate"]
    assert [r[2] for r in dedup(loose)] == [None, None]


def test_params_validate_and_version_tracks_every_field():
    p = DedupParams()
    assert (p.num_perm, p.bands, p.rows, p.ngram, p.threshold) == (128, 16, 8, 5, 0.78)
    with pytest.raises(ValidationError):
        DedupParams(bands=20, rows=8)  # 160 > 128 permutations
    with pytest.raises(ValidationError):
        DedupParams(hashfunc="xxh64")
    with pytest.raises(ValidationError):
        DedupParams(unknown=1)
    assert p.version == DedupParams().version != DedupParams(seed=2).version
    assert p.signature_version == DedupParams(threshold=0.9, priority=("a",)).signature_version  # clustering-only
    assert p.signature_version != DedupParams(num_perm=256).signature_version


def test_sixteen_mib_texts_without_whitespace_are_bounded():
    big = "x" * (16 * 1024 * 1024)
    start = time.process_time()
    rows = dedup([big, big, big[:-1] + "y"])
    assert [r[2] for r in rows] == [None, "exact_duplicate", None]
    assert time.process_time() - start < 60  # CPU seconds of this process (not wall-clock: the machine is shared)


def test_hash_partitions_of_the_band_join_give_the_same_ledger():
    texts = [
        ARTICLE,
        ARTICLE.replace("compact", "small"),
        ARTICLE.upper(),
        "another text entirely",
        edit_words(ARTICLE, 30),
    ]
    sigs = pl.concat(
        list(signatures(pl.DataFrame({"doc_id": [f"d{i}" for i in range(5)], "text": texts}), DedupParams()))
    )
    one = cluster(sigs, DedupParams())
    assert one.height == 3 and cluster(sigs, DedupParams(), n_parts=7).equals(one)


def test_dedup_clusters_tasks_over_stored_parts_give_the_one_process_ledger_and_nothing_for_no_documents(tmp_path):
    """`steps/dedup.py: cluster_parts` (the tasks, here in this process) over an empty part and a part with exact and
    near copies, with more hash partitions than documents, equals `cluster`; no documents at all is an empty ledger."""
    docs = pl.DataFrame(
        {
            "doc_id": ["d0", "d1", "d2", "d3"],
            "source": ["web", "web", "books", "books"],
            "text": [ARTICLE, ARTICLE.upper(), ARTICLE.replace("compact", "small"), "unrelated"],
        }
    )
    params = DedupParams(priority=("books",), shuffle_docs=1)
    sigs = pl.concat(list(signatures(docs, params)))
    parts = [str(tmp_path / "empty.parquet"), str(tmp_path / "docs.parquet")]
    ObjectStore().write_bytes(parts[0], parquet_bytes(sigs.clear()))
    ObjectStore().write_bytes(parts[1], parquet_bytes(sigs))
    tasks = in_process_tasks()
    scratch = Scratch(str(tmp_path / "scratch"), None, "us-east-1")
    ledger, figures = cluster_parts(parts, 4, params, scratch, tasks, workers=1)
    assert figures["shuffle_partitions"] == 4 and ledger.equals(cluster(sigs, params))
    assert ledger.select("doc_id", "kept_doc_id", "drop_reason").rows() == [
        ("d2", "d2", None),
        ("d0", "d2", "near_duplicate"),
        ("d1", "d2", "exact_duplicate"),
    ]
    assert cluster_parts([], 0, params, scratch, tasks, workers=1)[0].is_empty()
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").rglob("*.parquet"))


def test_cross_source_priority_keeps_the_higher_priority_source():
    docs = pl.DataFrame(
        {
            "doc_id": ["a1", "z9", "m5"],
            "source": ["web", "books", "code"],
            "text": [ARTICLE, ARTICLE.replace("compact", "small"), "unrelated words in a code file"],
        }
    )
    sigs = pl.concat(list(signatures(docs, DedupParams())))
    ledger = cluster(sigs, DedupParams(priority=("books", "web")))
    assert ledger.select("doc_id", "kept", "kept_doc_id", "kept_source", "drop_reason").rows() == [
        ("z9", True, "z9", "books", None),
        ("a1", False, "z9", "books", "near_duplicate"),
    ]
    assert 0.8 < ledger["jaccard"][1] < 1.0
    assert cluster(sigs, DedupParams())["kept_doc_id"][0] == "a1"  # no priority: smallest doc_id


def planted_quality(corpus: str) -> dict:
    """Recall and precision of the dedup engine on the shared corpus's planted pairs, per source and across the text
    sources (a background job: tests/workers.py `call`)."""
    corpus = Path(corpus)
    params = DedupParams()
    planted = pl.read_csv(corpus / "truth" / "planted.csv")
    sigs, out = {}, {}
    for source in ("books", "code", "multilingual", "web"):
        sigs[source] = pl.concat(
            [
                sig
                for shard in source_shards(corpus, source)
                for batch in read_shard(shard, html=source == "web")
                for sig in signatures(batch, params)
            ]
        )
        out[source] = score(cluster(sigs[source], params), planted.filter(pl.col("source") == source))
    text_sources = pl.concat([sigs[s] for s in ("books", "code", "multilingual")])
    out["across"] = score(cluster(text_sources, params.model_copy(update={"priority": ("books", "code")})), planted)
    # every source at once, in one process and as dedup_clusters' tasks over stored parts of 1,000 signatures
    every = params.model_copy(update={"priority": ("web", "books")})
    single = cluster(pl.concat([sigs[s] for s in sorted(sigs)]), every)
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for source in sorted(sigs):
            for k, part in enumerate(sigs[source].iter_slices(1000)):
                parts.append(f"{tmp}/sigs/{source}-{k:03d}.parquet")
                ObjectStore().write_bytes(parts[-1], parquet_bytes(part))
        tasks = in_process_tasks()
        scratch = Scratch(f"{tmp}/scratch", None, "us-east-1")
        n_docs = sum(f.height for f in sigs.values())
        distributed, figures = cluster_parts(parts, n_docs, every, scratch, tasks, workers=5)
        out["scratch_left"] = sorted(str(p) for p in Path(tmp, "scratch").rglob("*"))
    out["single_csv_sha256"] = hashlib.sha256(single.write_csv().encode()).hexdigest()
    out["distributed_equal"] = distributed.equals(single)
    out["figures"] = {k: v for k, v in figures.items() if k != "phases"}
    return out


@background.job("planted_dedup", cost=30)
def _planted_dedup(tmp: Path) -> dict | None:
    corpus = find_shared_corpus()
    return None if corpus is None else workers.call(tmp, "tests.core.test_dedup:planted_quality", str(corpus))


@pytest.mark.background("planted_dedup")
def test_planted_duplicates_every_source_within_and_across_sources():
    """Acceptance: recall >= 0.95 at true Jaccard >= 0.85, precision >= 0.99 (false positive: true Jaccard < 0.7).
    Measured: books/code/multilingual recall 1.0 precision 1.0; web (Resiliparse main-content text) recall 1.0,
    1 false positive (an append_boilerplate copy: the extractor drops the boilerplate the truth's extraction keeps)."""
    quality = background.result("planted_dedup")
    if quality is None:
        pytest.skip("the shared development corpus (../shared/corpus) is not on this machine")
    for source in ("books", "code", "multilingual", "web"):
        q = quality[source]
        assert q["recall"] >= 0.95, (source, q)
        if source == "web":
            assert q["false_positives"] <= 1, q
        else:
            assert q["precision"] >= 0.99 and q["false_positives"] == 0, (source, q)
    q = quality["across"]
    assert q["pairs"] == 368 and q["positives"] == 175
    assert q["recall"] >= 0.95 * 148 / 175 and q["false_positives"] == 0, q  # web's 27 positives are not in this run


# sha256 of the CSV of the ledger over the four sources (priority web, books) written by the single-process
# implementation before dedup_clusters was distributed (commit 6ba5c36, `cluster_signatures` over one matrix): the
# distributed stages must keep it byte for byte.
LEDGER_BEFORE_SHUFFLE = "6aea815428b09ba4fb6e251ee79dfa5c53147f853bb3942fb662fa7a30b884b2"


@pytest.mark.background("planted_dedup")
def test_the_distributed_ledger_equals_the_single_process_ledger_byte_for_byte():
    """dedup_clusters' tasks (shuffle per stored part, band tasks per hash partition, two verification rounds per
    part, the reduce) over 16 parts of the shared corpus's signatures, 5 hash partitions, give the one-process
    ledger, which is still the one written before the shuffle existed; the scratch folder is gone afterwards."""
    quality = background.result("planted_dedup")
    if quality is None:
        pytest.skip("the shared development corpus (../shared/corpus) is not on this machine")
    assert quality["distributed_equal"] and quality["scratch_left"] == []
    assert quality["single_csv_sha256"] == LEDGER_BEFORE_SHUFFLE
    figures = quality["figures"]
    assert figures["shuffle_partitions"] == 5 and figures["verified_edges"] < figures["candidate_edges"] + 1000
    assert 0 < figures["edges_per_doc"] < 0.2, figures  # the reduce holds the edges, a few per duplicate only
