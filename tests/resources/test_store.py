"""resources/store.py: the same byte-level contract on real files and on a real S3 API (moto on loopback)."""

import ast
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resources.store import LocalStore, ObjectStore, S3Store, join, kind_of, relative, store_for

REPO = Path(__file__).resolve().parents[2]


def test_kind_of_is_s3_for_s3_uris_local_for_paths_and_refuses_other_schemes():
    assert kind_of("s3://bucket/key") == "s3" and kind_of("s3://b--use1-az4--x-s3/k") == "s3"
    assert kind_of("/data/x") == "local" and kind_of("relative/x") == "local" and kind_of("") == "local"
    with pytest.raises(ValueError, match="unsupported storage scheme"):
        kind_of("gs://bucket/key")
    assert isinstance(store_for("s3://b/k"), S3Store) and isinstance(store_for("/x", staging_dir="/s"), LocalStore)
    assert store_for("/x", staging_dir="/s").staging_dir == "/s"
    assert ObjectStore().impl("s3://b/k").kind == "s3" and ObjectStore().impl("/x").kind == "local"


def test_relative_paths_round_trip_under_a_root_and_absolute_ones_are_used_as_they_are():
    for root in ("/data/root", "/data/root/", "s3://bucket/prefix", "s3://bucket/prefix/", "rel/root"):
        uri = f"{root.rstrip('/')}/filtered/web/v1/data/part-00000.parquet"
        assert relative(root, uri) == "filtered/web/v1/data/part-00000.parquet"
        assert join(root, relative(root, uri)) == uri
        # a manifest written before paths were relative names absolute URIs: they are read where they are
        assert (
            join(root, "/old/root/filtered/web/v0/part-00000.parquet") == "/old/root/filtered/web/v0/part-00000.parquet"
        )
        assert (
            join(root, "s3://other/filtered/web/v0/part-00000.parquet")
            == "s3://other/filtered/web/v0/part-00000.parquet"
        )
    assert join("s3://moved/copy", "filtered/web/v1/x") == "s3://moved/copy/filtered/web/v1/x"
    with pytest.raises(ValueError, match="is not under the data root"):
        relative("/data/root", "/data/rootless/x")
    with pytest.raises(ValueError, match="unsupported storage scheme"):
        join("/data/root", "gs://bucket/x")


def test_write_read_exists_delete(where):
    store, uri = where.store, f"{where.root}/a/b.bin"
    assert not store.exists(uri)
    with pytest.raises(FileNotFoundError):
        store.read_bytes(uri)
    store.write_bytes(uri, b"one")
    assert store.exists(uri) and store.read_bytes(uri) == b"one"
    with store.open(uri) as f:
        assert f.read() == b"one"
    store.write_bytes(uri, b"two")  # a plain write replaces
    assert store.read_bytes(uri) == b"two"
    store.delete(uri)
    assert not store.exists(uri)
    store.delete(uri)  # missing is fine


def test_a_create_only_write_never_replaces(where):
    store, uri = where.store, f"{where.root}/v/data.bin"
    store.write_bytes(uri, b"first", create_only=True)
    with pytest.raises(FileExistsError):
        store.write_bytes(uri, b"second", create_only=True)
    assert store.read_bytes(uri) == b"first"


def test_expand_lists_matching_objects_with_sizes_sorted(where):
    store, root = where.store, where.root
    for name, data in [("b/part-1.jsonl", b"12"), ("b/part-0.jsonl", b"1"), ("b/other.txt", b"123"), ("c/x", b"")]:
        store.write_bytes(f"{root}/{name}", data)
    assert store.expand(f"{root}/b/part-*") == [(f"{root}/b/part-0.jsonl", 1), (f"{root}/b/part-1.jsonl", 2)]
    assert store.expand(f"{root}/b/part-[1]*") == [(f"{root}/b/part-1.jsonl", 2)]
    assert store.expand(f"{root}/b/other.txt") == [(f"{root}/b/other.txt", 3)]
    assert store.expand(f"{root}/nothing/*") == []


def test_delete_prefix_deletes_everything_under_it_and_says_what(where):
    store, root = where.store, where.root
    for name in ("v1/a", "v1/sub/b", "v10/c"):
        store.write_bytes(f"{root}/{name}", b"x")
    assert store.delete_prefix(f"{root}/v1") == [f"{root}/v1/a", f"{root}/v1/sub/b"]
    assert store.expand(f"{root}/v1*/*") == [(f"{root}/v10/c", 1)]  # a sibling sharing the prefix is kept


def test_list_dirs_local_oldest_first_by_mtime(tmp_path):
    store = ObjectStore()
    for i, name in enumerate(["c", "a", "b"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "file").write_bytes(b"")
    assert store.list_dirs(str(tmp_path)) == ["c", "a", "b"]
    assert store.list_dirs(str(tmp_path / "missing")) == []


@pytest.mark.s3
def test_list_dirs_s3_by_name(s3_endpoint):
    store, root = ObjectStore(endpoint_url=s3_endpoint), f"s3://curation/dirs-{os.urandom(4).hex()}"
    for name in ("c/x", "a/y", "b/z/deep", "file"):
        store.write_bytes(f"{root}/{name}", b"")
    assert store.list_dirs(root) == ["a", "b", "c"] and store.list_dirs(root + "/") == ["a", "b", "c"]
    assert store.list_dirs(f"{root}/missing") == []


def test_local_list_since_keys_tokens_and_times(tmp_path):
    zone = tmp_path / "zone"
    (zone / "news" / "sub").mkdir(parents=True)
    old, new = zone / "news" / "part-0.jsonl", zone / "news" / "sub" / "part-1.jsonl"
    old.write_bytes(b"12")
    new.write_bytes(b"123")
    (zone / "top.jsonl").write_bytes(b"")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    listed = {x.key: x for x in ObjectStore().list_since(str(zone), None)}
    assert set(listed) == {"news/part-0.jsonl", "news/sub/part-1.jsonl", "top.jsonl"}
    x = listed["news/part-0.jsonl"]
    assert x.uri == str(old) and x.token == f"{old}@2:{old.stat().st_mtime_ns}"
    assert x.modified == datetime.fromtimestamp(1_000_000, tz=UTC)
    since = datetime.fromtimestamp(1_000_000, tz=UTC)  # strictly after
    assert [x.key for x in ObjectStore().list_since(str(zone), since) if x.key != "top.jsonl"] == [
        "news/sub/part-1.jsonl"
    ]
    assert ObjectStore().list_since(str(tmp_path / "missing"), None) == []


@pytest.mark.s3
def test_s3_list_since_keys_tokens_and_times(s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    prefix = f"landing-{os.urandom(4).hex()}"
    for key in ("news/part-0.jsonl", "news/sub/part-1.jsonl", "top.jsonl"):
        s3.put_object(Bucket="curation", Key=f"{prefix}/{key}", Body=b"x")
    heads = {o["Key"]: o for o in s3.list_objects_v2(Bucket="curation", Prefix=f"{prefix}/")["Contents"]}
    store = ObjectStore(endpoint_url=s3_endpoint)
    for zone in (f"s3://curation/{prefix}", f"s3://curation/{prefix}/"):
        listed = {x.key: x for x in store.list_since(zone, None)}
        assert set(listed) == {"news/part-0.jsonl", "news/sub/part-1.jsonl", "top.jsonl"}
        x, head = listed["news/part-0.jsonl"], heads[f"{prefix}/news/part-0.jsonl"]
        assert x.uri == f"s3://curation/{prefix}/news/part-0.jsonl"
        assert x.token == f"{prefix}/news/part-0.jsonl@{head['ETag']}" and x.modified == head["LastModified"]
    newest = max(o["LastModified"] for o in heads.values())
    assert store.list_since(f"s3://curation/{prefix}", newest) == []  # strictly after
    assert len(store.list_since(f"s3://curation/{prefix}", newest - timedelta(seconds=5))) == 3


def test_local_writes_are_assembled_in_the_staging_dir_and_renamed(tmp_path, monkeypatch):
    staging = tmp_path / ".data.staging"
    store = ObjectStore(staging_dir=str(staging))
    renamed, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append((src, dst)), real(src, dst)))
    store.write_bytes(f"{tmp_path}/data/x/y.json", b"{}")
    ((src, dst),) = renamed
    assert Path(src).parent == staging and Path(src).name.startswith(".tmp-") and dst == f"{tmp_path}/data/x/y.json"
    store.write_bytes(f"{tmp_path}/data/x/z.json", b"{}", tmp_dir=str(tmp_path / "elsewhere"))
    assert Path(renamed[1][0]).parent == tmp_path / "elsewhere"
    assert list(staging.iterdir()) == [] and not list((tmp_path / "data").rglob(".tmp-*"))
    # without a staging dir the temp file is a sibling of the target, never left behind
    ObjectStore().write_bytes(f"{tmp_path}/plain/a", b"a", create_only=True)
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["a"]


def test_storage_options():
    assert ObjectStore().storage_options("/x/y.parquet") is None
    assert ObjectStore(region="eu-west-1").storage_options("s3://b/k") == {"aws_region": "eu-west-1"}
    assert ObjectStore(endpoint_url="http://127.0.0.1:9").storage_options("s3://b/k") == {
        "aws_region": "us-east-1",
        "aws_endpoint_url": "http://127.0.0.1:9",
        "aws_allow_http": "true",
    }


@pytest.mark.s3
def test_one_s3_client_per_process_endpoint_and_region(s3_endpoint):
    a, b = ObjectStore(endpoint_url=s3_endpoint), ObjectStore(endpoint_url=s3_endpoint, staging_dir="/x")
    assert a.impl("s3://curation/x").client is b.impl("s3://curation/y").client
    assert (
        a.impl("s3://curation/x").client
        is not ObjectStore(endpoint_url=s3_endpoint, region="eu-west-1").impl("s3://curation/x").client
    )
    # dagster-aws S3Resource's default max_attempts=5: botocore's standard mode, the first try and five retries
    assert a.impl("s3://curation/x").client.meta.config.retries == {"mode": "standard", "total_max_attempts": 6}


@pytest.mark.s3
def test_s3_throttling_and_dropped_connections_are_retried_and_a_permanent_error_names_the_object(s3_proxy):
    store, uri = ObjectStore(endpoint_url=s3_proxy.endpoint), f"s3://curation/retry-{os.urandom(4).hex()}/obj"
    faults = iter([(503, "SlowDown"), "reset"])
    s3_proxy.policy = lambda method, path: next(faults, None) if method == "PUT" else None
    store.write_bytes(uri, b"payload")  # third attempt
    assert [m for m, p in s3_proxy.log if m == "PUT"] == ["PUT"] * 3 and store.read_bytes(uri) == b"payload"
    s3_proxy.policy = lambda method, path: (403, "AccessDenied") if method == "PUT" else None
    with pytest.raises(OSError, match=f"PUT {uri} failed: AccessDenied"):
        store.write_bytes(uri, b"again")


# -- no storage branching outside the store -------------------------------------------------------------------

SCANNED = ("resources", "curation_assets")
# The store itself; and the config (pure: it may not import the store), where a user's relative source paths are
# resolved against the sources file (`resolve_uri`: a URL or an absolute path is kept as written) and checked
# (`path_problems`, for `curation validate`: URLs are not listed). Nothing else may look at a URI's scheme: it asks
# `resources.store.kind_of` or a store.
ALLOWED = {
    ("resources/store.py", "*"),
    ("curation_assets/config/__init__.py", "is_url"),
}


def scheme_checks(path: Path) -> list[tuple[int, str, str]]:
    """(line, enclosing function, source) of every expression that branches on a URI scheme: `x.startswith("s3://")`
    (or any literal with `://`, or `s3:`), `"://" in x`, `x[:5] == "s3://"`."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def literal(node) -> bool:
        values = node.elts if isinstance(node, ast.Tuple) else [node]
        return any(
            isinstance(v, ast.Constant) and isinstance(v.value, str) and ("://" in v.value or v.value.startswith("s3:"))
            for v in values
        )

    def visit(node, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            hit = (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in ("startswith", "endswith")
                and any(literal(a) for a in child.args)
            ) or (isinstance(child, ast.Compare) and any(literal(x) for x in [child.left, *child.comparators]))
            if hit:
                found.append((child.lineno, name, ast.get_source_segment(path.read_text(), child)))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_nothing_outside_the_store_branches_on_a_uri_scheme():
    bad = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for line, func, src in scheme_checks(path):
                if (rel, "*") not in ALLOWED and (rel, func) not in ALLOWED:
                    bad.append(f"{rel}:{line} ({func}): {src}")
    assert bad == []


def test_the_scheme_scan_catches_each_form(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f(uri, p):\n"
        "    a = uri.startswith('s3://')\n"
        "    b = '://' in uri\n"
        "    c = '://' not in p\n"
        "    d = uri[:5] == 's3://'\n"
        "    e = uri.startswith(('s3://', 'gs://'))\n"
        "    ok = uri.startswith('http:') or 's3' in uri or uri.removeprefix('s3://')\n"
    )
    assert [line for line, _, _ in scheme_checks(module)] == [2, 3, 4, 5, 6]
