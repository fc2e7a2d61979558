"""`curation sources` and `curation sources remove`, and the `register_sources` sensor deleting a partition that names
no source (one created in the UI's "create partition"), so the nightly schedules do not try it every night."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from curation_assets.config import load_config
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import INGEST_SOURCE
from resources import build_resources
from tests.helpers import instance_home, local_settings, open_instance
from tests.test_cli import curation, sources_file

CONFIGURED = ["web", "code", "books", "multilingual"]
# news: landed; kept: has a synthetic version; tok: counted by a tokenized version; bogus, ../etc: name nothing
REGISTERED = [*CONFIGURED, "news", "kept", "tok", "bogus", "../etc"]


@pytest.fixture
def place(tmp_path) -> dict[str, Path]:
    """A sources file with a landing zone holding `news`, a data root with raw[web], a synthetic version of `kept`
    and a tokenized version whose manifest counts `tok.synthetic`, and an instance with REGISTERED."""
    zone, root, home = tmp_path / "landing", tmp_path / "data", tmp_path / "home"
    (zone / "news").mkdir(parents=True)
    (zone / "news" / "part-0.jsonl").write_text('{"id": "a", "text": "x"}\n')
    sources = sources_file(
        tmp_path, lambda d: d.update(landing_zones=[{"name": "drop", "uri": str(zone), "licence": "t"}])
    )
    (root / "raw" / "web").mkdir(parents=True)
    (root / "raw" / "web" / "_latest.json").write_text("{}")
    (root / "synthetic" / "kept" / "v1").mkdir(parents=True)
    pl.DataFrame({"doc_id": ["a"]}).write_parquet(root / "synthetic" / "kept" / "v1" / "part-00000.parquet")
    (root / "synthetic" / "kept" / "_latest.json").write_text("{}")
    (root / "tokenized" / "_all" / "v2").mkdir(parents=True)
    components = {"web": {"documents": 1, "tokens": 9}, "tok.synthetic": {"documents": 1, "tokens": 9}}
    (root / "tokenized" / "_all" / "v2" / "manifest.json").write_text(json.dumps({"components": components}))
    instance_home(home)
    with open_instance(home) as instance:
        instance.add_dynamic_partitions("source", REGISTERED)
    return {"sources": sources, "root": root, "home": home, "zone": zone}


def env_of(place) -> dict[str, str]:
    return {
        "CURATION_SOURCES": str(place["sources"]),
        "CURATION_DATA_ROOT": str(place["root"]),
        "DAGSTER_HOME": str(place["home"]),
    }


def registered(place) -> list[str]:
    with open_instance(place["home"]) as instance:
        return instance.get_dynamic_partitions("source")


def test_sources_lists_every_partition_with_what_it_is_and_what_the_root_holds(place, tmp_path):
    code, lines = curation("sources", cwd=tmp_path, **env_of(place))
    assert code == 0, lines
    assert lines[0].split() == ["source", "registered", "configured", "landed", "materialized"]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert table["web"] == ["yes", "yes", "-", "raw"]
    assert table["news"] == ["yes", "no", "drop", "-"]
    assert table["kept"] == ["yes", "no", "-", "synthetic"]
    assert table["bogus"] == ["yes", "no", "-", "-"]
    assert set(table) == set(REGISTERED)


def test_remove_refuses_configured_landed_protected_and_unknown_partitions(place, tmp_path):
    for name, why in [
        ("web", "web is configured: it would be registered again"),
        ("news", "news is landed in drop: it would be registered again"),
        ("kept", "kept has protected outputs (synthetic[kept] v1)"),
        ("tok", "tok has protected outputs (tokenized v2)"),
        ("nope", "'nope' is not a registered source partition"),
    ]:
        code, lines = curation("sources", "remove", name, "--reason", "r", cwd=tmp_path, **env_of(place))
        assert code == 2 and len(lines) == 1 and why in lines[0], (name, lines)
    assert registered(place) == REGISTERED
    assert not (place["root"] / "_removed").exists()


def test_remove_deletes_a_partition_that_names_nothing_and_records_who_when_and_why_in_its_folder(place, tmp_path):
    code, lines = curation("sources", "remove", "bogus", "--reason", "typo in the UI", cwd=tmp_path, **env_of(place))
    assert code == 0, lines
    assert registered(place) == [p for p in REGISTERED if p != "bogus"]
    (record,) = (place["root"] / "_removed" / "sources").glob("bogus.*.json")
    audit = json.loads(record.read_text())
    assert audit["source"] == "bogus" and audit["reason"] == "typo in the UI" and audit["by"] and audit["at"]
    assert audit["instance"] == str(place["home"])
    # a key that is no source name is removed too, and its record stays in the folder
    code, lines = curation("sources", "remove", "../etc", "--reason", "crafted", cwd=tmp_path, **env_of(place))
    assert code == 0, lines
    assert "../etc" not in registered(place)
    (record,) = (place["root"] / "_removed" / "sources").glob("..%2Fetc.*.json")
    assert json.loads(record.read_text())["source"] == "../etc"
    assert sorted(p.name for p in (place["root"] / "_removed").iterdir()) == ["sources"]


def test_the_sensor_deletes_partitions_that_name_no_source_and_their_runs_are_refused(place):
    settings = local_settings(data_root=str(place["root"]), sources=str(place["sources"]))
    cfg = load_config(sources=place["sources"])
    defs = build_definitions(cfg, settings)
    io = build_resources(settings, cfg.costs.model_dump())["io_manager"]
    sensor = defs.resolve_sensor_def("register_sources")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", REGISTERED)
        run = defs.resolve_job_def(INGEST_SOURCE).execute_in_process(
            partition_key="bogus", instance=instance, raise_on_error=False
        )
        assert not run.success
        (failure,) = [e for e in run.all_events if e.is_step_failure]
        assert "'bogus' is not configured and is in no landing zone" in str(failure.step_failure_data.error.message)
        with dg.build_sensor_context(instance=instance, resources={"io_manager": io}) as ctx:
            result = sensor(ctx)
        (request,) = result.dynamic_partitions_requests
        assert isinstance(request, dg.DeleteDynamicPartitionsRequest)
        assert list(request.partition_keys) == ["bogus", "../etc"]  # not news (landed), kept or tok (protected)
        assert not result.run_requests
        for key in request.partition_keys:  # what the daemon does with the request
            instance.delete_dynamic_partition("source", key)
        with dg.build_sensor_context(instance=instance, resources={"io_manager": io}) as ctx:
            assert isinstance(sensor(ctx), dg.SkipReason)
