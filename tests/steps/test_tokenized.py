"""The `tokenized` asset against a stand-in `mixed` (the shared run's mixture, staged): its checks re-read what it
persisted and pass, and the shards are the shared run's, byte for byte. (The format and its verification:
tests/core/test_tokens.py.)"""

import dagster as dg

from curation_assets.config import load_config
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import BUILD_MIXTURE
from tests.helpers import local_settings, snapshot, stage


def test_tokenized_against_a_staged_mixture_passes_its_checks_and_writes_the_shared_runs_shards(tmp_path, sample_run):
    from resources.store import ObjectStore

    root = tmp_path / "data"
    stage(sample_run.root, root, "mixed")
    defs = build_definitions(load_config(), local_settings(data_root=str(root)))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("tokenized")]
        )
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(
        ("index_matches_tokens", "ids_in_range", "sample_decodes", "no_cross_zone_bytes"), True
    )
    (mat,) = result.asset_materializations_for_node("tokenized")
    assert mat.metadata["tokens"].value > mat.metadata["details"].value["documents"] > 0
    files = {"tokenized": [None]}
    assert snapshot(ObjectStore(), str(root), files) == snapshot(ObjectStore(), str(sample_run.root), files)
