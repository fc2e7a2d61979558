"""Hostile input: names and links cannot leave their root, YAML is loaded safely, nothing unpickles. (A 1 GiB line or a
decompression bomb is read in bounded memory and quarantined, never fatal: tests/core/test_readers.py.)"""

import ast
import json
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from curation_assets.config import load_config
from curation_assets.config.errors import ConfigError
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import INGEST_SOURCE
from curation_assets.steps.raw import landed_outside, resolve_source
from resources.cost_guard import CostGuard
from resources.io_manager import ParquetIOManager
from resources.store import ObjectStore
from tests.helpers import local_settings

REPO = Path(__file__).resolve().parents[1]
SECRET = "SECRET-do-not-train-on-me"


def landing_config(tmp_path: Path) -> Path:
    """The bundled sources (absolute URIs) plus the landing zone `<tmp>/zone`, with a secret outside it."""
    cfg = yaml.safe_load(load_config().sources_path.read_text())
    for s in cfg["sources"]:
        s["uris"] = [str(load_config().sources_path.parent / u) for u in s["uris"]]
    cfg["landing_zones"] = [{"name": "drop", "uri": str(tmp_path / "zone"), "licence": "test"}]
    (tmp_path / "zone").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "creds.jsonl").write_text(json.dumps({"id": "s", "text": SECRET}) + "\n")
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- partition keys and landed files stay inside their landing zone --------------------------------------------
@pytest.mark.parametrize("key", ["../secret", "..", "news/../../secret", "/etc", "a/b", "*", "News", "news\n"])
def test_a_partition_key_that_is_not_a_source_name_is_refused_before_anything_is_listed(tmp_path, monkeypatch, key):
    cfg = load_config(sources=landing_config(tmp_path))
    listed = []
    monkeypatch.setattr(ObjectStore, "expand", lambda self, pattern: listed.append(pattern) or [("x", 1)])
    with pytest.raises(dg.Failure, match="not a valid source name"):
        resolve_source(cfg, ObjectStore(), key)
    assert listed == []
    with pytest.raises(ValueError, match="not a valid source name"):
        cfg.source(key, landed_in="drop")


def test_a_valid_landed_name_still_resolves(tmp_path):
    cfg = load_config(sources=landing_config(tmp_path))
    (tmp_path / "zone" / "news").mkdir()
    (tmp_path / "zone" / "news" / "part-0.jsonl").write_text('{"id": "a", "text": "x"}\n')
    source, landed = resolve_source(cfg, ObjectStore(), "news")
    assert source.uris == [f"{tmp_path}/zone/news/*"] and landed == f"{tmp_path}/zone/news"


def test_landed_files_that_resolve_outside_their_directory_are_found(tmp_path):
    """A file link, a link to a sibling source's file and a linked source directory all leave `<zone>/<name>/`;
    a link inside it does not, and a landing zone mounted through a link (the operator's choice) is fine."""
    landing_config(tmp_path)
    tmp_path = Path(os.path.realpath(tmp_path))
    zone = tmp_path / "zone"
    (zone / "news").mkdir()
    (zone / "blogs").mkdir()
    (zone / "blogs" / "b.jsonl").write_text("{}\n")
    (zone / "news" / "good.jsonl").write_text("{}\n")
    (zone / "news" / "alias.jsonl").symlink_to(zone / "news" / "good.jsonl")
    (zone / "news" / "evil.jsonl").symlink_to(tmp_path / "secret" / "creds.jsonl")
    (zone / "news" / "sibling.jsonl").symlink_to("../blogs/b.jsonl")
    (zone / "leak").symlink_to(tmp_path / "secret")
    store = ObjectStore()
    news = store.expand(f"{zone}/news/*")
    assert landed_outside(news, f"{zone}/news") == {
        f"{zone}/news/evil.jsonl": str(tmp_path / "secret" / "creds.jsonl"),
        f"{zone}/news/sibling.jsonl": str(zone / "blogs" / "b.jsonl"),
    }
    assert list(landed_outside(store.expand(f"{zone}/leak/*"), f"{zone}/leak")) == [f"{zone}/leak/creds.jsonl"]
    (tmp_path / "mount").symlink_to(zone)
    assert landed_outside(store.expand(f"{tmp_path}/mount/news/good.jsonl"), f"{tmp_path}/mount/news") == {}


def test_raw_quarantines_a_symlink_out_of_the_landing_zone_and_never_reads_it(tmp_path):
    sources = landing_config(tmp_path)
    news = tmp_path / "zone" / "news"
    news.mkdir()
    (news / "good.jsonl").write_text(json.dumps({"id": "g", "text": "a landed document"}) + "\n")
    (news / "evil.jsonl").symlink_to(tmp_path / "secret" / "creds.jsonl")
    (tmp_path / "zone" / "leak").symlink_to(tmp_path / "secret")  # a whole source directory linked out
    settings = local_settings(data_root=str(tmp_path / "data"))
    job = build_definitions(load_config(sources=sources), settings).resolve_job_def(INGEST_SOURCE)
    io_manager = ParquetIOManager(base_uri=settings.data_root, store=ObjectStore(), cost_guard=CostGuard())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["news", "leak"])
        runs = {
            key: job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("raw")]
            )
            for key in ("news", "leak")
        }
    assert runs["news"].success  # the good shard still flows
    (failed,) = [e for e in runs["leak"].all_events if e.is_step_failure]  # nothing readable: drop_rate blocks
    assert "drop_rate" in str(failed.step_failure_data.error)
    kept = io_manager.scan(dg.AssetKey("raw"), "news").collect()
    assert kept["text"].to_list() == ["a landed document"]
    for key, shard in (("news", "evil.jsonl"), ("leak", "creds.jsonl")):
        dropped = io_manager.scan(dg.AssetKey("raw"), key, dropped=True).collect()
        assert dropped.select("shard", "location", "drop_reason").rows() == [(shard, "file", "outside_landing_zone")]
        assert str(tmp_path / "secret") in dropped["detail"][0]
    written = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*.parquet"))
    assert SECRET.encode() not in written


# --- YAML and deserialisation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["sources", "recipe", "thresholds", "costs"])
def test_a_yaml_python_tag_is_refused_and_runs_nothing(tmp_path, which):
    marker = tmp_path / "pwned"
    hostile = tmp_path / f"{which}.yaml"
    hostile.write_text(f'{which}: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(Exception) as refused:  # any error, but only after checking for the side effect
        load_config(**{which: hostile})
    assert not marker.exists(), "loading the config ran a shell command"
    # refused by the safe loader: one config error naming the file and the tag
    assert isinstance(refused.value, ConfigError), refused.value
    (line,) = refused.value.problems
    assert line.startswith(f"{hostile}: ") and "YAML syntax error" in line and "python/object/apply" in line


# What would deserialise code from data: pickle and its relatives, YAML's non-safe loaders, torch / numpy pickles.
_PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}
_YAML_UNSAFE = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}


def unsafe_loads(source: str) -> list[str]:
    """Unsafe deserialisation in Python source: pickle-family imports, `yaml.load`-style calls and loaders,
    `torch.load`, `read_pickle`, and `allow_pickle=True`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in _PICKLERS]
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in _PICKLERS or (root == "yaml" and {a.name for a in node.names} & (_YAML_UNSAFE | _YAML_LOADERS)):
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "yaml" and node.attr in _YAML_UNSAFE | _YAML_LOADERS:
                found.append(f"yaml.{node.attr}")
            elif node.value.id == "torch" and node.attr == "load":
                found.append("torch.load")
        if isinstance(node, ast.Attribute) and node.attr == "read_pickle":
            found.append("read_pickle")
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and getattr(node.value, "value", 0) is True:
            found.append("allow_pickle=True")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b)",
        "from pickle import loads",
        "import joblib",
        "import dill as d",
        "yaml.load(f, Loader=yaml.SafeLoader)",
        "yaml.unsafe_load(f)",
        "yaml.full_load(f)",
        "yaml.safe_load(f, Loader=yaml.UnsafeLoader)",
        "from yaml import load",
        "torch.load(p)",
        "np.load(p, allow_pickle=True)",
        "pd.read_pickle(p)",
    ],
)
def test_the_unsafe_loader_scan_sees(snippet):
    assert unsafe_loads(snippet)


def test_nothing_in_the_package_deserialises_code():
    files = sorted(p for d in ("curation_assets", "resources") for p in (REPO / d).rglob("*.py"))
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): hits for p in files if (hits := unsafe_loads(p.read_text()))}
    assert found == {}
    # the config files go through the safe loader (composed first, so that alias expansion is bounded)
    assert "yaml.SafeLoader(" in (REPO / "curation_assets" / "config" / "__init__.py").read_text()
