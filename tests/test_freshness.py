"""A stale source, or a source whose latest output failed a blocking check, blocks the mixture; the freshness windows
come from thresholds.yaml."""

import time

import dagster as dg
import yaml

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as Target,
)

from curation_assets.cli import run
from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.defs import BUILD_MIXTURE, build_definitions
from curation_assets.config.settings import Settings


def test_a_stale_source_or_a_failed_check_on_its_latest_output_stops_mixed_before_it_mixes(tmp_path):
    settings = Settings(data_root=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        assert run(instance, settings, force=False)  # every source fresh: mixed passes sources_fresh
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
        defs = build_definitions(load_config(), settings)
        result = defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(instance=instance, raise_on_error=False)
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert "blocking checks failed on the latest synthetic of {'books': ['drop_rate']}" in str(
            failure.step_failure_data.error
        )
        assert instance.get_latest_materialization_event(dg.AssetKey("mixed")).run_id == mixed_before.run_id

        t = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
        t["freshness"]["max_source_age_hours"] = 0.0003  # about one second
        path = tmp_path / "thresholds.yaml"
        path.write_text(yaml.safe_dump(t))
        time.sleep(2)
        defs = build_definitions(load_config(thresholds=path), settings)
        result = defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert failure.step_key == "mixed" and "refusing to mix" in str(failure.step_failure_data.error)
        after = instance.get_latest_materialization_event(dg.AssetKey("mixed"))
        assert after.run_id == mixed_before.run_id  # nothing new was mixed
    graph = defs.resolve_asset_graph()
    policies = {graph.get(k).freshness_policy for k in graph.get_all_asset_keys()}
    assert len(policies) == 1 and None not in policies  # every asset carries the configured windows
    policy = graph.get(dg.AssetKey("tokenized")).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 48 * 3600
