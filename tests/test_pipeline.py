"""End to end: the whole graph through `curation run`, on real (temporary) instances and real files.

The embedded default is the session's shared run (`sample_run`); the torture set, the shared corpus and the S3 data
root are runs of their own (other config, other data root), made by background jobs while other tests run.
"""

import json
import re
import types
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation_assets.cli import ALL_ASSETS, SOURCE_ASSETS, run
from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.core.frames import approx
from resources.metadata import MAX_KEYS
from tests.background import background, clean_env, workers
from tests.helpers import (
    FIXTURES,
    check_results,
    corpus_yaml,
    ensure_ray,
    find_shared_corpus,
    instance_home,
    latest,
    local_settings,
    open_instance,
    s3_server,
    snapshot,
)


def curation_run(tmp: Path, **env) -> types.SimpleNamespace:
    """`curation run` in a run worker with its own DAGSTER_HOME (`tmp/home`) and `env` (CURATION_* variables); by
    default without Ray, one partition at a time (CURATION_WORKERS=0: on this 2-core machine the session already runs
    jobs side by side); with CURATION_WORKERS=N, the steps' tasks on the session's Ray cluster."""
    home, log = tmp / "home", tmp / "run.log"
    instance_home(home)
    if env.get("CURATION_WORKERS"):
        ensure_ray()
    code = workers.run(["cli", "run"], clean_env(DAGSTER_HOME=home, **env), log)
    return types.SimpleNamespace(code=code, home=home, log=log, output=lambda: log.read_text()[-5000:])


# the steps whose metadata reports their tasks (tokenized's is taken before its shards stream: it logs them only)
TASK_STEPS = {"raw", "annotated", "filtered", "dedup_signatures", "synthetic"}


def test_embedded_default_runs_every_asset_with_rows_and_tokens_and_reruns_as_a_no_op(sample_run, capsys):
    cfg = load_config()
    with open_instance(sample_run.home) as instance:
        for asset in ALL_ASSETS:
            for part in cfg.source_names if asset in SOURCE_ASSETS else [None]:
                md = latest(instance, asset, part)
                details = md["details"]
                # Issue 17 item 6: the same few keys on every page (everything else in `details`), one cost table
                assert len(md) <= MAX_KEYS, (asset, part, sorted(md))
                assert {
                    "rows_in",
                    "rows_out",
                    "drop_rate",
                    "bytes_out",
                    "config_version",
                    "funnel",
                    "uri",
                    "cost",
                } <= set(md)
                assert "| **cost** | $" in md["cost"] and details["cost"]["cross_az_bytes"] == 0, (asset, part)
                # the funnel: documents and tokens in, per drop reason and kept, each with its bar (the dedup
                # signatures and ledger, the quality model's training set and annotated, raw's documents with their
                # verdicts, have rows, not tokens)
                rows_only = asset.startswith("dedup_") or asset in ("annotated", "quality_model", "decontam_index")
                # (rows a step adds, the mixture's repeats and synthetic's documents, are rows of their own: kept
                # counts input documents, and no share of the input exceeds 100 %)
                if asset == "raw":  # raw counts no token (filtered counts what it keeps): an estimate, labelled so
                    assert "tokens" not in md and md["tokens_est"] == details["tokens_estimated"]["kept"] > 0, md
                    tokens = approx(md["tokens_est"])
                else:
                    tokens = f"{md['tokens'] - details.get('tokens_added', 0):,}" if not rows_only else ""
                if asset == "filtered":  # the documents it drops are not tokenized: bytes, and an estimate of tokens
                    assert "tokens_dropped" not in details and set(details["bytes_dropped"]) == set(details["drops"])
                    for reason, n in details["drops"].items():
                        assert re.search(rf"\| dropped: {reason} \| {n:,} \| ~[\d.]+[kMB]? \(est\.\) \|", md["funnel"])
                empty = asset == "decontam_index"  # the bundled config names no evaluation set
                counted = md.get("tokens", md.get("tokens_est", 0))
                assert (md["rows_out"] > 0 or empty) and (counted > 0 or not tokens), (asset, part, md)
                kept = f"| **kept** | {md['rows_out'] - details.get('rows_added', 0):,} | {tokens} |"
                assert kept in md["funnel"] and md["funnel"].count("`") >= 4, (asset, part, md["funnel"])
                assert 0 <= md["drop_rate"] <= 1 and "%" not in md["funnel"].split("**kept**")[1].partition("\n")[2]
                shares = [float(c) for c in re.findall(r"\| (-?[\d.]+)% `", md["funnel"])]
                assert shares and all(0 <= s <= 100 for s in shares), (asset, part, md["funnel"])
                if asset == "mixed":  # the bundled recipe upsamples: more rows written than documents read
                    assert details["rows_added"] > 0 and md["rows_out"] > md["rows_in"], md
                    # and every input document is mixed or dropped (multilingual.synthetic: not_in_recipe)
                    kept_docs = md["rows_out"] - details["rows_added"]
                    assert kept_docs + details["rows_dropped"] == md["rows_in"] and details["drops"]["not_in_recipe"]
                for reason, n in details["drops"].items():  # every drop reason is a row of the one funnel table
                    assert f"| dropped: {reason} | {n:,} |" in md["funnel"], (asset, reason)
                if asset in TASK_STEPS:  # without Ray (CURATION_WORKERS=0) the tasks ran in the steps' processes
                    assert details["task_engine"] == "in_process" and details["tasks"] > 0, (asset, part, md)
        checks = check_results(instance)
        assert {(a, c) for a, c, _ in checks} >= {
            ("raw", "records_accounted"),
            ("mixed", "weights_honoured"),
            ("mixed", "sources_fresh"),  # every source fresh: mixed passes sources_fresh
            ("tokenized", "index_matches_tokens"),
        }
        assert {a for a, c, _ in checks if c == "no_cross_zone_bytes"} == set(ALL_ASSETS)  # a check step per asset
        assert all(passed for _, _, passed in checks), [c for c in checks if not c[2]]
        assert re.search(r"^tokenized +default ", sample_run.log.read_text(), re.M)  # the table `curation run` printed

        # nothing changed: a second `curation run` recomputes nothing (and prints the same table)
        runs = len(instance.get_run_records())
        assert run(instance, local_settings(data_root=str(sample_run.root)), force=False)
        assert len(instance.get_run_records()) == runs
    assert re.search(r"^tokenized +default ", capsys.readouterr().out, re.M)


@background.job("torture_run", cost=35)
def _torture_run(tmp: Path) -> types.SimpleNamespace:
    corpus = find_shared_corpus()
    if corpus is None:
        pytest.skip("the shared development corpus (../shared/corpus) is not on this machine")
    return curation_run(
        tmp,
        CURATION_DATA_ROOT=tmp / "data",
        CURATION_SOURCES=corpus_yaml("torture_sources.yaml", corpus, tmp),
        CURATION_RECIPE=FIXTURES / "torture_recipe.yaml",
    )


@pytest.mark.background("torture_run")
def test_torture_set_quarantines_every_bad_record_and_keeps_every_good_one(shared_corpus):
    import dagster as dg
    import polars as pl

    from resources.cost_guard import CostGuard
    from resources.io_manager import ParquetIOManager
    from resources.store import ObjectStore

    res = background.result("torture_run")
    assert res.code == 0, res.output()  # the whole graph finishes
    with open_instance(res.home) as instance:
        md = latest(instance, "raw", "torture")
    io = ParquetIOManager(base_uri=str(res.home.parent / "data"), store=ObjectStore(), cost_guard=CostGuard())
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
    dropped = md["details"]["rows_dropped"]
    assert md["rows_out"] == docs.height and dropped == quarantine["records_lost"].sum()
    assert md["rows_in"] == docs.height + dropped  # a lost frame or file counts the records it held
    assert quarantine["drop_reason"].str.contains(r"^[a-z0-9_]+$").all()
    assert quarantine["location"].str.contains(r"^(line|row|record|frame):\d+$|^file$").all()


@background.job("shared_corpus_run", cost=120)
def _shared_corpus_run(tmp: Path) -> types.SimpleNamespace:
    corpus = find_shared_corpus()
    if corpus is None:
        pytest.skip("the shared development corpus (../shared/corpus) is not on this machine")
    # web-warc is web again in another container: corpus-wide dedup removes all of it (kept in web, first in the
    # priority order), which deduped's drop_rate check would stop as a source ingested twice; let it through here.
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    thresholds["deduped"]["max_drop_rate"] = 1.0
    # the same pages are filtered the same way (incl. web's quality cut), so every web-warc survivor is a web one
    thresholds["filtered"]["per_source"]["web-warc"] = thresholds["filtered"]["per_source"]["web"]
    (tmp / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    return curation_run(
        tmp,
        CURATION_DATA_ROOT=tmp / "data",
        CURATION_SOURCES=corpus_yaml("shared_corpus_sources.yaml", corpus, tmp),
        CURATION_RECIPE=FIXTURES / "shared_corpus_recipe.yaml",
        CURATION_THRESHOLDS=tmp / "thresholds.yaml",
    )


@pytest.mark.slow
@pytest.mark.background("shared_corpus_run")
def test_shared_corpus_in_every_format_runs_the_whole_graph(shared_corpus):
    res = background.result("shared_corpus_run")
    assert res.code == 0, res.output()
    with open_instance(res.home) as instance:
        raw = {s: latest(instance, "raw", s) for s in ["web", "web-warc", "code", "books", "multilingual"]}
        warc = latest(instance, "deduped", "web-warc")
        assert warc["rows_out"] == 0 and warc["details"]["rows_dropped"] == warc["rows_in"] > 0  # every filtered doc
        assert latest(instance, "dedup_clusters", None)["details"]["removed_cross_source"] >= warc["rows_in"]
        mixed, tokenized = latest(instance, "mixed", None), latest(instance, "tokenized", None)
        # without a target the mixture is the largest that repeats nothing: bounded by the scarcest component
        assert mixed["tokens"] > 1_000_000 and tokenized["tokens"] == mixed["tokens"] + mixed["rows_out"]  # + EOTs
        books = latest(instance, "filtered", "books")
        deduped, synthetic = latest(instance, "deduped", "books"), latest(instance, "synthetic", "books")
    # synthetic's tasks write their row range's documents and what each generator made of its seeds, so no document
    # returns to the step: more parts than tasks, one schema, deduped's documents first (in order), then the made ones
    docs = pl.scan_parquet(Path(deduped["uri"], "data", "*.parquet")).collect()
    made = pl.scan_parquet(Path(synthetic["uri"], "data", "*.parquet")).collect()
    assert len(list(Path(synthetic["uri"], "data").glob("part-*.parquet"))) > synthetic["details"]["tasks"] > 1
    assert made.head(docs.height).select(docs.columns).equals(docs) and made.height == synthetic["rows_out"]
    generated = made.slice(docs.height)
    assert generated.height == synthetic["details"]["synthetic_docs"] > 0 and generated["generator"].null_count() == 0
    # filtered's pass-2 tasks write their batch's dropped rows too: one part per batch that dropped any, one schema
    # (the folder reads as one table), and what the step reports per reason is what the parts hold
    parts = sorted(Path(books["uri"], "dropped").glob("part-*.parquet"))
    assert len(parts) == books["details"]["tasks"] // 2 > 1  # a task per batch in each of the two passes
    dropped = pl.scan_parquet(Path(books["uri"], "dropped", "*.parquet")).collect()
    counts = dict(dropped.group_by("drop_reason").len().iter_rows())
    assert counts == books["details"]["drops"] and sum(counts.values()) == books["details"]["rows_dropped"]
    assert raw["web"]["rows_out"] == raw["web-warc"]["rows_out"] == 1904  # JSONL.zst + Parquet == WARC
    # the same extraction from both containers (raw's tokens are estimates, from samples of other doc_ids)
    assert raw["web"]["details"]["text_bytes"] == raw["web-warc"]["details"]["text_bytes"]
    assert sum(r["rows_out"] for r in raw.values()) == 15_409 + 1904
    assert all(r["details"]["rows_dropped"] == 0 for r in raw.values())


@background.job("s3_graph_run", cost=140)
def _s3_graph_run(tmp: Path) -> types.SimpleNamespace:
    """The embedded default with the data root on S3, its partitions at once in the pool of `curation run` (two
    worker processes: CURATION_WORKERS=2, the default on this machine), the steps' tasks on the session's Ray cluster
    (whose workers read and write S3 themselves)."""
    endpoint = s3_server()
    res = curation_run(tmp, CURATION_DATA_ROOT="s3://curation/e2e", CURATION_S3_ENDPOINT=endpoint, CURATION_WORKERS=2)
    res.endpoint = endpoint
    return res


@pytest.mark.s3
@pytest.mark.background("s3_graph_run")
def test_whole_graph_with_the_data_root_on_s3_writes_what_the_local_run_writes(sample_run):
    from resources.store import ObjectStore

    res = background.result("s3_graph_run")
    assert res.code == 0, res.output()
    with open_instance(res.home) as instance:
        assert latest(instance, "tokenized", None)["tokens"] > 0
        md = latest(instance, "raw", "web")
        cost = md["details"]["cost"]
        assert cost["bytes_local"] > 0 and cost["cross_az_bytes"] == 0  # a local guard sees no zones
        for asset in TASK_STEPS:  # every heavy step ran its shards as Ray tasks
            for part in load_config().source_names if asset in SOURCE_ASSETS else [None]:
                md = latest(instance, asset, part)
                assert md["details"]["task_engine"] == "ray" and md["details"]["tasks"] > 0, (asset, part, md)
    store = ObjectStore(endpoint_url=res.endpoint)
    files = json.loads(store.read_bytes("s3://curation/e2e/tokenized/_all/_latest.json"))["files"]
    assert files and all(u.startswith("tokenized/_all/") for u in files.values())  # relative to the data root
    # Two clean runs of the same config (another instance, another kind of data root, partitions at once or one at a
    # time, every task on Ray or in its step's process) write the same bytes: every file of the current version of
    # every asset partition
    cfg = load_config()
    partitions = {a: list(cfg.source_names) if a in SOURCE_ASSETS else [None] for a in ALL_ASSETS}
    local = snapshot(ObjectStore(), str(sample_run.root), partitions)
    assert len(local) > 2 * len(ALL_ASSETS) and {k.split("/")[0] for k in local} == set(ALL_ASSETS)
    assert snapshot(store, "s3://curation/e2e", partitions) == local
