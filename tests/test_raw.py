"""raw through Dagster: cost guard before any byte moves, and sources + outputs on a real S3 API."""

import boto3
import dagster as dg
import polars as pl
import pytest
import yaml

from curation_assets.config import load_config
from curation_assets.definitions import CURATE_SOURCE, build_definitions
from curation_assets.raw import shard_names
from resources import Settings
from resources.storage import ObjectStore, ParquetIOManager

SAMPLE_BOOKS = load_config().resolve_uri("../sample/books")


def sources_yaml(tmp_path, uris: list[str], **location) -> str:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "books", "uris": uris, "licence": "test",
                                                 "location": location}]}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"books": 1}}}))
    return str(path)


def curate(settings: Settings, instance: dg.DagsterInstance, selection=None) -> dg.ExecuteInProcessResult:
    cfg = load_config(settings.sources, settings.recipe)
    instance.add_dynamic_partitions("source", ["books"])
    job = build_definitions(cfg, settings).resolve_job_def(CURATE_SOURCE)
    return job.execute_in_process(partition_key="books", instance=instance, raise_on_error=False,
                                  asset_selection=selection)


def test_shard_names_are_relative_to_the_common_directory():
    assert shard_names(["/d/a/x.jsonl", "/d/b/x.jsonl"]) == ["a/x.jsonl", "b/x.jsonl"]
    assert shard_names(["s3://b/p/part-0.parquet", "s3://b/p/part-1.parquet"]) == ["part-0.parquet", "part-1.parquet"]
    assert shard_names(["/only/one.warc.gz"]) == ["one.warc.gz"]


def test_cost_guard_stops_raw_before_reading_a_bucket_in_another_zone(tmp_path):
    settings = Settings(env="k8s", data_root=str(tmp_path / "data"), pod_zone="use1-az1",
                        sources=sources_yaml(tmp_path, [f"{SAMPLE_BOOKS}/*"], region="us-east-1", zone="use1-az4"),
                        recipe=str(tmp_path / "recipe.yaml"))
    with dg.instance_for_test() as instance:
        result = curate(settings, instance, selection=[dg.AssetKey("raw")])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    err = failure.step_failure_data.error
    assert "refusing to move" in str(err) and "use1-az4 -> use1-az1" in str(err)
    assert not (tmp_path / "data" / "raw").exists()  # nothing was read, nothing was written


@pytest.mark.s3
def test_sources_and_outputs_on_s3(tmp_path, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for name in ("part-00000.jsonl.zst", "part-00001.parquet"):
        s3.upload_file(f"{SAMPLE_BOOKS}/{name}", "curation", f"incoming/books/{name}")
    settings = Settings(data_root="s3://curation/out", s3_endpoint=s3_endpoint,
                        sources=sources_yaml(tmp_path, ["s3://curation/incoming/books/part-*"]),
                        recipe=str(tmp_path / "recipe.yaml"))
    with dg.instance_for_test() as instance:
        assert curate(settings, instance).success
    io = ParquetIOManager(base_uri=settings.data_root, store=ObjectStore(endpoint_url=s3_endpoint))
    raw = io.scan(dg.AssetKey("raw"), "books").collect()
    local = pl.concat([pl.read_parquet(f"{SAMPLE_BOOKS}/part-00001.parquet").select("id")])
    assert raw.height > local.height and raw["shard"].unique().sort().to_list() == ["part-00000.jsonl.zst",
                                                                                    "part-00001.parquet"]
    assert io.scan(dg.AssetKey("synthetic"), "books").collect().height > 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="curation", Prefix="out/")["Contents"]]
    assert {k.split("/")[1] for k in keys} == {"raw", "filtered", "deduped", "synthetic"}
