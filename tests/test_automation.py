"""Automation: landing-zone sensors (local and S3) register and ingest new sources and miss nothing; declarative
conditions make each step follow its upstream, and hold `filtered` and the mixture back behind failed blocking
checks."""

import os
import time
from datetime import datetime

import boto3
import dagster as dg
import polars as pl
import pytest
import yaml

from curation_assets.config import load_config
from curation_assets.config.settings import Settings
from curation_assets.defs import build_definitions
from curation_assets.defs.sensors import LANDING_TAG
from resources.store import ObjectStore


def defs_with_landing(tmp_path, uri: str) -> dg.Definitions:
    cfg = yaml.safe_load(open(load_config().sources_path))
    for s in cfg["sources"]:
        s["uris"] = [str(load_config().sources_path.parent / u) for u in s["uris"]]
    cfg["landing_zones"] = [{"name": "drop", "uri": uri, "licence": "test"}]
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return build_definitions(load_config(sources=path), Settings(data_root=str(tmp_path / "data")))


def tick(defs: dg.Definitions, instance, cursor, endpoint=None):
    sensor = defs.resolve_sensor_def("landing_drop")
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"store": ObjectStore(endpoint_url=endpoint)}
    )
    return sensor(ctx)


def evaluate(defs: dg.Definitions, instance, cursor=None):
    """One tick of the automation conditions. Dagster's condition cursors re-read the dynamic partitions for every
    subset they serialize (about 2,000 SQLite queries a tick, most of a test's time); they cannot change during a
    tick, so each name is read once per tick here."""
    read, seen = instance.get_dynamic_partitions, {}

    def once(partitions_def_name: str) -> list[str]:
        if partitions_def_name not in seen:
            seen[partitions_def_name] = read(partitions_def_name)
        return seen[partitions_def_name]

    instance.get_dynamic_partitions = once
    try:
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    finally:
        del instance.get_dynamic_partitions


def test_local_landing_zone_registers_new_sources_and_misses_nothing_written_in_the_same_second(tmp_path):
    zone = tmp_path / "landing"
    (zone / "news").mkdir(parents=True)
    (zone / "news" / "part-0.jsonl").write_text('{"id": "a", "text": "x"}\n')
    (zone / "Not A Source").mkdir()  # a folder whose name is no source name is never registered
    (zone / "Not A Source" / "part-0.jsonl").write_text('{"id": "z", "text": "x"}\n')
    defs = defs_with_landing(tmp_path, str(zone))
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, None)
        assert [r.partition_key for r in first.run_requests] == ["news"]
        assert first.run_requests[0].tags[LANDING_TAG] == "drop"
        assert list(first.dynamic_partitions_requests[0].partition_keys) == ["news"]
        instance.add_dynamic_partitions("source", ["news"])
        assert isinstance(tick(defs, instance, first.cursor), dg.SkipReason)  # re-listed in the overlap: nothing new
        # a shard written in the same second as the cursor, after the listing: the overlap re-lists it
        late = zone / "news" / "part-1.jsonl"
        late.write_text('{"id": "b", "text": "y"}\n')
        cursor_time = datetime.fromisoformat(__import__("json").loads(first.cursor)["since"]).timestamp()
        os.utime(late, (cursor_time, cursor_time))
        second = tick(defs, instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["news"]
        assert second.run_requests[0].run_key != first.run_requests[0].run_key  # a new set of shards


def test_nothing_new_requests_nothing(tmp_path):
    zone = tmp_path / "landing"
    (zone / "news").mkdir(parents=True)
    shard = zone / "news" / "part-0.jsonl"
    shard.write_text('{"id": "a", "text": "x"}\n')
    os.utime(shard, (time.time() - 60, time.time() - 60))
    defs = defs_with_landing(tmp_path, str(zone))
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, None)
        again = tick(defs, instance, first.cursor)
        assert isinstance(again, dg.SkipReason)


@pytest.mark.s3
def test_s3_landing_zone(tmp_path, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(Bucket="curation", Key="landing/papers/part-0.jsonl", Body=b'{"id": "a", "text": "x"}\n')
    s3.put_object(Bucket="curation", Key="landing/code2/part-0.jsonl", Body=b'{"id": "b", "text": "y"}\n')
    defs = defs_with_landing(tmp_path, "s3://curation/landing")
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, None, s3_endpoint)
        assert sorted(r.partition_key for r in first.run_requests) == ["code2", "papers"]
        instance.add_dynamic_partitions("source", ["code2", "papers"])
        s3.put_object(Bucket="curation", Key="landing/papers/part-1.jsonl", Body=b'{"id": "c", "text": "z"}\n')
        second = tick(defs, instance, first.cursor, s3_endpoint)  # same second as the cursor, most likely
        assert [r.partition_key for r in second.run_requests] == ["papers"]
        assert not second.dynamic_partitions_requests
        assert (
            second.run_requests[0].run_key != [r for r in first.run_requests if r.partition_key == "papers"][0].run_key
        )


def report_checks(instance, graph, asset: str, partition: str | None, passed: bool = True) -> None:
    """The blocking checks of `asset`'s latest materialization (`partition`) evaluated against it, as a run records
    them (`held_out_quality` fails unless `passed`)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None)
    rec = instance.fetch_materializations(flt, limit=1).records[0]
    for check in graph.get_check_keys_for_assets([dg.AssetKey(asset)]):
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset),
                check_name=check.name,
                passed=passed or check.name != "held_out_quality",
                blocking=True,
                target_materialization_data=Target(
                    storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp
                ),
            )
        )


def report(instance, graph, asset: str, partition: str | None, data: str, passed: bool = True) -> None:
    """A materialization whose data version is `data` (what the IO manager reports: the content hash) and its
    blocking checks' evaluations."""
    tags = {"dagster/data_version": data}
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, tags=tags))
    report_checks(instance, graph, asset, partition, passed)


def test_downstream_follows_an_updated_source_and_filtered_waits_for_a_passing_quality_model(tmp_path):
    from curation_assets.defs.sensors import FOLLOW, GATED_FOLLOW

    defs = build_definitions(load_config(), Settings(data_root=str(tmp_path / "data")))
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("raw")).automation_condition is None
    for key in ("filtered", "mixed", "tokenized"):
        assert graph.get(dg.AssetKey(key)).automation_condition == GATED_FOLLOW, key
    for key in ("annotated", "quality_model", "dedup_signatures", "deduped"):
        assert graph.get(dg.AssetKey(key)).automation_condition == FOLLOW, key

    def tick(cursor):
        return evaluate(defs, instance, cursor)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["web", "books"])
        result = tick(None)
        assert result.total_requested == 0  # nothing materialized yet: eager does not start from scratch
        for source in ("web", "books"):
            report(instance, graph, "raw", source, f"raw-{source}")
        result = tick(result.cursor)
        assert result.get_num_requested(dg.AssetKey("quality_model")) == 1  # its reference and background changed
        assert result.get_requested_partitions(dg.AssetKey("annotated")) == {"web", "books"}  # needs no model
        assert result.get_num_requested(dg.AssetKey("filtered")) == 0  # no model yet
        for source in ("web", "books"):
            report(instance, graph, "annotated", source, f"annotated-{source}")
        report(instance, graph, "quality_model", None, "model-1", passed=False)  # below its held-out bar: not used
        result = tick(result.cursor)
        assert result.get_num_requested(dg.AssetKey("filtered")) == 0
        report(instance, graph, "quality_model", None, "model-2")
        result = tick(result.cursor)
        for key in ("filtered", "dedup_signatures"):  # the chain below the model and the sources, and only it
            assert result.get_requested_partitions(dg.AssetKey(key)) == {"web", "books"}, key
        for key in ("deduped", "synthetic", "mixed"):
            assert result.get_num_requested(dg.AssetKey(key)) == 0, key


def test_a_no_op_rematerialization_of_raw_launches_nothing_downstream(tmp_path):
    """raw materialized for real (Dagster runs in process, the IO manager over a local data root): the same bytes
    again publish nothing and report the same data version, and automation requests nothing below raw; other bytes
    in one source request exactly what follows that source."""
    from curation_assets.core.frames import DOC_SCHEMA, QUARANTINE_SCHEMA, StepOutput, empty_frame
    from curation_assets.steps.common import source_partitions
    from resources.cost_guard import CostGuard
    from resources.io_manager import ParquetIOManager

    defs = build_definitions(load_config(), Settings(data_root=str(tmp_path / "data")))
    graph = defs.resolve_asset_graph()
    io = ParquetIOManager(base_uri=str(tmp_path / "data"), store=ObjectStore(), cost_guard=CostGuard())
    texts = {"web": "a page of the web", "books": "a chapter of a book"}

    @dg.asset(name="raw", partitions_def=source_partitions)
    def raw(context: dg.AssetExecutionContext):
        source = context.partition_key
        row = {"doc_id": f"{source}-0", "source": source, "text": texts[source], "url": None, "shard": "p"}
        docs = pl.DataFrame([{**row, "meta": "{}", "n_tokens": 4}]).cast(DOC_SCHEMA)
        return StepOutput(kept=docs, dropped=empty_frame(QUARANTINE_SCHEMA), rows_in=1, bytes_in=1, config_version="v")

    def ingest(source: str) -> None:
        assert dg.materialize([raw], partition_key=source, resources={"io_manager": io}, instance=instance).success
        report_checks(instance, graph, "raw", source)

    def tick(cursor):
        return evaluate(defs, instance, cursor)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["web", "books"])
        result = tick(None)
        for source in texts:
            ingest(source)
        result = tick(result.cursor)
        assert result.get_num_requested(dg.AssetKey("quality_model")) == 1
        assert result.get_requested_partitions(dg.AssetKey("annotated")) == {"web", "books"}
        report(instance, graph, "quality_model", None, "model-1")
        for source in texts:
            report(instance, graph, "annotated", source, f"annotated-{source}")
        result = tick(result.cursor)
        assert result.get_requested_partitions(dg.AssetKey("filtered")) == {"web", "books"}
        versions = {s: io.versions(dg.AssetKey("raw"), s) for s in texts}

        for source in texts:  # the no-op: a rerun from the UI, the same bytes
            ingest(source)
        result = tick(result.cursor)
        requested = {k.to_user_string(): result.get_num_requested(k) for k in graph.materializable_asset_keys}
        assert result.total_requested == 0, requested
        assert {s: io.versions(dg.AssetKey("raw"), s) for s in texts} == versions  # nothing new under the root

        texts["web"] = "a newer page of the web"
        ingest("web")
        result = tick(result.cursor)
        assert result.get_num_requested(dg.AssetKey("quality_model")) == 1  # web is its background
        assert result.get_requested_partitions(dg.AssetKey("annotated")) == {"web"}


def test_a_failed_blocking_check_on_one_source_holds_mixed_back_until_it_passes(tmp_path):
    """Every source's synthetic updated with its blocking checks evaluated against that materialization (as a run
    records them): all passed -> mixed is requested; one failed drop_rate on books -> mixed is not; books fixed and
    passing again -> mixed is requested again."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    cfg = load_config()
    defs = build_definitions(cfg, Settings(data_root=str(tmp_path / "data")))
    checks = sorted(k.name for k in defs.resolve_asset_graph().get_check_keys_for_assets([dg.AssetKey("synthetic")]))
    assert checks == ["drop_rate", "no_cross_zone_bytes"]

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", cfg.source_names)

        def update_synthetic(failing: set[tuple[str, str]], data: str) -> None:
            # The check specs are not partitioned (partitioned checks are a preview in Dagster 1.13): the condition
            # reads the latest evaluation of each check, so the source with the failing check reports last, as
            # the last run to finish would.
            for source in sorted(cfg.source_names, key=lambda s: any(f[0] == s for f in failing)):
                tags = {"dagster/data_version": f"{source}-{data}"}  # new content each time: mixed follows it
                instance.report_runless_asset_event(dg.AssetMaterialization("synthetic", partition=source, tags=tags))
                flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("synthetic"), asset_partitions=[source])
                (rec,) = instance.fetch_materializations(flt, limit=1).records
                for check in checks:
                    instance.report_runless_asset_event(
                        dg.AssetCheckEvaluation(
                            asset_key=dg.AssetKey("synthetic"),
                            check_name=check,
                            passed=(source, check) not in failing,
                            blocking=True,
                            target_materialization_data=Target(
                                storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp
                            ),
                        )
                    )

        result = evaluate(defs, instance)
        requested = []
        for n, failing in enumerate((set(), {("books", "drop_rate")}, set())):
            update_synthetic(failing, str(n))
            result = evaluate(defs, instance, result.cursor)
            requested.append(result.get_num_requested(dg.AssetKey("mixed")))
            if requested[-1]:  # the requested run happens, and a tick sees mixed up to date again
                instance.report_runless_asset_event(dg.AssetMaterialization("mixed"))
                result = evaluate(defs, instance, result.cursor)
                assert result.total_requested == 0
        assert requested == [1, 0, 1], requested
