"""The code location: the eleven assets in order with code versions, checks and pod sizes; the executor by environment;
the register_sources sensor; the nightly schedules."""

import json
from datetime import datetime, timezone

import dagster as dg

from curation_assets.config import load_config
from curation_assets.config.settings import Settings
from curation_assets.defs import build_definitions
from curation_assets.defs.deployment import deployment

ASSETS = [
    "raw",
    "annotated",
    "quality_model",
    "filtered",
    "dedup_signatures",
    "dedup_clusters",
    "decontam_index",
    "deduped",
    "synthetic",
    "mixed",
    "tokenized",
]


def defs_for(**settings) -> dg.Definitions:
    return build_definitions(load_config(), Settings(**settings))


def test_graph_is_the_assets_in_order_with_versions_checks_and_pod_sizes():
    graph = defs_for().resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(ASSETS)
    # the index is a root (eval files, not documents); the model trains on raw, beside annotated (no model needed)
    chain = [a for a in ASSETS if a not in ("decontam_index", "annotated")]
    for up, down in zip(chain, chain[1:]):
        assert dg.AssetKey(up) in graph.get(dg.AssetKey(down)).parent_keys
    assert graph.get(dg.AssetKey("annotated")).parent_keys == {dg.AssetKey("raw")}
    assert dg.AssetKey("annotated") in graph.get(dg.AssetKey("filtered")).parent_keys
    assert graph.get(dg.AssetKey("decontam_index")).parent_keys == set()
    assert graph.get(dg.AssetKey("decontam_index")).child_keys == {dg.AssetKey("deduped")}
    assert graph.get(dg.AssetKey("decontam_index")).partitions_def is None
    for name in ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.code_version and len(node.code_version) == 12
        assert graph.get_check_keys_for_assets([node.key]), f"{name} has no asset check"
        spec = graph.assets_def_for_key(node.key).op.tags
        assert '"container_config"' in spec["dagster-k8s/config"]  # k8s sizing is an op tag, JSON-encoded
    assert graph.get(dg.AssetKey("raw")).partitions_def.name == "source"
    assert graph.get(dg.AssetKey("mixed")).partitions_def is None
    assert graph.get(dg.AssetKey("tokenized")).freshness_policy is not None
    # one UI group per stage, in pipeline order: the global lineage lays out in columns, not one row of boxes
    groups = [graph.get(dg.AssetKey(name)).group_name for name in ASSETS]
    assert list(dict.fromkeys(groups)) == ["ingest", "curate", "dedup", "synthesize", "mix"]


def test_executor_follows_the_environment():
    assert defs_for().executor.name == "multiprocess"
    assert defs_for(env="k8s").executor.name == "k8s"


def test_register_sources_sensor_adds_partitions_then_skips():
    defs = defs_for()
    sensor = defs.resolve_sensor_def("register_sources")
    io = deployment(load_config(), Settings()).resources["io_manager"]  # it lists landing zones and outputs
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources={"io_manager": io}) as ctx:
            result = sensor(ctx)
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["web", "code", "books", "multilingual"]
        assert [r.partition_key for r in result.run_requests] == ["web", "code", "books", "multilingual"]
        instance.add_dynamic_partitions("source", list(request.partition_keys))
        with dg.build_sensor_context(instance=instance, resources={"io_manager": io}) as ctx:
            again = sensor(ctx)
        assert isinstance(again, dg.SkipReason)


def test_daily_schedules_ingest_and_curate_every_registered_source():
    defs = defs_for()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["web", "books"])
        ctx = dg.build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime(2026, 11, 26, 2, tzinfo=timezone.utc),
        )
        for schedule in ("ingest_sources_daily", "annotate_sources_daily", "curate_sources_daily"):
            requests = defs.resolve_schedule_def(schedule).evaluate_tick(ctx).run_requests
            assert [(r.partition_key, r.run_key) for r in requests] == [
                ("web", "web:2026-11-26"),
                ("books", "books:2026-11-26"),
            ]
        finish = defs.resolve_schedule_def("finish_sources_daily").evaluate_tick(ctx).run_requests
        assert [r.partition_key for r in finish] == ["web", "books"]
    # the nightly rebuild, stage after stage: read, annotations beside the quality model, map, corpus-wide dedup,
    # per-source finish, mixture
    nightly = [
        (s.cron_schedule, s.job_name)
        for s in sorted(defs.schedules, key=lambda s: tuple(map(int, s.cron_schedule.split()[1::-1])))
    ]
    assert nightly == [
        ("0 1 * * *", "ingest_source"),
        ("30 1 * * *", "annotate_source"),
        ("30 1 * * *", "train_quality_model"),
        ("0 2 * * *", "curate_source"),
        ("0 3 * * *", "dedupe_corpus"),
        ("30 3 * * *", "finish_source"),
        ("0 5 * * *", "build_mixture"),
    ]
    # the eval sets' index is rebuilt with the corpus-wide clustering, before the per-source finish applies both
    dedupe = defs.resolve_job_def("dedupe_corpus").asset_layer.selected_asset_keys
    assert dedupe == {dg.AssetKey("dedup_clusters"), dg.AssetKey("decontam_index")}


def test_pod_sizes_come_from_config_and_do_not_change_code_versions(tmp_path):
    import yaml

    from curation_assets.config import DEFAULT_THRESHOLDS

    t = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    t["deduped"]["pod"] = {"cpu": "3", "memory": "64Gi"}
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(t))
    edited = build_definitions(load_config(thresholds=path), Settings()).resolve_asset_graph()
    bundled = defs_for().resolve_asset_graph()
    tags = json.loads(edited.assets_def_for_key(dg.AssetKey("deduped")).op.tags["dagster-k8s/config"])
    assert tags["container_config"]["resources"] == {
        "requests": {"cpu": "3", "memory": "64Gi"},
        "limits": {"memory": "64Gi"},
    }
    bundled_tags = json.loads(bundled.assets_def_for_key(dg.AssetKey("tokenized")).op.tags["dagster-k8s/config"])
    assert bundled_tags["container_config"]["resources"]["requests"]["cpu"] == "4"  # tokenize: CPU
    for name in ASSETS:  # sizing a pod is not a change of the data
        assert edited.get(dg.AssetKey(name)).code_version == bundled.get(dg.AssetKey(name)).code_version


def test_curation_run_job_graph_lets_a_source_go_on_without_waiting_for_the_others():
    """`curation run`'s order (`job_graph`): a source's curate_source needs only its own annotated and the quality
    model, which needs only its reference and background sources' raw (the annotations run while it trains); the
    corpus-wide jobs need every source."""
    from curation_assets.defs.jobs import critical_path, job_graph

    graph = job_graph(["web", "books", "code"], ("books", "web"))
    assert graph[("train_quality_model", None)] == {("ingest_source", "books"), ("ingest_source", "web")}
    assert graph[("annotate_source", "code")] == {("ingest_source", "code")}
    assert graph[("curate_source", "code")] == {("annotate_source", "code"), ("train_quality_model", None)}
    assert graph[("dedupe_corpus", None)] == {("curate_source", s) for s in ("web", "books", "code")}
    assert graph[("finish_source", "web")] == {("dedupe_corpus", None)}
    assert graph[("build_mixture", None)] == {("finish_source", s) for s in ("web", "books", "code")}
    assert ("train_quality_model", None) not in job_graph(["code"], None)
    assert job_graph(["code"], None)[("curate_source", "code")] == {("annotate_source", "code")}

    # the longest remaining chain first: a small quality source's raw (the model waits on it) before a larger
    # source's; among sources of one job, the larger first; every node before the nodes that need it
    first = critical_path(graph, {"web": 10, "books": 2, "code": 3})
    assert first[("ingest_source", "books")] > first[("ingest_source", "code")]
    assert first[("curate_source", "web")] > first[("curate_source", "code")] > first[("curate_source", "books")]
    assert all(first[need] > first[node] for node, needs in graph.items() for need in needs)
