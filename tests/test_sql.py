"""`curation sql`: DuckDB views over the current version of every asset partition, on the session's run of the bundled
sample (staged into a root of its own, beside a planted old version) and on an s3:// root on the loopback server."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import polars as pl
import pytest

from curation_assets.sql import VIEWS
from tests.helpers import stage
from tests.test_cli import curation

OLD = "00000000-0ld0ld00"  # a version folder no manifest names: nothing of it may show


def query(sql: str, cwd: Path, **env: str) -> list[tuple[str, ...]]:
    """The rows `curation sql SQL --csv` prints (its header dropped); it must exit 0."""
    code, lines = curation("sql", sql, "--csv", cwd=cwd, **env)
    assert code == 0, lines
    return [tuple(r) for r in csv.reader(lines[1:])]


def plant_old_ledger(folder: Path) -> None:
    """An older version of a filtered partition whose every row has the drop reason `old_version`."""
    folder.mkdir(parents=True)
    pl.DataFrame({"doc_id": ["stale"], "kept": [False], "drop_reason": ["old_version"]}).write_parquet(
        folder / "ledger.parquet"
    )


def ledger_counts(manifests: list[dict]) -> dict[str, int]:
    """drop_reason -> documents, from the ledgers the manifests name (polars, not DuckDB)."""
    ledger = pl.concat([pl.read_parquet(m["side"]["ledger"]).select("drop_reason") for m in manifests])
    return {str(r): n for r, n in ledger.group_by("drop_reason").len().iter_rows()}


def test_views_span_every_partition_of_the_current_versions_only(sample_run, tmp_path):
    root = tmp_path / "data"
    for manifest in sample_run.root.glob("*/*/_latest.json"):  # the sample's current versions; their files stay put
        stage(sample_run.root, root, manifest.parent.parent.name, manifest.parent.name)
    plant_old_ledger(root / "filtered" / "web" / OLD)
    env = {"CURATION_DATA_ROOT": str(root)}
    filtered = {p.parent.name: json.loads(p.read_text()) for p in root.glob("filtered/*/_latest.json")}
    assert set(filtered) == {"web", "code", "books", "multilingual"}

    code, lines = curation("sql", "select drop_reason, count(*) from filter_ledger group by 1", cwd=tmp_path, **env)
    assert code == 0 and "drop_reason" in lines[1], lines  # DuckDB's table: the header under the top border

    got = query("select coalesce(drop_reason, 'kept'), count(*) from filter_ledger group by 1", tmp_path, **env)
    want = {("kept" if r == "None" else r): n for r, n in ledger_counts(list(filtered.values())).items()}
    assert {r: int(n) for r, n in got} == want and "old_version" not in want

    # the ledger has no `source`: the view adds the partition
    got = query("select source, count(*) from filter_ledger group by 1", tmp_path, **env)
    assert {s: int(n) for s, n in got} == {s: m["rows"] + m["rows_dropped"] for s, m in filtered.items()}

    # why was document X dropped / drop reasons by source / which cluster holds doc Y: one line each
    doc = pl.read_parquet(filtered["web"]["dropped"][0]).row(0, named=True)
    got = query(f"select asset, source, drop_reason from drops where doc_id = '{doc['doc_id']}'", tmp_path, **env)
    assert ("filtered", "web", doc["drop_reason"]) in got
    got = query("select asset, source, drop_reason, count(*) from drops group by all", tmp_path, **env)
    by_reason = {(a, s, r): int(n) for a, s, r, n in got}
    for source, m in filtered.items():
        want = dict(pl.read_parquet(m["dropped"]).group_by("drop_reason").len().iter_rows()) if m["dropped"] else {}
        assert want == {r: n for (a, s, r), n in by_reason.items() if (a, s) == ("filtered", source)}
    ledger = pl.read_parquet(json.loads((root / "dedup_clusters/_all/_latest.json").read_text())["parts"])
    member = ledger.filter(pl.col("cluster_size") > 1).sort("doc_id").row(0, named=True)
    got = query(
        f"select cluster_id, kept_doc_id from dedup_ledger where doc_id = '{member['doc_id']}'", tmp_path, **env
    )
    assert got == [(member["cluster_id"], member["kept_doc_id"])]

    tokens = json.loads((root / "tokenized/_all/_latest.json").read_text())["files"]["documents.parquet"]
    assert query("select count(*) from tokens", tmp_path, **env) == [(str(pl.read_parquet(tokens).height),)]
    views = query("select view_name from duckdb_views() where not internal", tmp_path, **env)
    assert {v for (v,) in views} == {*VIEWS, "drops"}


def test_an_unknown_view_or_bad_sql_is_one_line_and_exit_code_2(tmp_path):
    env = {"CURATION_DATA_ROOT": str(tmp_path / "empty")}
    code, lines = curation("sql", "select * from filtred", cwd=tmp_path, **env)
    assert code == 2 and len(lines) == 1 and "filtred does not exist" in lines[0] and "(views: " in lines[0], lines
    code, lines = curation("sql", "selec 1", cwd=tmp_path, **env)
    assert code == 2 and len(lines) == 1 and "syntax error" in lines[0], lines


@pytest.mark.s3
def test_an_s3_root_is_read_by_the_packaged_httpfs_and_only_its_current_version(sample_run, s3_endpoint, tmp_path):
    """filtered[books] of the sample run copied to s3://curation/sql/ with its manifest rewritten to the copies, beside
    an older version; HOME is empty, so no extension installed there can be what reads it."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    manifest = json.loads((sample_run.root / "filtered/books/_latest.json").read_text())
    prefix = f"sql/filtered/books/{manifest['version']}"

    def upload(uri: str) -> str:
        key = f"{prefix}/{Path(uri).name}"
        s3.upload_file(uri, "curation", key)
        return f"s3://curation/{key}"

    copied = {
        **manifest,
        "parts": [upload(u) for u in manifest["parts"]],
        "dropped": [upload(u) for u in manifest["dropped"]],
        "side": {n: upload(u) for n, u in manifest["side"].items()},
    }
    s3.put_object(Bucket="curation", Key="sql/filtered/books/_latest.json", Body=json.dumps(copied).encode())
    plant_old_ledger(tmp_path / "old")
    s3.upload_file(str(tmp_path / "old/ledger.parquet"), "curation", f"sql/filtered/books/{OLD}/ledger.parquet")
    (tmp_path / "home").mkdir()
    env = {
        "CURATION_DATA_ROOT": "s3://curation/sql",
        "CURATION_S3_ENDPOINT": s3_endpoint,
        "HOME": str(tmp_path / "home"),
    }

    got = query("select coalesce(drop_reason, 'kept'), count(*) from filter_ledger group by 1", tmp_path, **env)
    want = {("kept" if r == "None" else r): n for r, n in ledger_counts([manifest]).items()}
    assert {r: int(n) for r, n in got} == want
    assert query("select source, count(*) from filtered group by 1", tmp_path, **env) == [
        ("books", str(manifest["rows"]))
    ]
    assert not list((tmp_path / "home").rglob("*.duckdb_extension"))  # nothing was installed at run time


def test_without_a_query_it_is_a_shell_that_survives_a_bad_statement(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "curation_assets.cli", "sql"],
        check=False,
        input="select 41 +\n 1 as answer;\nselect * from nope;\nselect 'still here' as s;\n.quit\n",
        env={**os.environ, "CURATION_DATA_ROOT": str(tmp_path / "empty")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "42" in res.stdout and "still here" in res.stdout
    assert "error: Catalog Error: Table with name nope does not exist!" in res.stdout
