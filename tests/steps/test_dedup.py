"""Cross-source dedup assets (steps/dedup.py, steps/deduped.py): signatures per source (map), one ledger over all
(reduce), the ledger applied per source; materialized against a stand-in `filtered`. (The engine:
tests/core/test_dedup.py, test_minhash.py.)"""

import dagster as dg
import polars as pl
import yaml

from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.core.frames import StepOutput, empty_frame
from curation_assets.steps import dedup, deduped
from curation_assets.steps.common import source_partitions
from resources import build_resources
from tests.helpers import local_settings

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
        first = pl.read_parquet(tmp_path / "dedup_clusters/_all/*/part-*.parquet")

        instance.add_dynamic_partitions("source", ["web"])  # a new source arrives
        assert materialize(["filtered", "dedup_signatures"], "web").success
        result = materialize(["dedup_clusters"])
        assert result.success
        for source in ("books", "code"):  # stored signatures reused, not recomputed
            assert (tmp_path / "dedup_signatures" / source / "_latest.json").read_text() == sigs_of[source]
            flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("dedup_signatures"), asset_partitions=[source])
            assert len(instance.fetch_materializations(flt, limit=10).records) == 1
        ledger = pl.read_parquet(
            f"{tmp_path}/dedup_clusters/_all/{result.asset_materializations_for_node('dedup_clusters')[0].metadata['uri'].value.rsplit('/', 1)[1]}/part-*.parquet"
        )
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
        again = materialize(["dedup_clusters"])
        uri = again.asset_materializations_for_node("dedup_clusters")[0].metadata["uri"].value
        assert pl.read_parquet(f"{uri}/part-*.parquet").equals(ledger)
        for source, kept in (("books", ["b1", "b2"]), ("code", ["c1"]), ("web", ["w2"])):
            run = materialize(["deduped"], source)
            assert run.success
            uri = run.asset_materializations_for_node("deduped")[0].metadata["uri"].value
            assert sorted(pl.read_parquet(f"{uri}/part-*.parquet")["doc_id"]) == kept
