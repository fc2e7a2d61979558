"""On-demand step traces: the run tag `curation/trace` records each step with Viztracer beside its output."""

import json
from pathlib import Path

import dagster as dg

from curation_assets.config import load_config
from curation_assets.config.settings import Settings
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import ANNOTATE_SOURCE, ASSETS, CURATE_SOURCE, INGEST_SOURCE, TRAIN_QUALITY
from curation_assets.steps.common import TRACE_TAG
from tests.helpers import latest, local_settings, open_instance, stage

# Which function of the step's core must appear in its trace (the work, not just the wrapper).
WORK = {
    "raw": "read_shard",
    "quality_model": "training_set",
    "annotated": "annotate_batch",
    "filtered": "score_batch",
    "dedup_signatures": "signatures",
}


def test_a_traced_run_stores_a_perfetto_trace_beside_each_output(tmp_path, sample_run):
    """Ingest web, train the quality model (books' raw staged from the shared run), curate web, all traced."""
    root = tmp_path / "data"
    stage(sample_run.root, root, "raw", "books")
    defs = build_definitions(load_config(), local_settings(data_root=str(root)))
    mats = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["web", "books"])
        jobs = ((INGEST_SOURCE, "web"), (ANNOTATE_SOURCE, "web"), (TRAIN_QUALITY, None), (CURATE_SOURCE, "web"))
        for job, partition in jobs:
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=partition, instance=instance, tags={TRACE_TAG: "1"}
            )
            for event in result.get_asset_materialization_events():
                mats[event.asset_key.to_user_string()] = event.step_materialization_data.materialization
    missing = {}
    for asset, fn in WORK.items():
        mat = mats[asset]
        path = Path(mat.metadata["trace"].value)
        assert path.parent == Path(mat.metadata["uri"].value) and path.name == "trace.json"
        events = json.loads(path.read_text())["traceEvents"]  # Chrome trace-event JSON: what Perfetto opens
        names = {e["name"].split(" (")[0] for e in events if e.get("ph") == "X"}  # "fn (file:line)"
        if fn not in names:
            missing[asset] = (fn, sorted(names)[:20])
        assert mat.metadata["trace_viewer"].value == "https://ui.perfetto.dev"
    assert not missing, missing  # each step's trace shows its work, not just the wrapper


def test_an_untraced_run_stores_no_trace(sample_run):
    """The session's shared run carries no trace tag: no trace in the metadata, none beside the outputs."""
    with open_instance(sample_run.home) as instance:
        for asset in WORK:
            md = latest(instance, asset, None if asset == "quality_model" else "web")
            assert "trace" not in md and not list(Path(md["uri"]).glob("trace*")), asset


def test_every_asset_of_the_graph_is_traceable():
    graph = build_definitions(load_config(), Settings()).resolve_asset_graph()
    for name in ASSETS:
        compute = graph.assets_def_for_key(dg.AssetKey(name)).op.compute_fn.decorated_fn
        # `step` wraps the traced body (the checks run after it, outside the trace)
        assert compute.__code__.co_qualname == "step.<locals>.decorate.<locals>.checked", name
        assert compute.__closure__ and any(
            getattr(getattr(c.cell_contents, "__code__", None), "co_qualname", "") == "traceable.<locals>.step"
            for c in compute.__closure__
        ), name
