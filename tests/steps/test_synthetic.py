"""The `synthetic` asset with an LLM template, end to end through Dagster against a stand-in `deduped`: the client is
built from the resource, results are cached under the data root, and a re-materialization makes no call.
(Generators and sampling: tests/core/test_generators.py, test_synthesis.py.)"""

import dagster as dg
import polars as pl
import yaml

from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.config.versions import asset_versions
from curation_assets.core.frames import DOC_SCHEMA, StepOutput
from curation_assets.defs.deployment import deployment
from curation_assets.steps import synthetic
from curation_assets.steps.common import source_partitions
from resources.synthetic import SyntheticBackend
from tests.helpers import local_settings
from tests.openai_stub import StubServer

TEXT = "The lighthouse keeper climbed the spiral staircase every evening at dusk, and polished the lens. " * 8


def deduped_stand_in(n: int, long: int = 1) -> dg.AssetsDefinition:
    """A `deduped` partition written by the real IO manager (the upstream steps are not under test here); the
    first document's text `long` times as long as the others'."""

    @dg.asset(name="deduped", partitions_def=source_partitions)
    def deduped(context: dg.AssetExecutionContext):
        docs = pl.DataFrame(
            {
                "doc_id": [f"d{i}" for i in range(n)],
                "source": context.partition_key,
                "text": [f"Entry {i}. {TEXT * (long if i == 0 else 1)}" for i in range(n)],
                "url": None,
                "shard": "s",
                "meta": "{}",
            },
            schema=DOC_SCHEMA,
        ).with_columns(pl.lit(200, pl.Int64).alias("n_tokens"))
        return StepOutput(
            kept=docs,
            dropped=docs.head(0).with_columns(drop_reason=pl.lit(None, pl.String)),
            rows_in=n,
            bytes_in=0,
            config_version="test",
        )

    return deduped


def test_a_seed_over_the_generator_work_budget_is_skipped_and_counted(tmp_path):
    """A document a generator would spend more than `max_work` units on is skipped with a stable reason, counted in
    the step's details and named in its funnel; it stays kept (skipping is no drop), the other seeds are made."""
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    # cloze charges 2 units per character it reads (and its sentences): the 10x document (~7,900 characters) is
    # over 10,000, the others (~800) are not
    thresholds["synthetic"]["per_source"]["books"] = {"rate": 1.0, "generators": ["cloze"], "max_work": 10_000}
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    cfg = load_config(thresholds=tmp_path / "thresholds.yaml")
    with dg.instance_for_test() as instance:
        (step,) = synthetic.build(cfg, asset_versions(cfg)["synthetic"])
        resources = deployment(cfg, local_settings(data_root=str(tmp_path / "data"))).resources
        defs = dg.Definitions(assets=[step, deduped_stand_in(12, long=10)], resources=resources)
        instance.add_dynamic_partitions("source", ["books"])
        res = defs.resolve_implicit_global_asset_job_def().execute_in_process(partition_key="books", instance=instance)
        assert res.success
        (mat,) = [e for e in res.get_asset_materialization_events() if e.asset_key == dg.AssetKey("synthetic")]
    md = mat.materialization.metadata
    details = md["details"].value
    assert details["synthetic_skipped"] == {"cloze:generator_budget_exceeded": 1}
    assert details["synthetic_docs"] == 11 and md["rows_out"].value == 12 + 11 and md["drop_rate"].value == 0.0
    assert "seeds skipped (cloze:generator_budget_exceeded): 1" in md["funnel"].value


def test_llm_synthetic_asset_caches_under_the_data_root_and_rematerializes_without_calls(tmp_path):
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    thresholds["synthetic"]["per_source"]["books"] = {
        "rate": 0.0,
        "generators": [],
        "llm_templates": ["wrap.medium.v1"],
        "llm_rate": 0.5,
        "min_chars": 10,
    }
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    root = tmp_path / "data"
    cfg = load_config(thresholds=tmp_path / "thresholds.yaml")
    with StubServer() as server, dg.instance_for_test() as instance:
        v = asset_versions(cfg)
        deployed = deployment(cfg, local_settings(data_root=str(root))).resources
        # an LLM backend on the stub endpoint, caching where the deployment's does
        backend = SyntheticBackend(
            base_url=server.base_url, model="stub-model", backoff_s=0.01, cache_uri=deployed["synth_backend"].cache_uri
        )
        resources = {**deployed, "synth_backend": backend}
        (step,) = synthetic.build(cfg, v["synthetic"])
        defs = dg.Definitions(assets=[step, deduped_stand_in(40)], resources=resources)
        instance.add_dynamic_partitions("source", ["books"])
        job = defs.resolve_implicit_global_asset_job_def()
        runs = []
        for selection in (None, [dg.AssetKey("synthetic")]):
            res = job.execute_in_process(partition_key="books", instance=instance, asset_selection=selection)
            assert res.success
            (mat,) = [e for e in res.get_asset_materialization_events() if e.asset_key == dg.AssetKey("synthetic")]
            runs.append(mat.materialization.metadata["details"].value)
        calls = len(server.prompts())
    first, second = runs
    assert first["synthetic_docs"] == calls > 5 and first["llm_completed"] == calls
    assert second["llm_cache_hits"] == calls and second["llm_calls"] == 0  # nothing recomputed
    assert len(list((root / "_synthetic_cache").rglob("*.json"))) == calls
    assert first["llm_spent_tokens"] <= 200_000 and first["llm_budget_stop"] is False
