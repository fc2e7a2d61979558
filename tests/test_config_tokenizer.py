"""curation_assets/config/tokenizer.py: the recipe's tokenizer - a tiktoken name or a tokenizer.json by path, relative
to the recipe file - checked when the config loads (one line per problem), its identity in the code versions, and
the tokenizer resource the deployment binds."""

import hashlib
import json

import pytest
import yaml

from curation_assets.config import ConfigError, load_config
from curation_assets.config.settings import Settings
from curation_assets.config.versions import asset_versions
from tests.core.tokenizer_files import small_bpe_json


def recipe(path, **fields) -> str:
    body = {"name": "r", "sampling": "unimax", "target_tokens": 1000, "components": ["web", "books"], **fields}
    path.write_text(yaml.safe_dump({"recipe": body}))
    return str(path)


def problems(r: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(recipe=r)
    return e.value.problems


def test_a_tokenizer_json_is_resolved_against_the_recipe_file_and_its_bytes_are_in_the_versions(tmp_path):
    (tmp_path / "tok").mkdir()
    bpe = tmp_path / "tok" / "bpe.json"
    bpe.write_text(small_bpe_json())
    cfg = load_config(recipe=recipe(tmp_path / "r.yaml", tokenizer="tok/bpe.json"))
    spec = cfg.tokenizer
    assert (spec.name, spec.path, spec.eos_token) == ("tok/bpe.json", str(bpe), "</s>")
    assert spec.sha256 == hashlib.sha256(bpe.read_bytes()).hexdigest()
    assert "path" not in spec.model_dump()  # machine-specific: never part of a version
    before = asset_versions(cfg)
    edited = json.loads(bpe.read_text())
    edited["added_tokens"].append({**edited["added_tokens"][-1], "id": 2000, "content": "<pad>"})
    bpe.write_text(json.dumps(edited))  # the same path, other bytes
    after = asset_versions(load_config(recipe=recipe(tmp_path / "r.yaml", tokenizer="tok/bpe.json")))
    # filtered counts n_tokens with it, tokenized writes its ids; what follows filtered re-runs on its new data (raw
    # only estimates tokens, in its metadata: re-reading every source for that would be waste)
    assert {k for k in before if before[k] != after[k]} == {"filtered", "tokenized"}
    assert asset_versions(load_config()) != before  # and the bundled cl100k_base recipe is another tokenizer


def test_the_deployment_binds_the_recipes_tokenizer(tmp_path):
    from curation_assets.defs.deployment import deployment

    (tmp_path / "bpe.json").write_text(small_bpe_json())
    cfg = load_config(recipe=recipe(tmp_path / "r.yaml", tokenizer=str(tmp_path / "bpe.json"), eos_token="<s>"))
    tok = deployment(cfg, Settings()).resources["tokenizer"]
    assert (tok.encoding, tok.eos_token, tok.eot_id, tok.vocab_size) == (str(tmp_path / "bpe.json"), "<s>", 0, 2000)
    assert deployment(load_config(), Settings()).resources["tokenizer"].encoding == "cl100k_base"


def test_every_tokenizer_problem_is_one_line_naming_the_recipe_key(tmp_path):
    r = tmp_path / "r.yaml"
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "other.json").write_text('{"model": {"type": "Nope"}}')
    (tmp_path / "bpe.json").write_text(small_bpe_json())
    spec = json.loads(small_bpe_json())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "</s>"]
    spec["post_processor"] = None
    (tmp_path / "no_eos.json").write_text(json.dumps(spec))

    def one(key: str, **fields) -> str:
        [line] = problems(recipe(r, **fields))
        assert line.startswith(f"{r}: recipe.{key}: ") and "\n" not in line
        return line.removeprefix(f"{r}: recipe.{key}: ")

    missing = one("tokenizer", tokenizer="tok/missing.json")
    assert missing == f"'tok/missing.json' (resolved: '{tmp_path}/tok/missing.json'): file not found"
    assert one("tokenizer", tokenizer="dir.json").endswith("is a directory, not a tokenizer.json")
    assert "not JSON (line 1, column 1" in one("tokenizer", tokenizer="text.json")
    assert "not a Hugging Face tokenizer.json" in one("tokenizer", tokenizer="other.json")
    assert one("tokenizer", tokenizer="no_eos.json").endswith(
        "no end-of-document token (its post-processor appends none and none of <|endoftext|>, <|end_of_text|>, "
        "</s>, <eos> is a special token): set recipe.eos_token"
    )
    assert load_config(recipe=recipe(r, tokenizer="no_eos.json", eos_token="<s>")).tokenizer.eos_token == "<s>"
    assert one("eos_token", tokenizer="bpe.json", eos_token="the") == (
        "'the' is not a special token of 'bpe.json' (special: ['</s>', '<s>'])"
    )
    assert one("eos_token", eos_token="</s>").startswith("only for a tokenizer.json")
    assert one("tokenizer", tokenizer="cl100k").startswith("unknown tiktoken encoding 'cl100k' (did you mean")
