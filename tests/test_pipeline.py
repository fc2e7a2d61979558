"""End to end: the whole graph through the CLI's runner, on a real (temporary) instance and real files."""

import json
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from curation_assets.cli import ALL_ASSETS, SOURCE_ASSETS, run
from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from resources.cost_guard import CostGuard
from curation_assets.config.settings import Settings
from resources.storage import ObjectStore, ParquetIOManager

FIXTURES = Path(__file__).parent / "fixtures"


def latest(instance: dg.DagsterInstance, asset: str, partition: str | None) -> dict:
    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None)
    (rec,) = instance.fetch_materializations(flt, limit=1).records
    return {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}


def check_results(instance: dg.DagsterInstance) -> list[tuple[str, str, bool]]:
    out = []
    for run_rec in instance.get_run_records():
        for ev in instance.get_records_for_run(
            run_rec.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records:
            data = ev.event_log_entry.dagster_event.event_specific_data
            out.append((data.asset_key.to_user_string(), data.check_name, data.passed))
    return out


def test_embedded_default_runs_every_asset_with_rows_and_tokens_and_reruns_as_a_no_op(tmp_path, capsys):
    settings = Settings(data_root=str(tmp_path / "data"))
    cfg = load_config()
    with dg.instance_for_test() as instance:
        assert run(instance, settings, force=False)
        for asset in ALL_ASSETS:
            for part in cfg.source_names if asset in SOURCE_ASSETS else [None]:
                md = latest(instance, asset, part)
                assert {"rows_in", "bytes_in", "bytes_out", "config_version", "drop_rate"} <= set(md)
                # the funnel: documents and tokens in, per drop reason and kept, each with its bar (the dedup
                # signatures and ledger and the quality model's training set have rows, not tokens)
                rows_only = asset.startswith("dedup_") or asset == "quality_model"
                tokens = f"{md['tokens']:,}" if not rows_only else ""
                assert md["rows_out"] > 0 and (md.get("tokens", 0) > 0 or not tokens), (asset, part, md)
                kept = f"| **kept** | {md['rows_out']:,} | {tokens} |"
                assert kept in md["funnel"] and md["funnel"].count("`") >= 4, (asset, part, md["funnel"])
                for reason in (k.removeprefix("dropped_") for k in md if k.startswith("dropped_")):
                    assert f"| dropped: {reason} | {md['dropped_' + reason]:,} |" in md["funnel"], (asset, reason)
        checks = check_results(instance)
        assert {(a, c) for a, c, _ in checks} >= {
            ("raw", "records_accounted"),
            ("mixed", "weights_honoured"),
            ("tokenized", "index_matches_tokens"),
        }
        assert all(passed for _, _, passed in checks), [c for c in checks if not c[2]]
        table = capsys.readouterr().out
        assert re.search(r"^tokenized +default ", table, re.M)

        runs = len(instance.get_run_records())
        manifest = json.loads((tmp_path / "data/tokenized/_all/_latest.json").read_text())["files"]["manifest.json"]
        sha = [s["bin_sha256"] for s in json.loads(Path(manifest).read_text())["shards"]]
        assert run(instance, settings, force=False)
        assert len(instance.get_run_records()) == runs  # nothing changed: nothing recomputed
        assert run(instance, settings, force=True)
        manifest = json.loads((tmp_path / "data/tokenized/_all/_latest.json").read_text())["files"]["manifest.json"]
        assert [s["bin_sha256"] for s in json.loads(Path(manifest).read_text())["shards"]] == sha  # byte-identical


def test_torture_set_quarantines_every_bad_record_and_keeps_every_good_one(shared_corpus, corpus_yaml, tmp_path):
    settings = Settings(
        data_root=str(tmp_path / "data"),
        sources=corpus_yaml("torture_sources.yaml"),
        recipe=str(FIXTURES / "torture_recipe.yaml"),
    )
    with dg.instance_for_test() as instance:
        assert run(instance, settings, force=False)  # the whole graph finishes
        md = latest(instance, "raw", "torture")
    io = ParquetIOManager(base_uri=settings.data_root, store=ObjectStore(), cost_guard=CostGuard())
    docs = io.scan(dg.AssetKey("raw"), "torture").collect()
    quarantine = io.scan(dg.AssetKey("raw"), "torture", dropped=True).collect()
    ids = docs.with_columns(pl.col("meta").str.json_path_match("$.id").alias("id"))
    expected = json.loads((shared_corpus / "torture" / "expected.json").read_text())["files"]
    for f in expected:
        yielded = set(ids.filter(pl.col("shard") == f["file"])["id"])
        assert set(f["must_yield"]) <= yielded, f["file"]
        assert not set(f["must_not_yield"]) & yielded, f["file"]
        counted = [
            b
            for b in f.get("bad", [])
            if "blank" not in b["reason"]
            and "whitespace-only line" not in b["reason"]
            and not b["reason"].startswith(
                ("single 50 MB", "text contains U+0000", "16 MiB", "2 MiB", "1 MiB", "'meta' is a string")
            )
        ]
        got = quarantine.filter(pl.col("shard") == f["file"])
        assert got.height == len(counted), (f["file"], got.select("location", "drop_reason").rows(), counted)
    assert md["rows_out"] == docs.height and md["rows_dropped"] == quarantine.height
    assert md["rows_in"] == docs.height + quarantine.height
    assert quarantine["drop_reason"].str.contains(r"^[a-z0-9_]+$").all()
    assert quarantine["location"].str.contains(r"^(line|row|record|frame):\d+$|^file$").all()


@pytest.mark.slow
def test_shared_corpus_in_every_format_runs_the_whole_graph(corpus_yaml, tmp_path):
    # web-warc is web again in another container: corpus-wide dedup removes all of it (kept in web, first in the
    # priority order), which deduped's drop_rate check would stop as a source ingested twice; let it through here.
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    thresholds["deduped"]["max_drop_rate"] = 1.0
    # the same pages are filtered the same way (incl. web's quality cut), so every web-warc survivor is a web one
    thresholds["filtered"]["per_source"]["web-warc"] = thresholds["filtered"]["per_source"]["web"]
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    settings = Settings(
        data_root=str(tmp_path / "data"),
        sources=corpus_yaml("shared_corpus_sources.yaml"),
        recipe=str(FIXTURES / "shared_corpus_recipe.yaml"),
        thresholds=str(tmp_path / "thresholds.yaml"),
    )
    with dg.instance_for_test() as instance:
        assert run(instance, settings, force=False)
        raw = {s: latest(instance, "raw", s) for s in ["web", "web-warc", "code", "books", "multilingual"]}
        warc = latest(instance, "deduped", "web-warc")
        assert warc["rows_out"] == 0 and warc["rows_dropped"] == warc["rows_in"] > 0  # every filtered doc of it
        assert latest(instance, "dedup_clusters", None)["removed_cross_source"] >= warc["rows_in"]
        mixed, tokenized = latest(instance, "mixed", None), latest(instance, "tokenized", None)
        # without a target the mixture is the largest that repeats nothing: bounded by the scarcest component
        assert mixed["tokens"] > 1_000_000 and tokenized["tokens"] == mixed["tokens"] + mixed["rows_out"]  # + EOTs
    assert raw["web"]["rows_out"] == raw["web-warc"]["rows_out"] == 1904  # JSONL.zst + Parquet == WARC
    assert raw["web"]["tokens"] == raw["web-warc"]["tokens"]  # the same extraction from both containers
    assert sum(r["rows_out"] for r in raw.values()) == 15_409 + 1904
    assert all(r["rows_dropped"] == 0 for r in raw.values())


@pytest.mark.s3
def test_whole_graph_with_the_data_root_on_s3(s3_endpoint):
    settings = Settings(data_root="s3://curation/e2e", s3_endpoint=s3_endpoint)
    with dg.instance_for_test() as instance:
        assert run(instance, settings, force=False)
        assert latest(instance, "tokenized", None)["tokens"] > 0
        md = latest(instance, "raw", "web")
        assert md["data_bytes_local"] > 0 and md["data_cross_az_bytes"] == 0  # a local guard sees no zones
    store = ObjectStore(endpoint_url=s3_endpoint)
    manifest = json.loads(store.read_bytes("s3://curation/e2e/tokenized/_all/_latest.json"))
    assert manifest["files"] and all(u.startswith("s3://curation/e2e/") for u in manifest["files"].values())
