"""On-demand step traces: the run tag `curation/trace` records each step with Viztracer beside its output."""

import json
from pathlib import Path

import dagster as dg

from curation_assets.config import load_config
from curation_assets.defs import ASSETS, CURATE_SOURCE, INGEST_SOURCE, TRAIN_QUALITY, build_definitions
from curation_assets.config.settings import Settings
from resources.storage import TRACE_TAG


def curate_web(tmp_path, tags: dict[str, str]) -> dict[str, dg.AssetMaterialization]:
    """Ingest web and books, train the quality model, curate web: the materialization of each asset of web."""
    settings = Settings(data_root=str(tmp_path / "data"))
    defs = build_definitions(load_config(), settings)
    mats = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["web", "books"])
        for job, partition in (
            (INGEST_SOURCE, "books"),
            (INGEST_SOURCE, "web"),
            (TRAIN_QUALITY, None),
            (CURATE_SOURCE, "web"),
        ):
            result = defs.resolve_job_def(job).execute_in_process(partition_key=partition, instance=instance, tags=tags)
            for event in result.get_asset_materialization_events():
                mats[event.asset_key.to_user_string()] = event.step_materialization_data.materialization
    return mats


def test_a_traced_run_stores_a_perfetto_trace_beside_each_output_and_an_untraced_run_none(tmp_path):
    # Which function of the step module must appear in its trace (the work, not just the wrapper).
    work = {
        "raw": "read_shard",
        "quality_model": "training_set",
        "filtered": "run_filter",
        "dedup_signatures": "signatures",
    }
    mats = curate_web(tmp_path / "traced", {TRACE_TAG: "1"})
    for asset, fn in work.items():
        mat = mats[asset]
        path = Path(mat.metadata["trace"].value)
        assert path.parent == Path(mat.metadata["uri"].value) and path.name == "trace.json"
        events = json.loads(path.read_text())["traceEvents"]  # Chrome trace-event JSON: what Perfetto opens
        names = {e["name"].split(" (")[0] for e in events if e.get("ph") == "X"}  # "fn (file:line)"
        assert fn in names, (asset, sorted(names)[:20])
        assert mat.metadata["trace_viewer"].value == "https://ui.perfetto.dev"

    mats = curate_web(tmp_path / "plain", {})
    for asset in work:
        mat = mats[asset]
        assert "trace" not in mat.metadata and not list(Path(mat.metadata["uri"].value).glob("trace*"))


def test_every_asset_of_the_graph_is_traceable():
    graph = build_definitions(load_config(), Settings()).resolve_asset_graph()
    for name in ASSETS:
        compute = graph.assets_def_for_key(dg.AssetKey(name)).op.compute_fn.decorated_fn
        assert compute.__code__.co_qualname == "traceable.<locals>.step", name
