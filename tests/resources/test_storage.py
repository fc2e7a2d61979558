import json

import dagster as dg
import numpy as np
import polars as pl
import pytest

from curation_assets.core.frames import DOC_SCHEMA, StepOutput, empty_frame
from resources.cost_guard import CostGuard
from resources.storage import MANIFEST, FileSetOutput, ObjectStore, ParquetIOManager


def docs(n: int, source: str = "s") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"{source}{i}" for i in range(n)],
            "source": source,
            "text": "t" * 10,
            "url": None,
            "shard": "p",
            "meta": "{}",
            "n_tokens": 3,
        }
    ).cast(DOC_SCHEMA)


def step_output(parts: list[pl.DataFrame], dropped: int) -> StepOutput:
    drop = (
        empty_frame({**DOC_SCHEMA, "drop_reason": pl.String()})
        if not dropped
        else docs(dropped).with_columns(drop_reason=pl.lit("too_short"))
    )
    return StepOutput(
        kept=iter(parts),
        dropped=lambda: drop,
        rows_in=sum(p.height for p in parts) + dropped,
        bytes_in=1,
        config_version="v1",
    )


def roundtrip(io: ParquetIOManager, partition: str | None):
    out = step_output([docs(3), docs(0), docs(2)], dropped=2)
    ctx = dg.build_output_context(asset_key=dg.AssetKey("filtered"), partition_key=partition, run_id="r" * 36)
    io.handle_output(ctx, out)
    assert out.written["rows_out"] == 5 and out.written["rows_dropped"] == 2
    md = {k: getattr(v, "value", v) for k, v in ctx.get_logged_metadata().items()}
    assert md["rows_in"] == 7 and md["rows_out"] == 5 and md["dropped_too_short"] == 2 and md["tokens"] == 15
    loaded = io.load_input(dg.build_input_context(asset_key=dg.AssetKey("filtered"), partition_key=partition))
    assert loaded.collect().height == 5
    assert (
        io.scan(dg.AssetKey("filtered"), partition, dropped=True).collect()["drop_reason"].to_list()
        == ["too_short"] * 2
    )
    return out


def test_local_parts_are_published_by_an_atomic_manifest(tmp_path):
    io = ParquetIOManager(base_uri=str(tmp_path), store=ObjectStore(), cost_guard=CostGuard())
    roundtrip(io, "web")
    root = tmp_path / "filtered" / "web"
    manifest = json.loads((root / MANIFEST).read_text())
    assert [p.rsplit("/", 1)[1] for p in manifest["parts"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert not list(root.glob(".tmp-*"))  # no temp file left behind
    for _ in range(4):  # older versions are pruned, the newest three kept
        roundtrip(io, "web")
    assert len([p for p in root.iterdir() if p.is_dir()]) == 3


def test_fan_in_skips_partitions_that_were_never_materialized(tmp_path):
    io = ParquetIOManager(base_uri=str(tmp_path), store=ObjectStore(), cost_guard=CostGuard())
    roundtrip(io, "web")
    ctx = dg.build_input_context(
        asset_key=dg.AssetKey("filtered"),
        asset_partitions_def=dg.StaticPartitionsDefinition(["web", "code"]),
        asset_partition_key_range=dg.PartitionKeyRange("web", "code"),
    )
    loaded = io.load_input(ctx)
    assert set(loaded) == {"web"} and loaded["web"].collect().height == 5


@pytest.mark.s3
def test_s3_roundtrip_on_a_real_s3_api(s3_endpoint):
    store = ObjectStore(endpoint_url=s3_endpoint)
    io = ParquetIOManager(base_uri="s3://curation/data", store=store, cost_guard=CostGuard())
    roundtrip(io, "code")
    keys = [u for u, _ in store.expand("s3://curation/data/filtered/code/*")]
    assert any(k.endswith("/_latest.json") for k in keys) and sum(k.endswith(".parquet") for k in keys) == 3


@pytest.mark.s3
def test_file_set_roundtrip_on_s3(s3_endpoint):
    io = ParquetIOManager(
        base_uri="s3://curation/tok", store=ObjectStore(endpoint_url=s3_endpoint), cost_guard=CostGuard()
    )
    tokens = np.array([1, 2, 100257, 70000, 100257], dtype="<u4").tobytes()
    out = FileSetOutput(files=iter([("tokens.bin", tokens), ("header.json", b"{}")]))
    io.handle_output(dg.build_output_context(asset_key=dg.AssetKey("tokenized"), run_id="r" * 36), out)
    files = io.load_files(dg.AssetKey("tokenized"))
    assert files == out.written["files"] and set(files) == {"tokens.bin", "header.json"}
    assert io.store.read_bytes(files["tokens.bin"]) == tokens and out.written["bytes_out"] == len(tokens) + 2
    loaded = io.load_input(dg.build_input_context(asset_key=dg.AssetKey("tokenized")))
    assert loaded == files  # a downstream asset gets name -> URI
