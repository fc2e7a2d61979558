"""`curation sql`: DuckDB views over the current version of every asset partition under the data root.

A view spans every partition (source) of its asset and reads exactly the files the partition's `_latest.json`
names (`parts`, `dropped`, `side`, `files`, relative to the data root or, written before, absolute): never an older
version, never a staged one, wherever the root was copied or moved. A partitioned asset's rows
get a `source` column (the partition) where the data has none (filtered's ledger, for one). Views (VIEWS):

    raw, annotated, filtered, dedup_signatures, deduped, synthetic, mixed   each asset's kept rows
    quarantine        raw's quarantined records (drop_reason, shard, location, detail, record_id, ...)
    filter_ledger     filtered's per-document decisions (kept, drop_reason, drop_value, lang, scores, values)
    dedup_ledger      the cluster ledger (dedup_clusters: cluster_id, kept, kept_doc_id, drop_reason, jaccard)
    tokens            tokenized's documents.parquet (doc_id, source, component, epoch, shard, sequence, n_tokens)
    drops             every dropped row of every asset, with an `asset` column (union by column name)

An asset partition without a current version contributes nothing; a view with nothing to read (a clean run's
quarantine, an asset not materialized yet) has no rows and the one column `source`.

`curation paths TABLE` (`table_paths`) prints, for a view's table, the folder of the current version that holds
exactly that table's files (what HF `datasets`' `data_dir=`, a polars or DuckDB glob `<folder>/*.parquet` or
Spark take), one line per partition: the one way to read a table with another tool without counting an older
version's rows again. For a version written before tables had folders, and for `tokens` (one file beside the
token shards), it prints the files themselves.

S3 data roots are read by DuckDB's httpfs extension, loaded from the `duckdb-ext-httpfs` wheel (DuckDB's own
signed build: it loads with unsigned extensions refused), never downloaded: extension autoloading and
autoinstalling are off. It uses the store's endpoint (CURATION_S3_ENDPOINT, path-style), region and the AWS
credentials boto3 resolves.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from csv import writer as csv_writer
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from curation_assets.config import SOURCE_NAME

if TYPE_CHECKING:
    import duckdb

    from curation_assets.config.settings import Settings
    from resources.store import Store

UNPARTITIONED = "_all"  # resources.versions.UNPARTITIONED (not imported: that module loads the store)
MANIFEST = "_latest.json"
DROPS = "drops"
EMPTY = "SELECT NULL::VARCHAR AS source LIMIT 0"  # a view with nothing to read


@dataclass(frozen=True)
class View:
    asset: str
    # which files of the manifest: `parts`, `dropped`, `side:<name>` (a side table), `file:<name>` (a file set's file)
    files: str


VIEWS = {
    "raw": View("raw", "parts"),
    "quarantine": View("raw", "dropped"),
    "annotated": View("annotated", "parts"),
    "filtered": View("filtered", "parts"),
    "filter_ledger": View("filtered", "side:ledger"),
    "dedup_signatures": View("dedup_signatures", "parts"),
    "dedup_ledger": View("dedup_clusters", "parts"),
    "deduped": View("deduped", "parts"),
    "synthetic": View("synthetic", "parts"),
    "mixed": View("mixed", "parts"),
    "tokens": View("tokenized", "file:documents.parquet"),
}
# the assets whose `dropped` rows `drops` unites, in pipeline order
DROPPING = ("raw", "filtered", "dedup_signatures", "deduped", "synthetic", "mixed")


class SqlError(Exception):
    """A query DuckDB refused, or a data root it cannot read: one line."""


def files_of(manifest: dict, which: str) -> list[str]:
    """The URIs a view reads from one manifest (`View.files`)."""
    kind, _, name = which.partition(":")
    if kind == "side":
        return [u] if (u := manifest.get("side", {}).get(name)) else []
    if kind == "file":
        return [u] if (u := manifest.get("files", {}).get(name)) else []
    return list(manifest.get(kind, []))


def current_manifests(store: Store, root: str, asset: str) -> dict[str, dict]:
    """partition -> manifest of the current version of each partition of `asset` under the data root `root`, its
    paths resolved against `root`."""
    from resources.versions import resolved

    base = f"{root.rstrip('/')}/{asset}"
    out = {}
    for partition in store.list_dirs(base):
        if partition != UNPARTITIONED and not re.fullmatch(SOURCE_NAME, partition):
            continue  # never a partition folder (a stray or hostile name is not spliced into SQL)
        uri = f"{base}/{partition}/{MANIFEST}"
        if store.exists(uri):
            out[partition] = resolved(json.loads(store.read_bytes(uri)), root)
    return dict(sorted(out.items()))


def table_paths(store: Store, root: str, table: str, source: str | None = None) -> dict[str, list[str]]:
    """partition -> where the current version of the view `table` (VIEWS) is, under the data root `root`: `[folder]`
    when its files fill a folder of their own (a table folder), else the files (a version written before tables had
    folders; `tokens`). Only `source`'s partition when given; a partition without such rows is left out."""
    view = VIEWS[table]
    out = {}
    for partition, manifest in current_manifests(store, root, view.asset).items():
        if source is not None and partition != source:
            continue
        if files := files_of(manifest, view.files):
            folders = {f.rsplit("/", 1)[0] for f in files}
            own = len(folders) == 1 and next(iter(folders)).rsplit("/", 1)[1] != manifest["version"]
            out[partition] = sorted(folders) if own else files
    return out


def literal(value: str) -> str:
    """`value` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def parquet_scan(files: list[str]) -> str:
    """A scan of `files` as one table (columns united by name)."""
    return f"read_parquet([{', '.join(map(literal, files))}], union_by_name = true)"


def view_sql(
    slices: list[tuple[str, str, list[str]]], columns: Callable[[list[str]], list[str]], tag_asset: bool = False
) -> str | None:
    """The SELECT of one view over `slices` (asset, partition, files), united by column name. A slice of a
    partitioned asset gets `source` (its partition) where its files have none; with `tag_asset` every slice gets
    `asset`. `columns(files)` returns the column names of a slice's files. None: there is nothing to read."""
    selects = []
    for asset, partition, files in slices:
        if not files:
            continue
        extra = [f"{literal(asset)} AS asset"] if tag_asset else []
        if partition != UNPARTITIONED and "source" not in columns(files):
            extra.append(f"{literal(partition)} AS source")
        selects.append(f"SELECT {', '.join(['*', *extra])} FROM {parquet_scan(files)}")
    return "\nUNION ALL BY NAME\n".join(selects) or None


def httpfs_path(version: str, platform: str) -> Path | None:
    """The httpfs extension file the `duckdb-ext-httpfs` wheel ships for this DuckDB version and platform."""
    try:
        import duckdb_ext
    except ImportError:
        return None
    for base in duckdb_ext.__path__:  # a namespace package: one folder per installed extension wheel
        path = Path(base) / "extensions" / f"v{version}" / platform / "httpfs.duckdb_extension"
        if path.is_file():
            return path
    return None


def s3_secret(endpoint: str | None, region: str, credentials) -> str:
    """CREATE SECRET for httpfs with the store's endpoint (path-style, as MinIO and moto serve), region and
    `credentials` (botocore's, or None: anonymous)."""
    options = {"TYPE": "s3", "REGION": literal(region)}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options |= {"KEY_ID": literal(frozen.access_key), "SECRET": literal(frozen.secret_key)}
        if frozen.token:
            options["SESSION_TOKEN"] = literal(frozen.token)
    if endpoint:
        url = urlsplit(endpoint)
        if not url.netloc:  # a bare host[:port]: botocore's default scheme
            url = urlsplit(f"//{endpoint}", scheme="https")
        options |= {
            "ENDPOINT": literal(url.netloc),
            "URL_STYLE": "'path'",
            "USE_SSL": "true" if url.scheme == "https" else "false",
        }
    return f"CREATE SECRET curation_s3 ({', '.join(f'{k} {v}' for k, v in options.items())})"


def connect(settings: Settings) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB connection with a view per VIEWS entry (and `drops`) over the current versions under
    `settings.data_root`; and the names of the views. Nothing is downloaded: extensions neither autoload
    nor autoinstall; an s3:// root loads the packaged httpfs (SqlError if it is missing)."""
    import duckdb

    from resources.store import kind_of, store_for

    root = settings.data_root
    store = store_for(root, settings.s3_endpoint, settings.region)
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    if kind_of(root) == "s3":
        import boto3

        (platform,) = con.execute("PRAGMA platform").fetchone()
        path = httpfs_path(duckdb.__version__, platform)
        if path is None:
            raise SqlError(
                f"{root}: reading S3 needs DuckDB's httpfs for duckdb {duckdb.__version__} on {platform} "
                "(the duckdb-ext-httpfs wheel of pyproject.toml), which is not installed"
            )
        con.execute(f"LOAD {literal(str(path))}")
        con.execute(s3_secret(settings.s3_endpoint, settings.region, boto3.Session().get_credentials()))

    manifests = {a: current_manifests(store, root, a) for a in {v.asset for v in VIEWS.values()} | set(DROPPING)}

    def columns(files: list[str]) -> list[str]:
        return con.sql(f"SELECT * FROM {parquet_scan(files)}").columns

    try:
        wanted = {
            name: view_sql([(v.asset, p, files_of(m, v.files)) for p, m in manifests[v.asset].items()], columns)
            for name, v in VIEWS.items()
        }
        drops = [(a, p, files_of(m, "dropped")) for a in DROPPING for p, m in manifests[a].items()]
        wanted[DROPS] = view_sql(drops, columns, tag_asset=True)
        for name, select in wanted.items():
            con.execute(f"CREATE VIEW {name} AS {select or EMPTY}")
    except duckdb.Error as e:  # a file a manifest names cannot be read (gone, corrupt, no access)
        raise SqlError(f"{root}: {one_line(e, [])}") from e
    return con, list(wanted)


def one_line(error: Exception, views: list[str]) -> str:
    """DuckDB's message on one line (without its `LINE 1: ... ^` excerpt); an unknown table lists the views."""
    head = str(error).split("\n\n")[0]
    message = " ".join(line.strip() for line in head.splitlines() if line.strip())
    if "does not exist" in message and "Table with name" in message:
        message += f" (views: {', '.join(views)})"
    return message


def execute(con: duckdb.DuckDBPyConnection, query: str, views: list[str], out: TextIO, csv: bool = False) -> None:
    """Run `query` and write its result to `out`: DuckDB's table, or every row as CSV with a header. SqlError: one
    line."""
    import duckdb

    try:
        rel = con.sql(query)
        if rel is None:  # a statement without a result (SET, CREATE ...)
            return
        if csv:
            writer = csv_writer(out, lineterminator="\n")
            writer.writerow(rel.columns)
            while rows := rel.fetchmany(10_000):
                writer.writerows(rows)
        else:
            out.write(f"{rel}\n")  # DuckDB's box table: the first and last rows of a long result (--csv: every row)
    except duckdb.Error as e:
        raise SqlError(one_line(e, views)) from e


def shell(con: duckdb.DuckDBPyConnection, views: list[str], prompt: Callable[[str], str] = input) -> None:
    """A minimal interactive shell: statements end with `;`, `.quit` or end of input leaves; an error is one line
    and the shell goes on."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    print(f"views: {', '.join(views)}; end a statement with ';', leave with .quit or Ctrl-D")
    lines: list[str] = []
    while True:
        try:
            line = prompt("curation> " if not lines else "      ...> ")
        except EOFError:
            print()
            return
        if not lines and line.strip() in (".quit", ".exit"):
            return
        lines.append(line)
        if line.rstrip().endswith(";"):
            try:
                execute(con, "\n".join(lines), views, sys.stdout)
            except SqlError as e:
                print(f"error: {e}")
            lines = []
