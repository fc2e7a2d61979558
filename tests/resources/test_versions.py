"""resources/versions.py: write-once versions (local staging + rename, S3 create-only PUTs), listing, pruning and
audited removal, on real files and on the loopback S3 server."""

import getpass
import json
import os
from pathlib import Path

import pytest

from resources import versions
from resources.versions import (
    KEEP_VERSIONS,
    MANIFEST,
    PROTECTED,
    UNPARTITIONED,
    ProtectedVersionError,
    begin,
    list_versions,
    prune,
    remove_version,
    staging_dir_for,
)


def test_constants_are_unchanged():
    assert (MANIFEST, UNPARTITIONED, KEEP_VERSIONS, PROTECTED) == (
        "_latest.json",
        "_all",
        3,
        ("synthetic", "tokenized"),
    )


def test_staging_dir_is_beside_a_local_root_and_none_on_s3(tmp_path):
    assert staging_dir_for(str(tmp_path / "data")) == str(tmp_path / ".data.staging")
    assert staging_dir_for(str(tmp_path / "data") + "/") == str(tmp_path / ".data.staging")
    assert staging_dir_for("s3://bucket/prefix") is None


def test_version_ids_name_the_run_and_are_unique():
    ids = {versions.new_version_id("0123456789abcdef") for _ in range(100)}
    assert len(ids) == 100 and all(len(v) == 17 and v.startswith("01234567-") for v in ids)


def setup(where):
    impl = where.store.impl(where.root)
    return impl, f"{where.root}/filtered/web", staging_dir_for(where.root)


def test_a_version_is_invisible_until_committed_then_complete(where):
    impl, part, staging = setup(where)
    out = begin(impl, where.root, part, "v1", staging)
    # a file may sit in a table folder; write returns its path relative to the data root (what a manifest records)
    paths = [out.write("data/part-00000.parquet", b"a"), out.write("dropped/part-00000.parquet", b"bb")]
    assert paths == ["filtered/web/v1/data/part-00000.parquet", "filtered/web/v1/dropped/part-00000.parquet"]
    uris = [f"{part}/v1/data/part-00000.parquet", f"{part}/v1/dropped/part-00000.parquet"]
    assert uris == out.written and out.path == "filtered/web/v1" and out.final == f"{part}/v1"
    if where.kind == "local":  # assembled beside the root, nothing under it yet
        assert out.staging == str(Path(staging) / "filtered" / "web" / "v1")
        assert sorted(os.listdir(out.staging)) == ["data", "dropped"]
        assert not os.path.exists(part)
    else:  # S3: each file is a create-only PUT straight to its final key
        assert out.staging is None
    out.commit()
    assert [(u, n) for u, n in where.store.expand(f"{part}/v1/*/*")] == [(uris[0], 1), (uris[1], 2)]
    assert list_versions(impl, part) == ["v1"]
    if where.kind == "local":
        assert not os.path.exists(out.staging)


def test_a_manifest_resolves_relative_paths_against_the_root_and_keeps_absolute_ones():
    stored = {
        "version": "v1",
        "parts": ["filtered/web/v1/data/part-00000.parquet"],
        "dropped": ["/old/root/filtered/web/v1/dropped-00000.parquet"],  # written before paths were relative
        "side": {"ledger": "filtered/web/v1/ledger/part-00000.parquet"},
        "files": {"model.bin": "s3://other/quality_model/_all/v1/model.bin"},
        "trace": "filtered/web/v1/trace.json",
        "rows": 3,
    }
    for root in ("/moved/root", "s3://bucket/copy"):
        assert versions.resolved(stored, root) == {
            **stored,
            "parts": [f"{root}/filtered/web/v1/data/part-00000.parquet"],
            "side": {"ledger": f"{root}/filtered/web/v1/ledger/part-00000.parquet"},
            "trace": f"{root}/filtered/web/v1/trace.json",
        }
    assert versions.resolved({"version": "v1"}, "/r") == {"version": "v1"}


def test_a_version_file_is_write_once(where):
    impl, part, staging = setup(where)
    out = begin(impl, where.root, part, "v1", staging)
    out.write("data.bin", b"first")
    out.commit()
    with pytest.raises(FileExistsError):
        where.store.write_bytes(f"{part}/v1/data.bin", b"overwritten", create_only=True)
    if where.kind == "s3":
        again = begin(impl, where.root, part, "v1", staging)
        with pytest.raises(FileExistsError):
            again.write("data.bin", b"second")
    else:  # a second version of the same name is never merged into the first
        again = begin(impl, where.root, part, "v1", staging)
        again.write("other.bin", b"second")
        with pytest.raises(OSError):
            again.commit()
    assert where.store.read_bytes(f"{part}/v1/data.bin") == b"first"
    assert [u for u, _ in where.store.expand(f"{part}/v1/*")] == [f"{part}/v1/data.bin"]


def test_an_aborted_version_leaves_nothing(where):
    impl, part, staging = setup(where)
    out = begin(impl, where.root, part, "v1", staging)
    out.write("part-00000.parquet", b"a")
    out.abort()
    assert where.store.expand(f"{part}/*") == [] and where.store.expand(f"{part}/v1/*") == []
    if where.kind == "local":
        assert not os.path.exists(out.staging) and not os.path.exists(where.root)


def test_a_new_writer_clears_what_a_dead_writer_staged(tmp_path):
    from resources.store import LocalStore

    root = str(tmp_path / "data")
    staging = staging_dir_for(root)
    dead = begin(LocalStore(staging), root, f"{root}/raw/web", "dead", staging)
    dead.write("part-00000.parquet", b"half")  # killed here: never committed
    out = begin(LocalStore(staging), root, f"{root}/raw/web", "v2", staging)
    assert os.listdir(Path(staging) / "raw" / "web") == ["v2"]
    out.commit()
    assert os.listdir(f"{root}/raw/web") == ["v2"]


def make(where, part: str, names: list[str]) -> None:
    impl = where.store.impl(where.root)
    for i, name in enumerate(names):
        out = begin(impl, where.root, part, name, staging_dir_for(where.root))
        out.write("data.bin", name.encode())
        out.commit()
        if where.kind == "local":  # creation order, whatever the names say
            os.utime(f"{part}/{name}", (1_000_000 + i, 1_000_000 + i))


def test_versions_are_listed_oldest_first_locally_by_name_on_s3_never_the_audit_folder(where):
    impl, part, _ = setup(where)
    make(where, part, ["c", "a", "b"])
    where.store.write_bytes(f"{part}/_removed/x.json", b"{}")
    where.store.write_bytes(f"{part}/{MANIFEST}", b"{}")
    assert list_versions(impl, part) == (["c", "a", "b"] if where.kind == "local" else ["a", "b", "c"])
    assert list_versions(impl, f"{where.root}/missing/web") == []


def test_pruning_keeps_the_newest_local_versions_and_never_touches_protected_assets_or_s3(where):
    impl, _, _ = setup(where)
    names = ["v1", "v2", "v3", "v4", "v5"]
    for asset in ("filtered", "synthetic", "tokenized"):
        part = f"{where.root}/{asset}/web"
        make(where, part, names)
        pruned = prune(impl, part, asset, keep="v5", keep_versions=2)
        if asset in PROTECTED or where.kind == "s3":
            assert pruned == [] and list_versions(impl, part) == sorted(names)
        else:
            assert pruned == ["v1", "v2", "v3"] and list_versions(impl, part) == ["v4", "v5"]
            assert where.store.expand(f"{part}/v1/*") == []


def test_pruning_never_deletes_the_version_just_published(tmp_path):
    from resources.store import LocalStore

    impl, part = LocalStore(), str(tmp_path / "filtered" / "web")
    for i, name in enumerate(["new", "old1", "old2"]):  # `new` has the oldest mtime (a clock step back)
        os.makedirs(f"{part}/{name}")
        os.utime(f"{part}/{name}", (1_000_000 + i, 1_000_000 + i))
    assert prune(impl, part, "filtered", keep="new", keep_versions=1) == ["old1"]
    assert list_versions(impl, part) == ["new", "old2"]


def test_remove_version_refuses_protected_current_unknown_and_reasonless(where):
    impl, part, _ = setup(where)
    make(where, part, ["v1", "v2"])
    for asset in PROTECTED:
        with pytest.raises(ProtectedVersionError, match=f"{asset} versions are protected"):
            remove_version(impl, where.root, part, asset, f"{asset}[web]", "v1", current="v2", reason="disk full")
    with pytest.raises(ProtectedVersionError, match=r"filtered\[web\] v2 is the current version"):
        remove_version(impl, where.root, part, "filtered", "filtered[web]", "v2", current="v2", reason="disk full")
    with pytest.raises(ValueError, match="a reason is required"):
        remove_version(impl, where.root, part, "filtered", "filtered[web]", "v1", current="v2", reason="  ")
    with pytest.raises(FileNotFoundError, match=r"filtered\[web\] has no version 'v9'"):
        remove_version(impl, where.root, part, "filtered", "filtered[web]", "v9", current="v2", reason="x")
    assert list_versions(impl, part) == ["v1", "v2"]


def test_remove_version_refuses_crafted_names_and_locations_that_resolve_into_another_asset(where):
    """The protection is decided on the resolved location: a version name that is a path, a version folder linked
    to a protected asset's version, and a partition folder linked into another asset are refused; nothing is
    deleted."""
    impl, part, _ = setup(where)
    make(where, part, ["v1"])
    for crafted in ("../v1", ".", "v1/../v1", ""):
        with pytest.raises(ValueError, match="is not a version name"):
            remove_version(impl, where.root, part, "filtered", "filtered[web]", crafted, current=None, reason="x")
    if where.kind == "local":
        tokenized = f"{where.root}/tokenized/_all"
        make(where, tokenized, ["t1"])
        os.symlink(f"{tokenized}/t1", f"{part}/linked")
        os.makedirs(f"{where.root}/mixed")
        os.symlink(tokenized, f"{where.root}/mixed/_all")
        for root, asset, version in ((part, "filtered", "linked"), (f"{where.root}/mixed/_all", "mixed", "t1")):
            with pytest.raises(ProtectedVersionError, match=f"resolves to .*tokenized/_all/t1, outside {asset}"):
                remove_version(impl, where.root, root, asset, asset, version, current=None, reason="x")
        assert list_versions(impl, tokenized) == ["t1"] and os.listdir(f"{tokenized}/t1") == ["data.bin"]
    assert list_versions(impl, part)[0] == "v1"


def test_remove_version_deletes_it_and_leaves_an_audit_record(where, caplog):
    impl, part, _ = setup(where)
    make(where, part, ["v1", "v2"])
    deleted = remove_version(impl, where.root, part, "filtered", "filtered[web]", "v1", current="v2", reason="ticket 7")
    assert deleted == [f"{part}/v1/data.bin"] and list_versions(impl, part) == ["v2"]
    record = json.loads(where.store.read_bytes(f"{part}/_removed/v1.json"))
    assert {k: record[k] for k in ("version", "reason", "by", "files")} == {
        "version": "v1",
        "reason": "ticket 7",
        "by": getpass.getuser(),
        "files": deleted,
    } and isinstance(record["at"], float)
    assert "removed filtered[web] version v1 (1 files): ticket 7" in caplog.text
