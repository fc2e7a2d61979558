"""A stale source blocks the mixture; the freshness windows come from thresholds.yaml."""

import time

import dagster as dg
import yaml

from curation_assets.cli import run
from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.definitions import BUILD_MIXTURE, build_definitions
from resources import Settings


def test_a_source_older_than_its_window_stops_mixed_before_it_mixes(tmp_path):
    settings = Settings(data_root=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        assert run(instance, settings, force=False)  # every source fresh: mixed passes sources_fresh
        mixed_before = instance.get_latest_materialization_event(dg.AssetKey("mixed"))

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
    policy = graph.get(dg.AssetKey("tokenized")).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 48 * 3600
