"""The `raw` asset through Dagster: the cost guard stops it before any byte moves, and sources and outputs on a real S3
API. (The readers: tests/core/test_readers.py; landing zones and symlinks: tests/test_hostile_input.py.)"""

from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pytest
import yaml

from curation_assets.config import load_config
from curation_assets.config.settings import Settings
from curation_assets.core.readers import detect_format, read_shard
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import ANNOTATE_SOURCE, CURATE_SOURCE, INGEST_SOURCE
from curation_assets.steps.raw import shard_names
from resources.cost_guard import CostGuard
from resources.io_manager import ParquetIOManager
from resources.store import ObjectStore
from tests.helpers import latest, local_settings

SAMPLE_BOOKS = load_config().resolve_uri("../sample/books")


def sources_yaml(tmp_path, uris: list[str], **location) -> str:
    path = tmp_path / "sources.yaml"
    path.write_text(
        yaml.safe_dump({"sources": [{"name": "books", "uris": uris, "licence": "test", "location": location}]})
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"books": 1}}}))
    return str(path)


def curate(settings: Settings, instance: dg.DagsterInstance, selection=None) -> dg.ExecuteInProcessResult:
    cfg = load_config(settings.sources, settings.recipe)
    instance.add_dynamic_partitions("source", ["books"])
    job = build_definitions(cfg, settings).resolve_job_def(INGEST_SOURCE)
    return job.execute_in_process(
        partition_key="books", instance=instance, raise_on_error=False, asset_selection=selection
    )


def test_shard_names_are_relative_to_the_common_directory():
    assert shard_names(["/d/a/x.jsonl", "/d/b/x.jsonl"]) == ["a/x.jsonl", "b/x.jsonl"]
    assert shard_names(["s3://b/p/part-0.parquet", "s3://b/p/part-1.parquet"]) == ["part-0.parquet", "part-1.parquet"]
    assert shard_names(["/only/one.warc.gz"]) == ["one.warc.gz"]


def upload_books(endpoint: str, prefix: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for name in ("part-00000.jsonl.zst", "part-00001.parquet"):
        s3.upload_file(f"{SAMPLE_BOOKS}/{name}", "curation", f"{prefix}/{name}")


@pytest.mark.s3
def test_cost_guard_stops_raw_before_reading_a_bucket_in_another_zone(tmp_path, s3_request_log):
    endpoint, log = s3_request_log
    upload_books(endpoint, "zonal/books")
    settings = local_settings(
        env="k8s",
        data_root=str(tmp_path / "data"),
        pod_zone="use1-az1",
        s3_endpoint=endpoint,
        sources=sources_yaml(tmp_path, ["s3://curation/zonal/books/part-*"], zone="use1-az4"),
        recipe=str(tmp_path / "recipe.yaml"),
    )
    log.clear()
    with dg.instance_for_test() as instance:
        result = curate(settings, instance, selection=[dg.AssetKey("raw")])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    err = str(failure.step_failure_data.error)
    assert "source books" in err and "cross_az (us-east-1/use1-az4 -> us-east-1/use1-az1)" in err and "$" in err
    assert log and all("list-type=2" in path for _, path in log)  # only the listing that sized the plan
    assert not [p for m, p in log if m == "GET" and "zonal/books/part-" in p.split("?")[0]]  # no object was read
    assert not (tmp_path / "data" / "raw").exists()  # nothing was written


@pytest.mark.s3
def test_directory_buckets_pin_raw_to_their_zone_and_a_second_zone_is_refused_before_any_read(tmp_path, s3_request_log):
    """S3 Express One Zone: the zone comes from the bucket names alone (no `location` in the config). A source in
    the data root's zone is read there (same_zone, $0); a source in another zone is refused before a byte of it is
    read, naming the source, both zones, the bytes and the dollars. (The same rule for the step's Ray workers:
    tests/resources/test_engine.py.)"""
    endpoint, log = s3_request_log
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for bucket in ("src--use1-az4--x-s3", "src--use1-az6--x-s3", "out--use1-az4--x-s3"):
        s3.create_bucket(Bucket=bucket)
    for name in ("part-00000.jsonl.zst", "part-00001.parquet"):
        for bucket in ("src--use1-az4--x-s3", "src--use1-az6--x-s3"):
            s3.upload_file(f"{SAMPLE_BOOKS}/{name}", bucket, f"books/{name}")
    zonal = dict(env="k8s", data_root="s3://out--use1-az4--x-s3/curation", s3_endpoint=endpoint)

    same = local_settings(
        **zonal,
        sources=sources_yaml(tmp_path, ["s3://src--use1-az4--x-s3/books/*"]),
        recipe=str(tmp_path / "recipe.yaml"),
    )
    with dg.instance_for_test() as instance:
        result = curate(same, instance, selection=[dg.AssetKey("raw")])
        assert result.success
        md = result.asset_materializations_for_node("raw")[0].metadata
        cost = md["details"].value["cost"]  # the source's reads priced with the data root's, in one table
        assert cost["bytes_same_zone"] > 0 and cost["transfer_usd"] == 0 and "| same zone |" in md["cost"].value

    log.clear()
    other = local_settings(
        **zonal,
        sources=sources_yaml(tmp_path, ["s3://src--use1-az6--x-s3/books/*"]),
        recipe=str(tmp_path / "recipe.yaml"),
    )
    with dg.instance_for_test() as instance:
        refused = curate(other, instance, selection=[dg.AssetKey("raw")])
    assert not refused.success
    err = str(next(e for e in refused.all_events if e.is_step_failure).step_failure_data.error)
    assert "2 zones (use1-az4, use1-az6)" in err and "source books" in err and "B cross_az" in err and "$" in err
    assert log and all("list-type=2" in path for _, path in log)  # only the listing that sized the plan
    assert not [p for m, p in log if m in ("GET", "PUT") and "/books/part-" in p.split("?")[0]]


@pytest.mark.s3
def test_sources_and_outputs_on_s3(tmp_path, s3_endpoint):
    upload_books(s3_endpoint, "incoming/books")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    settings = local_settings(
        data_root="s3://curation/out",
        s3_endpoint=s3_endpoint,
        sources=sources_yaml(tmp_path, ["s3://curation/incoming/books/part-*"]),
        recipe=str(tmp_path / "recipe.yaml"),
    )
    with dg.instance_for_test() as instance:
        assert curate(settings, instance).success
        defs = build_definitions(load_config(settings.sources, settings.recipe), settings)
        for job in (ANNOTATE_SOURCE, CURATE_SOURCE):
            assert defs.resolve_job_def(job).execute_in_process(partition_key="books", instance=instance).success
    io = ParquetIOManager(
        base_uri=settings.data_root, store=ObjectStore(endpoint_url=s3_endpoint), cost_guard=CostGuard()
    )
    raw = io.scan(dg.AssetKey("raw"), "books").collect()
    local = pl.concat([pl.read_parquet(f"{SAMPLE_BOOKS}/part-00001.parquet").select("id")])
    assert raw.height > local.height and raw["shard"].unique().sort().to_list() == [
        "part-00000.jsonl.zst",
        "part-00001.parquet",
    ]
    assert io.scan(dg.AssetKey("dedup_signatures"), "books").collect().height > 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="curation", Prefix="out/")["Contents"]]
    assert {k.split("/")[1] for k in keys} == {"raw", "annotated", "filtered", "dedup_signatures"}


@pytest.mark.s3
def test_override_is_logged_and_the_blocking_check_fails_on_measured_cross_az_bytes(tmp_path, s3_endpoint):
    zonal = dict(
        env="k8s",
        pod_zone="use1-az1",
        data_zone="use1-az4",
        data_root="s3://curation/zonal-root",
        s3_endpoint=s3_endpoint,
        sources=sources_yaml(tmp_path, [f"{SAMPLE_BOOKS}/*"]),
        recipe=str(tmp_path / "recipe.yaml"),
    )
    with dg.instance_for_test() as instance:
        refused = curate(local_settings(**zonal), instance)
        assert not refused.success and "cross_az" in str(
            next(e for e in refused.all_events if e.is_step_failure).step_failure_data.error
        )
        assert instance.get_latest_materialization_event(dg.AssetKey("raw")) is None  # refused before writing

        cfg = load_config(zonal["sources"], zonal["recipe"])
        job = build_definitions(cfg, local_settings(**zonal)).resolve_job_def(INGEST_SOURCE)
        result = job.execute_in_process(
            partition_key="books",
            instance=instance,
            raise_on_error=False,
            tags={"curation/allow-transfer": "migration, ticket 42"},
        )
        assert not result.success
        (check,) = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            and e.event_specific_data.check_name == "no_cross_zone_bytes"
        ]
        assert not check.passed and check.metadata["cross_az_bytes"].value > 0
        assert check.metadata["transfer_override"].value == "migration, ticket 42"
        assert any(
            "cost guard overridden" in e.user_message and "ticket 42" in e.user_message
            for e in instance.all_logs(result.run_id)
        )
        assert instance.get_latest_materialization_event(dg.AssetKey("filtered")) is None  # blocked downstream


def test_a_stray_file_matched_by_the_glob_is_quarantined_and_the_good_shards_are_read(tmp_path):
    """An uploader's README.md or notes.txt beside the shards is not a reason to ingest nothing: each is one `file`
    quarantine row (`unsupported_format`), never opened, and every document of the good shards is read."""
    import shutil

    books = tmp_path / "books"
    shutil.copytree(SAMPLE_BOOKS, books)
    (books / "README.md").write_text("# how we exported these\n")
    (books / "notes.txt").write_bytes(b"\x00\xff not text either")
    root = tmp_path / "data"
    settings = local_settings(
        data_root=str(root), sources=sources_yaml(tmp_path, [f"{books}/*"]), recipe=str(tmp_path / "recipe.yaml")
    )
    with dg.instance_for_test() as instance:
        result = curate(settings, instance, selection=[dg.AssetKey("raw")])
    assert result.success
    io = ParquetIOManager(base_uri=str(root), store=ObjectStore(), cost_guard=CostGuard())
    quarantined = io.scan(dg.AssetKey("raw"), "books", dropped=True).collect()
    stray = quarantined.filter(pl.col("drop_reason") == "unsupported_format").sort("shard")
    assert stray["shard"].to_list() == ["README.md", "notes.txt"] and set(stray["location"]) == {"file"}
    assert ".jsonl.zst" in stray["detail"][0]
    shards = sorted(Path(SAMPLE_BOOKS).glob("part-*"))
    expected = 0
    for p in shards:  # what the reader makes of the good shards alone
        with open(p, "rb") as f:
            expected += read_shard(f, fmt=detect_format(p.name), source="books", shard=p.name).docs.height
    raw = io.scan(dg.AssetKey("raw"), "books").collect()
    assert raw.height == expected > 0 and set(raw["shard"]) == {p.name for p in shards}


def test_raw_counts_no_token_and_shows_an_estimate_from_a_seeded_sample_labelled_as_one(tmp_path):
    """Issue 19: raw no longer tokenizes every document (most never reach a mixture; `filtered` counts the ones it
    keeps): its rows are the canonical columns alone, and its tokens are its text bytes x the tokens per byte of a
    seeded 1/32 sample, `tokens_est` and `~N (est.)`, never `tokens`."""
    from curation_assets.core.frames import DOC_SCHEMA
    from resources.tokenizer import TokenizerResource

    root = tmp_path / "data"
    settings = local_settings(
        data_root=str(root), sources=sources_yaml(tmp_path, [f"{SAMPLE_BOOKS}/*"]), recipe=str(tmp_path / "recipe.yaml")
    )
    with dg.instance_for_test() as instance:
        assert curate(settings, instance, selection=[dg.AssetKey("raw")]).success
        md = latest(instance, "raw", "books")
    io = ParquetIOManager(base_uri=str(root), store=ObjectStore(), cost_guard=CostGuard())
    raw = io.scan(dg.AssetKey("raw"), "books").collect()
    assert raw.columns == list(DOC_SCHEMA) and "tokens" not in md
    details, exact = md["details"], sum(TokenizerResource().count_tokens(raw["text"].to_list()))
    assert details["text_bytes"] == raw["text"].str.len_bytes().sum()
    estimated = details["tokens_estimated"]
    assert estimated["kept"] == md["tokens_est"] and estimated["tokenizer"] == "cl100k_base"
    assert 1 <= estimated["sample_docs"] < raw.height / 10  # a sample, not the source
    assert abs(md["tokens_est"] - exact) / exact < 0.1, (md["tokens_est"], exact)
    assert f"| **kept** | {raw.height:,} | ~" in md["funnel"] and " (est.) |" in md["funnel"]


def test_a_shard_lost_whole_weighs_the_records_it_held_and_fails_drop_rate(tmp_path):
    """Issue 20 item 3: a corrupt zstd file is one quarantine row, but it held about half the source. Its
    `records_lost` is estimated from the source's records per byte and `bytes_lost` is its size, so `drop_rate`
    (max_drop_rate 0.5 on a source that lost 50 %) fails and nothing flows on; before, one row in 298 passed."""
    import shutil

    books = tmp_path / "books"
    shutil.copytree(SAMPLE_BOOKS, books)
    shard = books / "part-00000.jsonl.zst"
    data = bytearray(shard.read_bytes())
    data[6:] = bytes(len(data) - 6)  # a zstd magic, then zeros (a zero-filled disk block): nothing decodes
    shard.write_bytes(bytes(data))
    settings = local_settings(
        data_root=str(tmp_path / "data"),
        sources=sources_yaml(tmp_path, [f"{books}/*"]),
        recipe=str(tmp_path / "recipe.yaml"),
    )
    with dg.instance_for_test() as instance:
        result = curate(settings, instance, selection=[dg.AssetKey("raw")])
        md = {
            k: v.value
            for k, v in instance.get_latest_materialization_event(
                dg.AssetKey("raw")
            ).asset_materialization.metadata.items()
        }
    [drop] = [e for e in result.get_asset_check_evaluations() if e.check_name == "drop_rate"]
    assert not drop.passed
    details = md["details"]
    assert details["bytes_lost"] == len(data) and details["rows_dropped"] == details["drops"]["truncated_stream"]
    assert 250 <= details["rows_dropped"] <= 420  # it held 296 records: 356 estimated from the Parquet shard's density
    assert drop.metadata["bytes_lost_rate"].value > 0.5
