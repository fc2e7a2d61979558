"""resources/io_manager.py: what the IO manager writes (files, bytes, manifest keys), what it reports in the
materialization metadata, and what it loads, on real files and on the loopback S3 server."""

import hashlib
import json
import os
import types
from io import BytesIO

import dagster as dg
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from curation_assets.core.frames import DOC_SCHEMA, FileSetOutput, StepOutput, empty_frame, parquet_bytes
from resources.cost_guard import CostGuard
from resources.engine import StepTrace, TaskStats
from resources.io_manager import ParquetIOManager
from resources.metadata import MAX_KEYS
from resources.store import ObjectStore
from resources.versions import MANIFEST, PartSink, staging_dir_for

RUN_ID = "r" * 36


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


def dropped_docs(n: int) -> pl.DataFrame:
    if not n:
        return empty_frame({**DOC_SCHEMA, "drop_reason": pl.String()})
    return docs(n, "d").with_columns(drop_reason=pl.lit("too_short"))


def step_output(parts: list[pl.DataFrame], dropped: int, **kw) -> StepOutput:
    drop = dropped_docs(dropped)
    return StepOutput(
        kept=iter(parts),
        dropped=lambda: drop,
        rows_in=sum(p.height for p in parts) + dropped,
        bytes_in=1,
        config_version="v1",
        **kw,
    )


def content_of(files: dict[str, bytes]) -> str:
    """The content address of a version with these files, computed independently of resources.versions."""
    digests = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def io_for(where, **kw) -> ParquetIOManager:
    store = where.store.model_copy(update={"staging_dir": staging_dir_for(where.root)})
    return ParquetIOManager(base_uri=where.root, store=store, cost_guard=CostGuard(data_uri=where.root), **kw)


def write(io: ParquetIOManager, obj, asset: str = "filtered", partition: str | None = "web") -> dict:
    """handle_output; returns the logged metadata (values unwrapped)."""
    ctx = dg.build_output_context(asset_key=dg.AssetKey(asset), partition_key=partition, run_id=RUN_ID)
    io.handle_output(ctx, obj)
    return {k: getattr(v, "value", v) for k, v in ctx.get_logged_metadata().items()}


def test_a_step_output_is_written_reported_and_loaded(where):
    io = io_for(where)
    parts = [docs(3), docs(0), docs(2)]
    ledger = pl.DataFrame({"doc_id": ["s0", "d0"], "decision": ["keep", "drop"]})

    def kept(sink):  # part 0 made by the step itself; parts 1 and 2 written by their tasks through the sink
        yield parts[0]
        yield sink.write(1, parts[1])  # empty after the first: nothing written
        yield sink.write(2, parts[2])

    out = step_output(parts, dropped=2, extra={"note": "x"}, side={"ledger": ledger})
    out.kept = kept
    before = dict(vars(out))
    md = write(io, out)
    assert vars(out) == before  # the output object is never changed

    root = f"{where.root}/filtered/web"
    manifest = json.loads(where.store.read_bytes(f"{root}/{MANIFEST}"))
    version = manifest["version"]
    assert version.startswith(RUN_ID[:8] + "-") and manifest["run_id"] == RUN_ID
    v, rel = f"{root}/{version}", f"filtered/web/{version}"
    # an empty part after the first is left out (its number with it: a part is named by its place in the step's
    # order); then dropped rows, then side tables, each table in a folder of its own; the manifest's paths are
    # relative to the data root
    assert manifest == {
        "version": version,
        "run_id": RUN_ID,
        "parts": [f"{rel}/data/part-00000.parquet", f"{rel}/data/part-00002.parquet"],
        "dropped": [f"{rel}/dropped/part-00000.parquet"],
        "side": {"ledger": f"{rel}/ledger/part-00000.parquet"},
        "rows": 5,
        "rows_dropped": 2,
        "tokens": 15,
        "bytes": manifest["bytes"],
        "part_bytes": manifest["part_bytes"],
        "content": manifest["content"],
        "config_version": None,  # a context built by hand has no asset definition (see the materialize tests)
        "inputs": {},
    }
    want = {
        "data/part-00000.parquet": parquet_bytes(parts[0]),
        "data/part-00002.parquet": parquet_bytes(parts[2]),
        "dropped/part-00000.parquet": parquet_bytes(dropped_docs(2)),
        "ledger/part-00000.parquet": parquet_bytes(ledger),
    }
    assert {x.key: where.store.read_bytes(x.uri) for x in where.store.list_since(v, None)} == want  # nothing else
    assert manifest["part_bytes"] == len(want["data/part-00000.parquet"]) + len(want["data/part-00002.parquet"])
    assert manifest["bytes"] == sum(map(len, want.values()))
    assert manifest["content"] == content_of(want)

    # the shown keys (at most MAX_KEYS) and the rest in `details`, with one set of cost numbers: what was written
    shown = {"rows_in", "rows_out", "drop_rate", "tokens", "bytes_out", "config_version", "funnel", "uri", "cost"}
    assert set(md) == {*shown, "details"}
    assert len(md) <= MAX_KEYS
    assert {k: md[k] for k in ("rows_in", "rows_out", "tokens")} == {"rows_in": 7, "rows_out": 5, "tokens": 15}
    assert md["bytes_out"] == manifest["bytes"] and md["config_version"] == "v1" and md["uri"] == v
    assert md["details"] == {
        "rows_dropped": 2,
        "bytes_in": 1,
        "drops": {"too_short": 2},
        "bytes_dropped": {"too_short": 20},  # the dropped texts' UTF-8 bytes
        "tokens_dropped": {"too_short": 6},
        "note": "x",
        "side_ledger": f"{v}/ledger/part-00000.parquet",
        "cost": {
            "bytes_local": manifest["bytes"],
            "cross_az_bytes": 0,
            "cross_region_bytes": 0,
            "transfer_usd": 0.0,
            "transfer_override": "",
        },
    }
    assert f"| local | {manifest['bytes']:,} |" in md["cost"] and "| dropped: too_short | 2 | 6 |" in md["funnel"]

    loaded = io.load_input(dg.build_input_context(asset_key=dg.AssetKey("filtered"), partition_key="web"))
    assert loaded.collect().equals(pl.concat([parts[0], parts[2]]))
    assert io.scan(dg.AssetKey("filtered"), "web", dropped=True).collect()["drop_reason"].to_list() == ["too_short"] * 2
    assert io.manifest(dg.AssetKey("filtered"), "web") == {  # the manifest with its paths resolved under the root
        **manifest,
        "parts": [f"{v}/data/part-00000.parquet", f"{v}/data/part-00002.parquet"],
        "dropped": [f"{v}/dropped/part-00000.parquet"],
        "side": {"ledger": f"{v}/ledger/part-00000.parquet"},
    }
    assert io.versions(dg.AssetKey("filtered"), "web") == [version]
    assert not where.store.exists(f"{root}/_lock")  # the writer lock is released


def test_a_file_set_is_written_reported_and_loaded_as_name_to_uri(where):
    io = io_for(where)
    tokens = np.array([1, 2, 100257, 70000, 100257], dtype="<u4").tobytes()
    out = FileSetOutput(files=iter([("tokens.bin", tokens), ("header.json", b"{}")]))
    before = dict(vars(out))
    md = write(io, out, "tokenized", None)
    assert vars(out) == before

    manifest = json.loads(where.store.read_bytes(f"{where.root}/tokenized/_all/{MANIFEST}"))
    v, rel = f"{where.root}/tokenized/_all/{manifest['version']}", f"tokenized/_all/{manifest['version']}"
    files = {"tokens.bin": f"{v}/tokens.bin", "header.json": f"{v}/header.json"}
    assert manifest == {
        "version": manifest["version"],
        "run_id": RUN_ID,
        "files": {"tokens.bin": f"{rel}/tokens.bin", "header.json": f"{rel}/header.json"},
        "bytes": len(tokens) + 2,
        "content": content_of({"tokens.bin": tokens, "header.json": b"{}"}),
        "config_version": None,
        "inputs": {},
    }
    assert md["uri"] == v and md["bytes_out"] == len(tokens) + 2 and md["details"]["files"] == files
    assert md["details"]["cost"]["bytes_local"] == len(tokens) + 2 and md["details"]["cost"]["transfer_override"] == ""
    assert io.load_files(dg.AssetKey("tokenized")) == files
    assert io.store.read_bytes(files["tokens.bin"]) == tokens
    assert io.load_input(dg.build_input_context(asset_key=dg.AssetKey("tokenized"))) == files


def test_a_trace_is_saved_beside_the_output(where):
    class Tracer:  # VizTracer's interface: stop(), save(output_file=..., verbose=0)
        stopped = False

        def stop(self):
            self.stopped = True

        def save(self, output_file, verbose):
            with open(output_file, "w") as f:
                f.write('{"traceEvents": []}')

    tracer = Tracer()
    task = TaskStats("web rows 0-9 (pass 2)", 1.0, 10, 0, trace=b'{"traceEvents": [{"ph": "X"}]}')  # ran on Ray
    trace = StepTrace(tracer, [task])
    md = write(io_for(where), FileSetOutput(files=iter([("a", b"a")]), trace=trace), "tokenized", None)
    manifest = json.loads(where.store.read_bytes(f"{where.root}/tokenized/_all/{MANIFEST}"))
    version = f"tokenized/_all/{manifest['version']}"
    assert tracer.stopped and manifest["trace"] == f"{version}/trace.json"
    assert md["trace"] == f"{where.root}/{manifest['trace']}" and md["trace_viewer"] == "https://ui.perfetto.dev"
    assert where.store.read_bytes(md["trace"]) == b'{"traceEvents": []}' and manifest["bytes"] == 1
    # each task's own trace, named by its place and label, in a folder the materialization links
    assert manifest["task_traces"] == [f"{version}/tasks/00000-web-rows-0-9-pass-2.json"]
    assert md["task_traces"] == f"{where.root}/{version}/tasks"
    assert where.store.read_bytes(f"{where.root}/{manifest['task_traces'][0]}") == task.trace


def test_old_versions_are_pruned_locally_and_the_newest_three_kept(tmp_path):
    io = ParquetIOManager(base_uri=str(tmp_path / "data"), store=ObjectStore(), cost_guard=CostGuard())
    made = []
    for i in range(5):
        write(io, step_output([docs(i + 1)], 0))  # new content each time (identical content is not republished)
        made.append(io.manifest(dg.AssetKey("filtered"), "web")["version"])
        os.utime(tmp_path / "data" / "filtered" / "web" / made[-1], (1_000_000 + i, 1_000_000 + i))
    assert io.versions(dg.AssetKey("filtered"), "web") == made[-3:]
    assert not list((tmp_path / "data").rglob(".tmp-*"))  # no temp file left under the root


def test_a_failed_write_leaves_nothing_and_releases_the_lock(where):
    io = io_for(where)

    def parts():
        yield docs(2)
        raise RuntimeError("the step failed while streaming")

    def written_by_tasks(sink):  # parts its tasks wrote into the staging version go with it
        yield sink.write(0, docs(2))
        yield sink.write(1, docs(1))
        raise RuntimeError("the step failed while streaming")

    def out_of_order(sink):
        yield sink.write(1, docs(2))

    nothing = [f"{where.root}/filtered/web/{'*/' * depth}*" for depth in range(3)]
    for kept, error in ((parts(), "while streaming"), (written_by_tasks, "while streaming"), (out_of_order, "order")):
        with pytest.raises((RuntimeError, ValueError), match=error):
            write(io, StepOutput(kept=kept, dropped=dropped_docs(0), rows_in=2, bytes_in=1, config_version="v1"))
        assert [where.store.expand(pattern) for pattern in nothing] == [[], [], []]
    with pytest.raises(TypeError, match="cannot persist dict"):
        write(io, {"not": "an output"})
    assert [where.store.expand(pattern) for pattern in nothing] == [[], [], []]
    write(io, step_output([docs(1)], 0))  # the lock was released both times
    assert io.scan(dg.AssetKey("filtered"), "web").collect().height == 1


def test_a_part_written_again_by_a_retried_task_is_the_same_part_and_other_bytes_are_refused(where):
    # Ray re-runs a task whose worker died after writing its part: the retry writes the same bytes again
    version = f"{where.root}/filtered/web/v"
    staging = None if where.root.startswith("s3://") else f"{staging_dir_for(where.root)}/filtered/web/v"
    sink = PartSink(version, staging, where.store.endpoint_url, where.store.region)
    first = sink.write(3, docs(2))
    assert sink.write(3, docs(2)) == first
    assert (first.index, first.rows, first.tokens) == (3, 2, 6)
    stored = where.store.read_bytes(f"{version}/data/part-00003.parquet") if staging is None else None
    if staging is None:  # write-once on S3: another content under the same name is refused, the first kept
        with pytest.raises(FileExistsError):
            sink.write(3, docs(3))
        assert where.store.read_bytes(f"{version}/data/part-00003.parquet") == stored
    assert sink.write(4, docs(0)) is None and sink.write(0, docs(0)).rows == 0  # part 0 is kept even when empty


def test_a_data_root_in_another_zone_is_refused_before_anything_is_written(tmp_path):
    guard = CostGuard(pod_region="us-east-1", pod_zone="use1-az1", data_uri="s3://out--use1-az4--x-s3/curation")
    io = ParquetIOManager(base_uri=str(tmp_path / "data"), store=ObjectStore(), cost_guard=guard)
    with pytest.raises(dg.Failure, match="cross_az"):
        write(io, step_output([docs(1)], 0))
    assert not (tmp_path / "data").exists()


def test_fan_in_skips_partitions_that_were_never_materialized(tmp_path):
    io = ParquetIOManager(base_uri=str(tmp_path), store=ObjectStore(), cost_guard=CostGuard())
    write(io, step_output([docs(3), docs(2)], 2))
    ctx = dg.build_input_context(
        asset_key=dg.AssetKey("filtered"),
        asset_partitions_def=dg.StaticPartitionsDefinition(["web", "code"]),
        asset_partition_key_range=dg.PartitionKeyRange("web", "code"),
    )
    loaded = io.load_input(ctx)
    assert set(loaded) == {"web"} and loaded["web"].collect().height == 5


def test_a_missing_upstream_is_named(tmp_path):
    io = ParquetIOManager(base_uri=str(tmp_path), store=ObjectStore(), cost_guard=CostGuard())
    with pytest.raises(FileNotFoundError, match=r"filtered\[web\] has not been materialized"):
        io.load_input(dg.build_input_context(asset_key=dg.AssetKey("filtered"), partition_key="web"))
    with pytest.raises(FileNotFoundError, match="tokenized has no published file set"):
        io.load_files(dg.AssetKey("tokenized"))


def test_remove_version_through_the_io_manager(where):
    io = io_for(where, keep_versions=10)
    made = []
    for i in range(2):
        write(io, FileSetOutput(files=iter([("a", b"a" * (i + 1))])))
        made.append(io.manifest(dg.AssetKey("filtered"), "web")["version"])
    with pytest.raises(Exception, match="is the current version"):
        io.remove_version(dg.AssetKey("filtered"), "web", made[1], reason="x")
    assert io.remove_version(dg.AssetKey("filtered"), "web", made[0], reason="x") == [
        f"{where.root}/filtered/web/{made[0]}/a"
    ]
    assert io.versions(dg.AssetKey("filtered"), "web") == made[1:]


def test_an_identical_rerun_publishes_nothing_and_reports_the_same_data_version(where):
    """Real materializations (Dagster runs in process) of a protected file set and of an asset that reads it: the
    manifest records the content hash (the materialization's data version), the asset's config (code) version and
    the content of each input it loaded. Rematerializing the same bytes leaves the root as it was (no second
    protected version, the manifest byte for byte) and reports the same data version; other bytes publish a new
    version with a new data version."""
    io = io_for(where)
    payload = {"shard.bin": b"\x01\x02", "manifest.json": b"{}"}

    @dg.asset(name="tokenized", code_version="tok-1")
    def tokenized():
        return FileSetOutput(files=iter(list(payload.items())))

    @dg.asset(code_version="reader-1")
    def reader(tokenized: dict[str, str]):
        return FileSetOutput(files=iter([("names", ",".join(sorted(tokenized)).encode())]))

    key, latest = dg.AssetKey("tokenized"), f"{where.root}/tokenized/_all/{MANIFEST}"

    def data_version(instance, asset: str) -> str:
        (rec,) = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
        return rec.asset_materialization.tags["dagster/data_version"]

    with dg.instance_for_test() as instance:
        assert dg.materialize([tokenized, reader], resources={"io_manager": io}, instance=instance).success
        first = io.manifest(key, None)
        assert first["content"] == content_of(payload) == data_version(instance, "tokenized")
        assert first["config_version"] == "tok-1" and first["inputs"] == {}
        read = io.manifest(dg.AssetKey("reader"), None)
        assert read["config_version"] == "reader-1" and read["inputs"] == {"tokenized[_all]": first["content"]}
        manifest_bytes = where.store.read_bytes(latest)

        assert dg.materialize([tokenized], resources={"io_manager": io}, instance=instance).success
        assert io.versions(key, None) == [first["version"]]  # nothing new under the root
        assert where.store.read_bytes(latest) == manifest_bytes
        assert data_version(instance, "tokenized") == first["content"]
        assert len(instance.fetch_materializations(key, limit=10).records) == 2  # the run is recorded all the same

        payload["shard.bin"] = b"\x01\x03"
        assert dg.materialize([tokenized], resources={"io_manager": io}, instance=instance).success
        second = io.manifest(key, None)
        assert second["version"] != first["version"] and second["content"] == content_of(payload)
        assert sorted(io.versions(key, None)) == sorted([first["version"], second["version"]])  # protected: both
        assert data_version(instance, "tokenized") == second["content"] != first["content"]


def test_a_flipped_bit_in_a_stored_part_fails_the_load_naming_the_file_never_altered_text(where):
    """Issue 20 item 4: every part is written with page CRCs and `scan` verifies them before polars reads anything,
    so a bit flipped on disk or in an object store is an error naming the part, never other text loaded as good."""
    io = io_for(where)
    frame = docs(300).with_columns(text=pl.format("document number {} of the corpus, some text", pl.col("doc_id")))
    write(io, step_output([frame], dropped=0))
    [part] = io.manifest(dg.AssetKey("filtered"), "web")["parts"]
    data = bytearray(where.store.read_bytes(part))
    col = pq.ParquetFile(BytesIO(bytes(data))).metadata.row_group(0).column(2)  # text
    data[col.data_page_offset + col.total_compressed_size // 2] ^= 0x10
    where.store.write_bytes(part, bytes(data))
    with pytest.raises(Exception, match=r"part-00000\.parquet.*(CRC|checksum).*rematerialize filtered\[web\]"):
        io.load_input(dg.build_input_context(asset_key=dg.AssetKey("filtered"), partition_key="web")).collect()


def copy_root(where, src: str, dst: str) -> None:
    """Every object under the data root `src` copied to `dst` (a root moved to another directory or bucket prefix)."""
    for x in where.store.list_since(src, None):
        where.store.write_bytes(f"{dst}/{x.key}", where.store.read_bytes(x.uri))


def test_a_copied_root_loads_on_its_own_and_a_manifest_with_absolute_paths_is_still_read(where):
    """Manifests record paths relative to the data root: a root copied elsewhere (another directory, another bucket
    prefix) loads its own files, also with the original gone; a manifest written before paths were relative (absolute
    URIs, kept and dropped rows in one folder) is read as it is, without migration."""
    first, moved = f"{where.root}/first", f"{where.root}/moved"
    io = io_for(types.SimpleNamespace(store=where.store, root=first))
    ledger = pl.DataFrame({"doc_id": ["s0"], "kept": [True]})
    write(io, step_output([docs(3), docs(2)], dropped=1, side={"ledger": ledger}))
    write(io, FileSetOutput(files=iter([("model.bin", b"weights")])), "quality_model", None)
    copy_root(where, first, moved)
    where.store.delete_prefix(first)

    io = io_for(types.SimpleNamespace(store=where.store, root=moved))
    loaded = io.load_input(dg.build_input_context(asset_key=dg.AssetKey("filtered"), partition_key="web"))
    assert loaded.collect().equals(pl.concat([docs(3), docs(2)]))
    assert io.scan(dg.AssetKey("filtered"), "web", dropped=True).collect().height == 1
    assert pl.read_parquet(
        where.store.read_bytes(io.manifest(dg.AssetKey("filtered"), "web")["side"]["ledger"])
    ).equals(ledger)
    files = io.load_files(dg.AssetKey("quality_model"))
    assert files["model.bin"].startswith(f"{moved}/") and where.store.read_bytes(files["model.bin"]) == b"weights"

    old = f"{moved}/raw/web/v0"  # the layout before: absolute URIs, every table in the version folder
    where.store.write_bytes(f"{old}/part-00000.parquet", parquet_bytes(docs(4)))
    where.store.write_bytes(f"{old}/dropped-00000.parquet", parquet_bytes(dropped_docs(2)))
    manifest = {"version": "v0", "parts": [f"{old}/part-00000.parquet"], "dropped": [f"{old}/dropped-00000.parquet"]}
    where.store.write_bytes(f"{moved}/raw/web/{MANIFEST}", json.dumps({**manifest, "side": {}, "bytes": 1}).encode())
    assert io.manifest(dg.AssetKey("raw"), "web")["parts"] == manifest["parts"]
    assert io.scan(dg.AssetKey("raw"), "web").collect().equals(docs(4))
    assert io.scan(dg.AssetKey("raw"), "web", dropped=True).collect().height == 2


def test_each_table_has_a_folder_of_one_schema_and_the_current_folder_never_counts_an_old_version(where):
    """Kept rows, dropped rows and each side table sit in folders of their own, so a glob over a table folder (what
    HF `datasets`' data_dir, polars and DuckDB read) has one schema; the current version's folder holds exactly its
    rows after a second, changed version is published, where a glob over every version counts the old one again."""
    io = io_for(where)
    ledger = pl.DataFrame({"doc_id": ["s0", "d0"], "kept": [True, False], "drop_value": [None, 0.5]})
    write(io, step_output([docs(3), docs(2)], dropped=2, side={"ledger": ledger}))
    write(io, step_output([docs(4), docs(1)], dropped=1, side={"ledger": ledger.head(1)}))
    m = io.manifest(dg.AssetKey("filtered"), "web")
    so = where.store.storage_options(where.root)
    tables = {"data": m["parts"], "dropped": m["dropped"], "ledger": [m["side"]["ledger"]]}
    for table, files in tables.items():
        (folder,) = {f.rsplit("/", 1)[0] for f in files}
        assert folder == f"{where.root}/filtered/web/{m['version']}/{table}"
        listed = [u for u, _ in where.store.expand(f"{folder}/*.parquet")]
        assert listed == sorted(files)  # the folder holds this table and nothing else
        assert len({str(pq.read_schema(BytesIO(where.store.read_bytes(u)))) for u in listed}) == 1
    current = pl.scan_parquet(f"{where.root}/filtered/web/{m['version']}/data/*.parquet", storage_options=so)
    assert current.collect().equals(pl.concat([docs(4), docs(1)]))
    every = pl.scan_parquet(f"{where.root}/filtered/web/*/data/*.parquet", storage_options=so)
    assert every.select(pl.len()).collect().item() == 5 + 5  # why readers are pointed at the current folder
    assert (
        pl.scan_parquet(f"{where.root}/filtered/web/{m['version']}/dropped/*.parquet", storage_options=so)
        .select(pl.len())
        .collect()
        .item()
        == 1
    )


def test_prune_keeps_the_newest_versions_never_the_current_one_nor_a_protected_asset(tmp_path):
    io = ParquetIOManager(base_uri=str(tmp_path / "data"), store=ObjectStore(), cost_guard=CostGuard(), keep_versions=9)
    made = {}
    for asset in ("filtered", "synthetic"):
        for i in range(3):
            write(io, step_output([docs(i + 1)], 0), asset)
            made.setdefault(asset, []).append(io.manifest(dg.AssetKey(asset), "web")["version"])
            os.utime(tmp_path / "data" / asset / "web" / made[asset][-1], (1_000_000 + i, 1_000_000 + i))
    assert io.prune(dg.AssetKey("filtered"), "web", keep_versions=1) == made["filtered"][:2]
    assert io.versions(dg.AssetKey("filtered"), "web") == made["filtered"][-1:]
    assert io.scan(dg.AssetKey("filtered"), "web").collect().height == 3
    assert io.prune(dg.AssetKey("synthetic"), "web", keep_versions=1) == []
    assert io.versions(dg.AssetKey("synthetic"), "web") == made["synthetic"]
    assert io.prune(dg.AssetKey("filtered"), "code", keep_versions=1) == []  # no current version: left alone
