"""Cross-source dedup assets (steps/dedup.py, steps/deduped.py, steps/decontam_index.py): signatures per source
(map), one ledger over all (reduce), the eval sets' n-gram index, the ledger and the index applied per source;
materialized against a stand-in `filtered`. (The engines: tests/core/test_dedup.py, test_minhash.py,
test_decontam.py.)"""

import itertools
import json
import shutil

import dagster as dg
import polars as pl
import pytest
import yaml

from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.config.errors import ConfigError
from curation_assets.config.versions import asset_versions
from curation_assets.core.dedup import signatures
from curation_assets.core.frames import StepOutput, empty_frame, row_ranges
from curation_assets.steps import decontam_index, dedup, deduped
from curation_assets.steps.common import source_partitions
from resources import build_resources
from tests.helpers import FIXTURES, local_settings

ARTICLE = (
    "Near duplicate detection compares documents by the sets of word sequences they contain. Every document is cut "
    "into overlapping windows of five words, each window is hashed, and a compact signature keeps the smallest hash "
    "value under many random permutations. Two signatures agree in a given position with a probability equal to the "
    "Jaccard similarity of the underlying sets, so banding the signature lets an index propose candidate pairs."
)
DOCS = {
    "books": [
        ("b1", ARTICLE),
        ("b2", "A fortune: the early bird gets the worm, the second mouse gets the cheese."),
        ("b3", ARTICLE.upper()),
    ],  # b3: exact duplicate within books
    "code": [
        ("c1", "def main():\n    return compute(values, weights, bias) + offset  # entry point"),
        ("c2", ARTICLE.replace("compact", "small")),
    ],  # near duplicate of a books document
    "web": [("a0", ARTICLE.replace("hashed", "digested")), ("w2", "Welcome to the handbook index page.")],
}


def filtered_stub() -> dg.AssetsDefinition:
    @dg.asset(partitions_def=source_partitions, name="filtered")
    def filtered(context: dg.AssetExecutionContext):
        rows = DOCS[context.partition_key]
        docs = pl.DataFrame(
            {"doc_id": [r[0] for r in rows], "source": context.partition_key, "text": [r[1] for r in rows]}
        )
        return StepOutput(
            kept=docs,
            dropped=empty_frame({"drop_reason": pl.String()}),
            rows_in=docs.height,
            bytes_in=0,
            config_version="stub",
        )

    return filtered


def current(resources: dict, asset: str, partition: str | None = None, dropped: bool = False) -> pl.DataFrame:
    """The kept (or dropped) rows of the current version of `asset`, read through the IO manager (its layout)."""
    return resources["io_manager"].scan(dg.AssetKey(asset), partition, dropped).collect()


def test_signature_parts_gather_the_task_frames_in_order_up_to_the_part_size():
    """dedup_signatures' tasks are filtered's row ranges by text (`core.frames.row_ranges`, as filtered's); their
    signature frames are stored in parts of at most SIGNATURE_PART_ROWS rows, in row order, each holding whole
    tasks, and together they are the signatures of the source in one piece."""
    docs = pl.DataFrame({"doc_id": [f"d{i:02d}" for i in range(25)], "text": [ARTICLE[: 40 * i] for i in range(25)]})
    params = load_config().dedup_params
    ranges = row_ranges(docs["text"].str.len_bytes(), 4, 3 * len(ARTICLE))
    frames = [dedup.signature_task(dedup.SignatureTask(docs.slice(s, n), params, "web"))[0][0] for s, n in ranges]
    parts = list(dedup.stored_parts(frames, 10))
    assert len(frames) > len(parts) > 2 and all(p.height <= 10 for p in parts)
    heights = [f.height for f in frames]  # each part ends where a task's frame ends
    assert all(sum(p.height for p in parts[: k + 1]) in itertools.accumulate(heights) for k in range(len(parts)))
    assert pl.concat(parts).equals(pl.concat(list(signatures(docs, params, source="web"))))
    assert [p.height for p in dedup.stored_parts([docs.head(12), docs.head(3)], 10)] == [12, 3]  # larger: alone


def test_adding_a_source_recomputes_only_its_signatures_and_the_clusters(tmp_path):
    assert load_config().dedup_params.priority == tuple(load_config().source_names)  # the default
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    thresholds["deduped"]["default"] = {"priority": ["books", "code", "web"]}
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    cfg = load_config(thresholds=tmp_path / "thresholds.yaml")
    tmp_path = tmp_path / "data"
    assets = [
        filtered_stub(),
        *dedup.build_signatures(cfg, "s1"),
        *dedup.build_clusters(cfg, "c1"),
        *decontam_index.build(cfg, "i1"),
        *deduped.build(cfg, "d1"),
    ]
    resources = build_resources(local_settings(data_root=str(tmp_path)), cfg.costs.model_dump())  # as the definitions
    sigs_of = {}
    with dg.instance_for_test() as instance:

        def materialize(selection: list[str], partition: str | None = None):
            return dg.materialize(
                assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            )

        instance.add_dynamic_partitions("source", ["books", "code"])
        for source in ("books", "code"):
            assert materialize(["filtered", "dedup_signatures"], source).success
            sigs_of[source] = (tmp_path / "dedup_signatures" / source / "_latest.json").read_text()
        assert materialize(["dedup_clusters"]).success
        first = current(resources, "dedup_clusters")

        instance.add_dynamic_partitions("source", ["web"])  # a new source arrives
        assert materialize(["filtered", "dedup_signatures"], "web").success
        result = materialize(["dedup_clusters"])
        assert result.success
        for source in ("books", "code"):  # stored signatures reused, not recomputed
            assert (tmp_path / "dedup_signatures" / source / "_latest.json").read_text() == sigs_of[source]
            flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("dedup_signatures"), asset_partitions=[source])
            assert len(instance.fetch_materializations(flt, limit=10).records) == 1
        ledger = current(resources, "dedup_clusters")
        md = result.asset_materializations_for_node("dedup_clusters")[0].metadata
        details = md["details"].value
        assert (details["removed_exact"], details["removed_near"], details["removed_cross_source"]) == (1, 2, 2)
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"removal_rate": True, "no_cross_zone_bytes": True}

        # the ledger: one cluster, kept in books (first in the priority order), with the estimated Jaccard
        assert ledger.select("doc_id", "source", "kept", "kept_doc_id", "drop_reason").sort("doc_id").rows() == [
            ("a0", "web", False, "b1", "near_duplicate"),
            ("b1", "books", True, "b1", None),
            ("b3", "books", False, "b1", "exact_duplicate"),
            ("c2", "code", False, "b1", "near_duplicate"),
        ]
        assert ledger.filter(pl.col("doc_id") == "b3")["jaccard"].item() == 1.0
        assert first.filter(~pl.col("kept"))["doc_id"].sort().to_list() == ["b3", "c2"]

        # running the clustering again gives the identical ledger; deduped applies it per source
        assert materialize(["decontam_index"]).success  # no eval sets: an empty index, nothing contaminated
        assert materialize(["dedup_clusters"]).success
        assert current(resources, "dedup_clusters").equals(ledger)
        for source, kept in (("books", ["b1", "b2"]), ("code", ["c1"]), ("web", ["w2"])):
            assert materialize(["deduped"], source).success
            assert sorted(current(resources, "deduped", source)["doc_id"]) == kept


# --- decontamination: the eval sets' n-gram index, applied by deduped -----------------------------------------------
QA = [json.loads(line)["question"] for line in (FIXTURES / "eval_set.jsonl").read_text().splitlines()]


def eval_config(tmp_path, text_field: str = "question", min_items: int = 1):
    """The bundled thresholds + the fixture eval set as `evals/qa.jsonl`, named relative to the thresholds file."""
    (tmp_path / "evals").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "eval_set.jsonl", tmp_path / "evals" / "qa.jsonl")
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    eval_set = {"name": "sample_qa", "paths": ["evals/*.jsonl"], "text_field": text_field}
    thresholds["decontam_index"]["default"] = {"eval_sets": [eval_set], "min_items": min_items}
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    return load_config(thresholds=tmp_path / "thresholds.yaml")


def decontam_assets(cfg) -> list:
    return [
        filtered_stub(),
        *dedup.build_signatures(cfg, "s1"),
        *dedup.build_clusters(cfg, "c1"),
        *decontam_index.build(cfg, "i1"),
        *deduped.build(cfg, "d1"),
    ]


def test_deduped_drops_documents_sharing_an_ngram_with_an_eval_set_and_names_set_and_ngram(tmp_path, monkeypatch):
    cfg = eval_config(tmp_path)
    # web gets one page that quotes the first eval item's opening words (case and punctuation changed)
    leak = "Our favourite quote, word for word: " + QA[0].upper().replace(",", "") + " Thanks for reading."
    monkeypatch.setitem(DOCS, "web", [*DOCS["web"], ("w3", leak)])
    resources = build_resources(local_settings(data_root=str(tmp_path / "data")), cfg.costs.model_dump())
    assets = decontam_assets(cfg)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["web"])

        def materialize(selection: list[str], partition: str | None = None):
            return dg.materialize(
                assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            )

        index = materialize(["decontam_index"])
        assert index.success
        md = index.asset_materializations_for_node("decontam_index")[0].metadata
        details = md["details"].value
        # 18 items of at least 13 words indexed, the two short questions dropped with their reason
        assert (md["rows_in"].value, md["rows_out"].value) == (20, 18)
        assert details["drops"] == {"shorter_than_ngram": 2}
        assert details["indexed_items"] == {"sample_qa": 18} and details["files"]["sample_qa"][0].endswith("qa.jsonl")
        assert {c.check_name: c.passed for c in index.get_asset_check_evaluations()}["eval_sets_indexed"]
        rows = current(resources, "decontam_index")
        assert rows["item"].to_list() == [i for i in range(20) if len(QA[i].split()) >= 13]

        assert materialize(["filtered", "dedup_signatures"], "web").success
        assert materialize(["dedup_clusters"]).success
        run = materialize(["deduped"], "web")
        assert run.success
        assert sorted(current(resources, "deduped", "web")["doc_id"]) == ["a0", "w2"]
        dropped = current(resources, "deduped", "web", dropped=True)
        (ledger,) = dropped.select("doc_id", "drop_reason", "eval_set", "eval_ngram").rows()
        words = QA[0].lower().replace(",", "").split()
        assert ledger == ("w3", "contaminated", "sample_qa", " ".join(words[:13]))
        assert run.asset_materializations_for_node("deduped")[0].metadata["details"].value["drops"] == {
            "contaminated": 1
        }


def test_editing_an_eval_file_changes_the_index_version_and_nothing_else(tmp_path):
    cfg = eval_config(tmp_path)
    assert asset_versions(cfg) == asset_versions(eval_config(tmp_path))  # the same files: the same versions
    with open(tmp_path / "evals" / "qa.jsonl", "a") as f:
        f.write(json.dumps({"question": "A brand new question added to the evaluation set after the index was built?"}))
    before, after = asset_versions(cfg), asset_versions(load_config(thresholds=tmp_path / "thresholds.yaml"))
    assert {k for k in before if before[k] != after[k]} == {"decontam_index"}
    # and without eval sets, the bundled config's index has a version of its own that no eval file moves
    assert asset_versions(load_config())["decontam_index"] not in (before["decontam_index"], after["decontam_index"])


def test_a_wrong_text_field_fails_the_blocking_check_and_deduped_refuses_the_index(tmp_path):
    cfg = eval_config(tmp_path, text_field="prompt")  # every record lacks it
    resources = build_resources(local_settings(data_root=str(tmp_path / "data")), cfg.costs.model_dump())
    assets = decontam_assets(cfg)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["books"])
        index = dg.materialize(
            assets, selection=["decontam_index"], instance=instance, resources=resources, raise_on_error=False
        )
        assert not index.success  # the check is blocking: the run fails, the index is persisted for inspection
        (check,) = [c for c in index.get_asset_check_evaluations() if c.check_name == "eval_sets_indexed"]
        assert not check.passed
        assert check.metadata["sets_below_min_items"].value == "sample_qa"
        assert check.metadata["unreadable_item"].value == 20
        for selection in (["filtered", "dedup_signatures"], ["dedup_clusters"]):
            partition = "books" if "filtered" in selection else None
            assert dg.materialize(
                assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            ).success
        run = dg.materialize(
            assets,
            selection=["deduped"],
            partition_key="books",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not run.success
        (failure,) = [e for e in run.all_events if e.is_step_failure]
        assert "decontam_index failed its blocking check ['eval_sets_indexed']" in str(failure.step_failure_data.error)


def test_an_eval_set_path_that_matches_nothing_is_a_config_error(tmp_path):
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    thresholds["decontam_index"]["default"] = {
        "eval_sets": [{"name": "mmlu", "paths": ["evals/mmlu-*.jsonl", "s3://bucket/arc.jsonl"]}]
    }
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    with pytest.raises(ConfigError) as e:
        load_config(thresholds=tmp_path / "thresholds.yaml")
    missing, url = e.value.problems
    assert missing.startswith(f"{tmp_path / 'thresholds.yaml'}: decontam_index.default.eval_sets[0].paths[0]: ")
    assert f"matches no file (resolved: '{tmp_path}/evals/mmlu-*.jsonl')" in missing
    assert "eval_sets[0].paths[1]: 's3://bucket/arc.jsonl': eval sets are local files" in url
