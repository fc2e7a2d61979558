"""The `mixed` asset: a stale source, or a source whose latest output failed a blocking check, stops it before it mixes;
the freshness windows come from thresholds.yaml. The upstream `synthetic` partitions and an earlier mixture are
stand-ins (materializations as a run records them); `mixed` refuses before it reads anything. (The realized mixture
of the whole graph and its passing checks, `sources_fresh` included: tests/test_pipeline.py; the mixing math:
tests/core/test_mixing.py.)"""

import time

import dagster as dg
import yaml
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as Target,
)

from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import BUILD_MIXTURE
from tests.helpers import local_settings


def test_a_stale_source_or_a_failed_check_on_its_latest_output_stops_mixed_before_it_mixes(tmp_path):
    settings = local_settings(data_root=str(tmp_path / "data"))
    cfg = load_config()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", cfg.source_names)
        for source in cfg.source_names:  # every source's synthetic, just now: every source fresh
            instance.report_runless_asset_event(dg.AssetMaterialization("synthetic", partition=source))
        fresh_at = time.time()
        instance.report_runless_asset_event(dg.AssetMaterialization("mixed"))
        mixed_before = instance.get_latest_materialization_event(dg.AssetKey("mixed"))

        # books' latest synthetic fails drop_rate; web's passes afterwards (the gate alone would see only that)
        for source, passed in (("books", False), ("web", True)):
            flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("synthetic"), asset_partitions=[source])
            (rec,) = instance.fetch_materializations(flt, limit=1).records
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey("synthetic"),
                    check_name="drop_rate",
                    passed=passed,
                    blocking=True,
                    target_materialization_data=Target(
                        storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp
                    ),
                )
            )
        defs = build_definitions(cfg, settings)
        result = defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(instance=instance, raise_on_error=False)
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert "blocking checks failed on the latest synthetic of {'books': ['drop_rate']}" in str(
            failure.step_failure_data.error
        )
        latest = instance.get_latest_materialization_event(dg.AssetKey("mixed"))
        assert (latest.run_id, latest.timestamp) == (mixed_before.run_id, mixed_before.timestamp)  # nothing mixed

        t = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
        t["freshness"]["max_source_age_hours"] = 0.0001  # 0.36 s
        path = tmp_path / "thresholds.yaml"
        path.write_text(yaml.safe_dump(t))
        time.sleep(max(0.0, fresh_at + 1.0 - time.time()))  # every source is at least 1 s old (ages: 4 decimals)
        defs = build_definitions(load_config(thresholds=path), settings)
        result = defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert failure.step_key == "mixed" and "refusing to mix" in str(failure.step_failure_data.error)
        assert "sources older than 0.0001 h" in str(failure.step_failure_data.error)
        after = instance.get_latest_materialization_event(dg.AssetKey("mixed"))
        assert (after.run_id, after.timestamp) == (mixed_before.run_id, mixed_before.timestamp)  # nothing mixed
    graph = defs.resolve_asset_graph()
    policies = {graph.get(k).freshness_policy for k in graph.get_all_asset_keys()}
    assert len(policies) == 1 and None not in policies  # every asset carries the configured windows
    policy = graph.get(dg.AssetKey("tokenized")).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 48 * 3600
