"""The `tokenized` asset against a stand-in `mixed` (the shared run's mixture, staged): its checks re-read what it
persisted and pass, and the shards are the shared run's, byte for byte. With a recipe whose tokenizer is a
tokenizer.json: `curation run` of web + books with a small BPE writes uint16 shards that Megatron's reader reads and
that the loader's online mode reproduces token for token; cl100k_base as a tokenizer.json writes the tiktoken run's
int32 shards byte for byte. (The format and its verification: tests/core/test_tokens.py.)"""

import hashlib
import json
import types
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import yaml

from curation_assets.config import DEFAULT_RECIPE, load_config
from curation_assets.core.loader import OfflineSource, OnlineSource, sequences
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import BUILD_MIXTURE
from resources.tokenizer import TokenizerResource
from tests.background import background, clean_env, workers
from tests.core.test_tokens import read_idx_like_megatron
from tests.core.tokenizer_files import small_bpe_json, tiktoken_json
from tests.helpers import instance_home, local_settings, mini_config, snapshot, stage

CHECKS = ("index_matches_tokens", "ids_in_range", "sample_decodes", "no_cross_zone_bytes")


def test_tokenized_against_a_staged_mixture_passes_its_checks_and_writes_the_shared_runs_shards(tmp_path, sample_run):
    from resources.store import ObjectStore

    root = tmp_path / "data"
    stage(sample_run.root, root, "mixed")
    defs = build_definitions(load_config(), local_settings(data_root=str(root)))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("tokenized")]
        )
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(CHECKS, True)
    (mat,) = result.asset_materializations_for_node("tokenized")
    assert mat.metadata["tokens"].value > mat.metadata["details"].value["documents"] > 0
    files = {"tokenized": [None]}
    assert snapshot(ObjectStore(), str(root), files) == snapshot(ObjectStore(), str(sample_run.root), files)


def with_tokenizer(recipe: Path, tokenizer: str, text: str, out: Path) -> str:
    """A copy of `recipe` in `out` whose tokenizer is the tokenizer.json `text`, named relative to the copy."""
    data = yaml.safe_load(recipe.read_text())
    data["recipe"]["tokenizer"] = tokenizer
    (out / tokenizer).write_text(text)
    (out / "recipe.yaml").write_text(yaml.safe_dump(data))
    return str(out / "recipe.yaml")


def tokenized_alone(recipe: str, sample_run, root: Path) -> dg.ExecuteInProcessResult:
    stage(sample_run.root, root, "mixed")
    defs = build_definitions(load_config(recipe=recipe), local_settings(data_root=str(root)))
    with dg.instance_for_test() as instance:
        return defs.resolve_job_def(BUILD_MIXTURE).execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("tokenized")], raise_on_error=False
        )


def test_cl100k_as_a_tokenizer_json_writes_the_tiktoken_runs_int32_shards_byte_for_byte(tmp_path, sample_run):
    from resources.store import ObjectStore

    recipe = with_tokenizer(DEFAULT_RECIPE, "cl100k.json", tiktoken_json("cl100k_base"), tmp_path)
    result = tokenized_alone(recipe, sample_run, tmp_path / "data")
    assert result.success
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == dict.fromkeys(CHECKS, True)
    ours = snapshot(ObjectStore(), str(tmp_path / "data"), {"tokenized": [None]})
    theirs = snapshot(ObjectStore(), str(sample_run.root), {"tokenized": [None]})
    manifest = "tokenized/_all/manifest.json"
    assert {k: v for k, v in ours.items() if k != manifest} == {k: v for k, v in theirs.items() if k != manifest}
    latest = json.loads((tmp_path / "data" / "tokenized" / "_all" / "_latest.json").read_text())
    m = json.loads((tmp_path / "data" / latest["files"]["manifest.json"]).read_text())
    sha = hashlib.sha256((tmp_path / "cl100k.json").read_bytes()).hexdigest()
    assert (m["tokenizer"], m["tokenizer_sha256"], m["vocab_size"], m["eot_id"]) == ("cl100k.json", sha, 100277, 100257)
    assert (m["dtype"], m["megatron_dtype_code"]) == ("<i4", 4)  # 100,277 ids: int32, as Megatron picks it


def test_a_mixture_counted_by_another_tokenizer_is_refused_before_anything_is_written(tmp_path, sample_run):
    recipe = with_tokenizer(DEFAULT_RECIPE, "bpe.json", small_bpe_json(), tmp_path)
    result = tokenized_alone(recipe, sample_run, tmp_path / "data")  # the sample run's mixture: cl100k's n_tokens
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "the mixture's n_tokens are not bpe.json's counts of its text" in failure.event_specific_data.error.message
    assert not (tmp_path / "data" / "tokenized").exists()


@background.job("bpe_tokenizer_run", cost=45)
def _bpe_tokenizer_run(tmp: Path) -> types.SimpleNamespace:
    """`curation run` of web + books (tests/helpers.py `mini_config`) whose recipe names a small BPE tokenizer.json
    by a path relative to the recipe file; its own data root and instance."""
    env = mini_config(tmp / "config")
    recipe = Path(env["CURATION_RECIPE"])
    with_tokenizer(recipe, "bpe.json", small_bpe_json(), recipe.parent)
    home, root, log = tmp / "home", tmp / "data", tmp / "run.log"
    instance_home(home)
    code = workers.run(["cli", "run"], clean_env(**env, DAGSTER_HOME=home, CURATION_DATA_ROOT=root), log)
    assert code == 0, f"curation run with a tokenizer.json exited {code}:\n{log.read_text()[-5000:]}"
    return types.SimpleNamespace(root=root, config=recipe.parent, log=log)


def current(root: Path, asset: str) -> dict:
    return json.loads((root / asset / "_all" / "_latest.json").read_text())


def test_curation_run_with_a_tokenizer_json_writes_uint16_shards_the_online_loader_reproduces():
    run = background.result("bpe_tokenizer_run")
    assert "build_mixture: ok" in run.log.read_text()  # every blocking check of tokenized passed
    bpe = TokenizerResource(encoding=str(run.config / "bpe.json"))
    files = {name: str(run.root / uri) for name, uri in current(run.root, "tokenized")["files"].items()}
    offline = OfflineSource(files, lambda uri: Path(uri).read_bytes())
    m = offline.manifest
    sha = hashlib.sha256((run.config / "bpe.json").read_bytes()).hexdigest()
    assert (m["tokenizer"], m["tokenizer_sha256"], m["vocab_size"], m["eot_id"]) == ("bpe.json", sha, 2000, 1)
    assert (m["dtype"], m["megatron_dtype_code"]) == ("<u2", 8)  # 2,000 ids: uint16, as Megatron picks it
    mixed = pl.scan_parquet([run.root / p for p in current(run.root, "mixed")["parts"]])
    texts = mixed.select("text").collect()["text"].to_list()
    stream = np.concatenate([np.append(a, bpe.eot_id) for a in bpe.encode_arrays(texts)])
    ids = []
    for s in m["shards"]:  # read as Megatron reads them
        version, code, lengths, pointers, _ = read_idx_like_megatron(files[s["idx"]])
        data = np.memmap(files[s["bin"]], dtype=np.uint16, mode="r")
        assert (version, code) == (1, 8)
        ids += [data[p // 2 : p // 2 + n] for p, n in zip(pointers, lengths)]
    assert len(ids) == len(texts) and np.array_equal(np.concatenate(ids), stream)
    # the loader's dial: the shards, and the mixture tokenized on the fly with n_tokens counted by filtered, agree
    online = OnlineSource(mixed.select("text", "n_tokens"), bpe.encode_arrays, bpe.eot_id)
    off = list(sequences("offline", seq_len=m["sequence_length"], offline=offline))
    on = list(sequences("online", seq_len=m["sequence_length"], online=online))
    assert len(off) == len(on) == stream.size // m["sequence_length"] > 100
    assert all(i == j and np.array_equal(a, b) for (i, a), (j, b) in zip(off, on))
