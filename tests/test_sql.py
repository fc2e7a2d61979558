"""`curation sql`: DuckDB views over the current version of every asset partition, on the session's run of the bundled
sample (staged into a root of its own, beside a planted old version) and on an s3:// root on the loopback server."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from curation_assets.core.frames import StepOutput
from curation_assets.sql import VIEWS, files_of
from resources.cost_guard import CostGuard
from resources.io_manager import ParquetIOManager
from resources.store import ObjectStore
from resources.versions import resolved
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
    """filtered[books] of the sample run copied to s3://curation/sql/ beside an older version: its manifest, which
    names its files relative to the data root, is copied as it is; HOME is empty, so no extension installed there
    can be what reads it."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    stored = (sample_run.root / "filtered/books/_latest.json").read_bytes()
    manifest = json.loads(stored)
    for path in [*manifest["parts"], *manifest["dropped"], *manifest["side"].values()]:
        s3.upload_file(str(sample_run.root / path), "curation", f"sql/{path}")
    s3.put_object(Bucket="curation", Key="sql/filtered/books/_latest.json", Body=stored)
    manifest = resolved(manifest, str(sample_run.root))  # where ledger_counts reads them
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
    code, lines = curation("paths", "filter_ledger", cwd=tmp_path, **env)
    assert code == 0 and lines == [f"s3://curation/sql/filtered/books/{manifest['version']}/ledger"]


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


def manifests(root: Path) -> dict[str, dict]:
    """`<asset>/<partition>` -> the manifest of its current version under `root`, as stored."""
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text()) for p in root.glob("*/*/_latest.json")}


def view_counts(root: Path, cwd: Path) -> dict[str, int]:
    """Rows of every view over the root, by `curation sql`."""
    union = " union all ".join(f"select '{v}', count(*) from {v}" for v in [*VIEWS, "drops"])
    return {v: int(n) for v, n in query(union, cwd, CURATION_DATA_ROOT=str(root))}


def manifest_paths(m: dict) -> list[str]:
    return [*m.get("parts", []), *m.get("dropped", []), *m.get("side", {}).values(), *m.get("files", {}).values()]


def test_a_copied_and_moved_root_reads_the_same_through_sql_and_the_io_manager(sample_run, tmp_path):
    """The bundled run's manifests name their files relative to the data root: a copy of the root, moved again
    with the first copy gone, gives every view the same rows and loads through the IO manager."""
    assert all(not Path(p).is_absolute() for m in manifests(sample_run.root).values() for p in manifest_paths(m))
    shutil.copytree(sample_run.root, tmp_path / "copy")
    shutil.move(tmp_path / "copy", tmp_path / "moved")
    moved = tmp_path / "moved"
    assert view_counts(moved, tmp_path) == view_counts(sample_run.root, tmp_path)
    io = ParquetIOManager(base_uri=str(moved), store=ObjectStore(), cost_guard=CostGuard())
    loaded = io.load_input(dg.build_input_context(asset_key=dg.AssetKey("filtered"), partition_key="books"))
    assert loaded.collect().height == manifests(moved)["filtered/books"]["rows"] > 0
    assert all(f.startswith(f"{moved}/") for f in io.load_files(dg.AssetKey("tokenized")).values())


def scan_rows(paths: list[str]) -> int:
    return pl.scan_parquet(paths).select(pl.len()).collect().item()


def test_paths_names_each_tables_current_folder_of_one_schema_and_never_an_old_versions_rows(sample_run, tmp_path):
    """`curation paths TABLE` prints the current version's folder of each table: its files have one schema (what HF
    `datasets`' data_dir needs), a glob over it gives exactly the manifest's rows; after a second, changed version
    of filtered[web] is published, it names the new folder only, while a glob over every version counts both."""
    root = tmp_path / "data"
    shutil.copytree(sample_run.root, root)
    env = {"CURATION_DATA_ROOT": str(root)}
    current = manifests(root)
    rows = {"parts": "rows", "dropped": "rows_dropped"}
    for table, view in VIEWS.items():
        if view.files.startswith("file:"):  # tokens: the one documents.parquet beside the token shards
            code, lines = curation("paths", table, cwd=tmp_path, **env)
            assert code == 0 and lines == [
                f"{root}/tokenized/_all/{current['tokenized/_all']['version']}/documents.parquet"
            ]
            continue
        code, lines = curation("paths", table, "--glob", cwd=tmp_path, **env)
        partitions = {k: m for k, m in current.items() if k.startswith(f"{view.asset}/")}
        if table == "quarantine" and code == 1:  # the sample has no broken records: nothing to point at
            assert all(not m["dropped"] for m in partitions.values()) and "has no rows" in lines[0], lines
            continue
        assert code == 0, lines
        folder = view.files.partition(":")[2] or {"parts": "data", "dropped": "dropped"}[view.files]
        want = {
            f"{root}/{k}/{m['version']}/{folder}/*.parquet" for k, m in partitions.items() if files_of(m, view.files)
        }
        assert set(lines) == want, table
        for glob in lines:
            files = sorted(Path(glob).parent.iterdir())
            assert all(f.name.startswith("part-") for f in files)
            assert len({str(pq.read_schema(f)) for f in files}) == 1, glob  # one schema under a table folder
        if view.files in rows:
            assert scan_rows(lines) == sum(m[rows[view.files]] for m in partitions.values()), table
        else:  # a side table: every document the step decided on
            assert scan_rows(lines) == sum(m["rows"] + m["rows_dropped"] for m in partitions.values()), table

    # a second, changed version of filtered[web]
    io = ParquetIOManager(base_uri=str(root), store=ObjectStore(), cost_guard=CostGuard(), keep_versions=9)
    kept = io.scan(dg.AssetKey("filtered"), "web").collect().head(10)
    ledger = pl.read_parquet(io.manifest(dg.AssetKey("filtered"), "web")["side"]["ledger"]).head(10)
    dropped = io.scan(dg.AssetKey("filtered"), "web", dropped=True).collect().head(0)
    out = StepOutput(
        kept=iter([kept]), dropped=lambda: dropped, rows_in=10, bytes_in=1, config_version="v2", side={"ledger": ledger}
    )
    io.handle_output(
        dg.build_output_context(asset_key=dg.AssetKey("filtered"), partition_key="web", run_id="f" * 36), out
    )
    new = json.loads((root / "filtered/web/_latest.json").read_text())["version"]
    assert new != current["filtered/web"]["version"]
    code, lines = curation("paths", "filtered", "--source", "web", cwd=tmp_path, **env)
    assert code == 0 and lines == [f"{root}/filtered/web/{new}/data"]
    assert scan_rows([f"{lines[0]}/*.parquet"]) == 10
    every = scan_rows([str(root / "filtered/web/*/data/*.parquet")])
    assert every == 10 + current["filtered/web"]["rows"]  # what a glob over the versions counts
    assert query("select count(*) from filtered where source = 'web'", tmp_path, **env) == [("10",)]
    # `curation prune --keep 1` leaves the current version alone (a local root; never synthetic or tokenized)
    code, lines = curation("prune", "--keep", "1", cwd=tmp_path, **env)
    old = current["filtered/web"]["version"]
    assert code == 0 and f"filtered[web]: removed {old}" in lines and lines[-1].startswith("pruned 1 old versions")
    assert scan_rows([str(root / "filtered/web/*/data/*.parquet")]) == 10
    assert sorted(p.name for p in (root / "synthetic/web").iterdir()) == sorted(
        [current["synthetic/web"]["version"], "_latest.json"]
    )
    code, lines = curation("paths", "filtered", "--source", "nowhere", cwd=tmp_path, **env)
    assert code == 1 and lines == [f"paths: filtered[nowhere] has no rows in a current version under {root}"]
