import re

import pytest
import yaml
from pydantic import BaseModel

from curation_assets.config import (
    DEFAULT_RECIPE,
    DEFAULT_SOURCES,
    DEFAULT_THRESHOLDS,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_NODES,
    ConfigError,
    DecontamIndexThresholds,
    DedupedThresholds,
    FilteredThresholds,
    Freshness,
    PodSize,
    QualityModelThresholds,
    RawThresholds,
    Recipe,
    Source,
    Step,
    SyntheticThresholds,
    ThresholdsFile,
    TokenizedThresholds,
    load_config,
    version_of,
)
from curation_assets.config.settings import Settings, environment_problems
from curation_assets.config.versions import asset_versions
from curation_assets.core.filtering import FilterParams


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def problems(**files) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(**files)
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


def test_bundled_config_is_valid_and_every_source_has_files():
    cfg = load_config(check_paths=True)  # every local glob of the bundled sources matches a file
    assert cfg.source_names == ["web", "code", "books", "multilingual"]
    assert cfg.recipe.sources() == set(cfg.source_names)
    for s in cfg.source_names:
        assert isinstance(cfg.thresholds.filtered.for_source(s), FilterParams)  # the typed, merged params
    web = cfg.thresholds.filtered.for_source("web")
    assert web.min_stop_words is None and web.quality_keep_fraction == 0.8  # the override, on the defaults
    assert web.min_doc_words == FilterParams().min_doc_words
    assert cfg.quality_model_params.reference == ("books",)


def test_unknown_keys_and_unknown_sources_are_rejected(tmp_path):
    bad = write(tmp_path / "sources.yaml", {"sources": [{"name": "x", "uris": ["a"], "licenze": "MIT", "colour": 1}]})
    assert problems(sources=bad) == [  # (not also `licence: required key missing`: one problem, one line)
        f"{bad}: sources[x].colour: unknown key (valid: format, html, id_field, licence, location, name, text_field, "
        "uris, url_field)",  # nothing is close: the keys that are valid there
        f"{bad}: sources[x].licenze: unknown key (did you mean 'licence'?)",
    ]
    ok = write(tmp_path / "ok.yaml", {"sources": [{"name": "x", "uris": ["a"], "licence": "MIT"}]})
    lines = problems(sources=ok)  # the bundled recipe mixes web, code, books, multilingual
    assert len(lines) == 7 and all(line.startswith(f"{DEFAULT_RECIPE}: recipe.components[") for line in lines)
    assert all(f"is not defined in {ok}" in line for line in lines)
    assert isinstance(ConfigError(lines), ValueError)  # callers that caught the pydantic ValueError still do


def test_misspelled_keys_name_file_key_path_and_the_closest_key(tmp_path):
    t = write(tmp_path / "t.yaml", {"filtered": {"per_source": {"web": {"min_stop_word": 1}}}, "mixd": {}})
    assert problems(thresholds=t) == [
        f"{t}: filtered.per_source.web.min_stop_word: unknown key (did you mean 'min_stop_words'?)",
        f"{t}: mixd: unknown key (did you mean 'mixed'?)",
    ]
    r = write(tmp_path / "r.yaml", {"recipe": {"name": "r", "weights": {"a": 1}, "sequence_lenght": 4}})
    assert problems(recipe=r) == [f"{r}: recipe.sequence_lenght: unknown key (did you mean 'sequence_length'?)"]
    t = write(tmp_path / "t2.yaml", {"quality_model": {"default": {"held_out": 0.2, "min_aux": 0.9}}})
    assert problems(thresholds=t) == [f"{t}: quality_model.default.min_aux: unknown key (did you mean 'min_auc'?)"]
    t = write(tmp_path / "t3.yaml", {"deduped": {"defaults": {}}})
    assert problems(thresholds=t) == [f"{t}: deduped.defaults: unknown key (did you mean 'default'?)"]


def test_wrong_types_and_values_are_one_line_each_with_the_value_cut_short(tmp_path):
    huge = "x" * 100_000
    s = {
        "sources": [
            {"name": "web", "uris": ["a"], "licence": "t", "format": "jsonll"},
            {"name": "big", "uris": ["a"], "licence": "t", "html": huge},
            {"name": "web", "uris": ["b"], "licence": "t"},
        ]
    }
    lines = problems(sources=write(tmp_path / "s.yaml", s))
    assert len(lines) == 2 and all(len(line) < 400 for line in lines)
    assert lines[0].endswith(
        "sources[0].format: Input should be 'auto', 'jsonl', 'jsonl.gz', 'jsonl.zst', 'parquet' "
        "or 'warc', got 'jsonll' (did you mean 'jsonl'?)"
    )  # [0]: the name `web` is not unique
    assert "sources[big].html: Input should be a valid boolean" in lines[1] and "xxx..." in lines[1]
    s["sources"] = s["sources"][::2]
    s["sources"][0].pop("format")
    assert problems(sources=write(tmp_path / "s.yaml", s))[0].endswith("sources[1].name: duplicate source name 'web'")
    t = write(tmp_path / "t.yaml", {"filtered": {"default": {"top_n_grams": [[2, "x"]], "min_doc_words": "many"}}})
    assert problems(thresholds=t) == [
        f"{t}: filtered.default.top_n_grams[0][1]: Input should be a valid number, unable to parse string as a number, "
        "got 'x'",
        f"{t}: filtered.default.min_doc_words: Input should be a valid integer, unable to parse string as an integer, "
        "got 'many'",
    ]
    t = write(tmp_path / "t.yaml", {"freshness": {"warn_hours": 50}, "deduped": {"per_source": {"code": {"seed": 7}}}})
    assert problems(thresholds=t) == [
        f"{t}: deduped.per_source.code: the override of 'code' changes the signature params (num_perm, ngram, seed, "
        "normalize): dedup_clusters compares signatures across sources, so there is one set",
        f"{t}: freshness.warn_hours: freshness: warn_hours must be < fail_hours (48)",
    ]
    c = write(tmp_path / "c.yaml", {"usd_per_gb": {"cross_azz": 1}, "nat_usd_per_gb": 0, "budget_usd": 1})
    lines = problems(costs=c)
    assert (
        lines[0].startswith(f"{c}: usd_per_gb.cross_azz: Input should be 'local'")
        and "did you mean 'cross_az'" in lines[0]
    )


def test_missing_files_yaml_syntax_and_cross_file_problems(tmp_path):
    assert problems(recipe=tmp_path / "nope.yaml", costs=tmp_path) == [
        f"{tmp_path / 'nope.yaml'}: file not found",
        f"{tmp_path}: is a directory, not a YAML file",
    ]
    (tmp_path / "bad.yaml").write_text("recipe:\n  name: r\n  weights: {a: 1\n  seed: 2\n")
    [line] = problems(recipe=tmp_path / "bad.yaml")
    assert re.fullmatch(rf"{tmp_path / 'bad.yaml'}: line 4, column \d+: YAML syntax error: .*", line)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert problems(thresholds=tmp_path / "list.yaml") == [
        f"{tmp_path / 'list.yaml'}: expected a mapping of keys, got a list"
    ]

    s = write(tmp_path / "s.yaml", {"sources": [{"name": "books", "uris": ["*.jsonl", "s3://b/*"], "licence": "t"}]})
    r = write(tmp_path / "r.yaml", {"recipe": {"name": "r", "weights": {"books": 1, "bokos.synthetic": 1}}})
    assert problems(sources=s, recipe=r) == [
        f"{r}: recipe.weights.bokos.synthetic: source 'bokos' is not defined in {s} (did you mean 'books'?)"
    ]
    r = write(tmp_path / "r.yaml", {"recipe": {"name": "r", "weights": {"books": 1}}})
    assert load_config(s, r).quality_model_params is None  # no background source: no model, and no cut asks for one
    cut = write(tmp_path / "t.yaml", {"filtered": {"per_source": {"books": {"quality_keep_fraction": 0.5}}}})
    assert problems(sources=s, recipe=r, thresholds=cut) == [
        f"{cut}: filtered.per_source.books.quality_keep_fraction: cuts by quality score, but quality_model has no "
        f"background source (web) in {s}, so there is no model"
    ]
    half = write(tmp_path / "t.yaml", {"quality_model": {"default": {"reference": ["books", "novels"]}}})
    s2 = write(
        tmp_path / "s2.yaml", {"sources": [{"name": n, "uris": ["a"], "licence": "t"} for n in ("books", "web")]}
    )
    assert problems(sources=s2, recipe=r, thresholds=half) == [
        f"{half}: quality_model.default.reference[1]: source 'novels' is not defined in {s2}"
    ]
    # local paths are checked on request (`curation validate`, `curation run`); s3:// ones are not listed
    (tmp_path / "books").mkdir()
    s = write(
        tmp_path / "s.yaml", {"sources": [{"name": "books", "uris": ["*.jsonl", "books", "s3://b/*"], "licence": "t"}]}
    )
    assert load_config(s, r).source_names == ["books"]
    assert problems(sources=s, recipe=r, check_paths=True) == [
        f"{s}: sources[books].uris[0]: '*.jsonl' matches no file (resolved: {str(tmp_path / '*.jsonl')!r})",
        f"{s}: sources[books].uris[1]: 'books' is a directory (name its files, e.g. with /*) "
        f"(resolved: {str(tmp_path / 'books')!r})",
    ]
    (tmp_path / "books" / "part-0.jsonl").write_text("{}\n")
    (tmp_path / "x.jsonl").write_text("{}\n")
    write(tmp_path / "s.yaml", {"sources": [{"name": "books", "uris": ["*.jsonl", "books/*"], "licence": "t"}]})
    assert load_config(s, r, check_paths=True).source_names == ["books"]


def test_yaml_bombs_and_huge_files_are_refused_before_they_expand(tmp_path):
    """A "billion laughs" file (574 bytes of anchors and aliases: 5 GB once expanded) is one line naming the aliases,
    in the thresholds and in the sources file, and so is an alias to itself; so is a file over the size bound.
    Nothing is expanded. The aliases `yaml.safe_dump` writes for shared objects still load."""
    levels = ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    for k in range(1, 9):
        prev, cur = chr(ord("a") + k - 1), chr(ord("a") + k)
        levels.append(f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    bomb = "\n".join(levels) + "\n"
    (tmp_path / "t.yaml").write_text("filtered:\n  " + bomb.replace("\n", "\n  "))
    (tmp_path / "s.yaml").write_text("sources:\n  - name: books\n    uris: [x]\n    licence: t\n" + bomb)
    for kind in ("thresholds", "sources"):
        [line] = problems(**{kind: tmp_path / ("t.yaml" if kind == "thresholds" else "s.yaml")})
        assert f"aliases (*name) expand past {MAX_CONFIG_NODES:,} nodes" in line and len(line) < 300, line
    (tmp_path / "self.yaml").write_text("recipe: &r\n  name: r\n  again: *r\n")
    [line] = problems(recipe=tmp_path / "self.yaml")
    assert "refer to themselves" in line
    shared = {"max_drop_rate": 0.9}
    dumped = yaml.safe_dump({"raw": shared, "deduped": shared})
    assert "&id001" in dumped and "*id001" in dumped  # PyYAML's own aliases
    (tmp_path / "ok.yaml").write_text(dumped)
    assert load_config(thresholds=tmp_path / "ok.yaml").thresholds.deduped.max_drop_rate == 0.9
    (tmp_path / "big.yaml").write_text("recipe:\n  name: r\n" + "#" * (MAX_CONFIG_BYTES + 1))
    assert problems(recipe=tmp_path / "big.yaml") == [
        f"{tmp_path / 'big.yaml'}: larger than {MAX_CONFIG_BYTES:,} bytes: not a config file"
    ]


def test_environment_values_are_checked():
    assert environment_problems({}) == []
    assert Settings.from_env({"CURATION_ENV": "k8s", "CURATION_DATA_ROOT": "s3://b/curation"}).env == "k8s"
    bad = {
        "CURATION_ENV": "prod",
        "CURATION_DATA_ROOT": "/",
        "CURATION_POD_ZONE": "us-east-1a",
        "CURATION_DATA_VIA": "vpn",
        "CURATION_S3_ENDPOINT": "minio:9000",
    }
    lines = environment_problems(bad)
    assert [line.split(":")[1].strip() for line in lines] == [
        "CURATION_ENV",
        "CURATION_DATA_ROOT",
        "CURATION_DATA_VIA",
        "CURATION_POD_ZONE",
        "CURATION_S3_ENDPOINT",
    ]
    assert all(line.startswith("environment: ") for line in lines)
    with pytest.raises(ConfigError) as e:
        Settings.from_env(bad)
    assert e.value.problems == lines
    for root in ("/", "//", "s3://", "/data/../etc", "s3://bucket/a/../b", "../data", "/data/run[1]", "s3://b/*"):
        assert environment_problems({"CURATION_DATA_ROOT": root}), root
    for root in ("/data/curation", "s3://bucket", "s3://b--use1-az4--x-s3/c", ".curation/data", "/a..b/c"):
        assert environment_problems({"CURATION_DATA_ROOT": root}) == [], root


def test_a_threshold_edit_changes_only_the_versions_it_drives(tmp_path):
    cfg = load_config()
    t = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    t["deduped"]["default"] = {"threshold": 0.9}  # the bundled default shows every key, commented
    edited = write(tmp_path / "t.yaml", t)
    before, after = asset_versions(cfg), asset_versions(load_config(thresholds=edited))
    # a clustering threshold: the ledger and its application change, the stored signatures stay valid
    assert {k for k in before if before[k] != after[k]} == {"dedup_clusters", "deduped"}
    assert version_of(cfg.recipe) == version_of(load_config().recipe)


def test_asset_versions_are_the_code_versions_of_the_definitions():
    from curation_assets.config.settings import Settings
    from curation_assets.defs import build_definitions

    cfg = load_config()
    graph = build_definitions(cfg, Settings()).resolve_asset_graph()
    code_versions = {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}
    assert code_versions == asset_versions(cfg)


# -- every knob visible: each param of each step appears in the bundled YAML, set or commented with its default --

KEY = re.compile(r"^(?P<indent>\s*)(?P<comment>#\s*)?(?P<key>[a-z_][a-z0-9_]*):(\s|$)")


def block(lines: list[str], start: int) -> list[str]:
    """The lines below lines[start] (`key:`), up to the next line (comment or key) indented no deeper."""
    own = len(lines[start]) - len(lines[start].lstrip())
    out = []
    for text in lines[start + 1 :]:
        if text.strip() and len(text) - len(text.lstrip()) <= own:
            break
        out.append(text)
    return out


def keys_in(lines: list[str]) -> dict[str, str]:
    """key -> the text after `key:` for every key and commented key (`# key: default`, at the indentation of the
    keys) of the block's first level."""
    top = min((len(m["indent"]) for t in lines if (m := KEY.match(t))), default=0)
    out = {}
    for text in lines:
        m = KEY.match(text)
        if m and len(m["indent"]) == top:
            out[m["key"]] = text[m.end("key") + 1 :]
    return out


def section(text: str, *path: str) -> list[str]:
    lines = text.splitlines()
    for name in path:
        i = next(i for i, t in enumerate(lines) if (m := KEY.match(t)) and m["key"] == name)
        lines = block(lines, i)
    return lines


def defaults_shown(model: type[BaseModel], lines: list[str]) -> None:
    """Every field of `model` is a key or a commented key of `lines`; a commented one shows the true default."""
    shown = keys_in(lines)
    missing = [f for f in model.model_fields if f not in shown]
    assert not missing, f"{model.__name__} params missing from the bundled YAML: {missing}"
    default = model().model_dump(mode="json")
    for text in lines:
        m = KEY.match(text)
        if m and m["comment"] and m["key"] in model.model_fields:
            value = yaml.safe_load(text[m.start("key") :].split(" #")[0])[m["key"]]
            assert value == default[m["key"]], (model.__name__, m["key"], value, default[m["key"]])


STEPS = {
    "raw": RawThresholds,
    "quality_model": QualityModelThresholds,
    "filtered": FilteredThresholds,
    "deduped": DedupedThresholds,
    "decontam_index": DecontamIndexThresholds,
    "synthetic": SyntheticThresholds,
    "mixed": Step,
    "tokenized": TokenizedThresholds,
}


def test_every_param_of_every_step_is_visible_in_the_bundled_thresholds():
    text = DEFAULT_THRESHOLDS.read_text()
    assert set(ThresholdsFile.model_fields) == {*STEPS, "freshness"}
    assert set(ThresholdsFile.model_fields) <= set(keys_in(text.splitlines()))
    for step, model in STEPS.items():
        assert ThresholdsFile.model_fields[step].annotation is model
        shown = keys_in(section(text, step))
        assert set(model.model_fields) <= set(shown), (step, set(model.model_fields) - set(shown))
        if "default" in model.model_fields:  # RawThresholds.default ... TokenizedThresholds.default
            defaults_shown(model.model_fields["default"].annotation, section(text, step, "default"))
        pod = yaml.safe_load(f"pod: {shown['pod'].split(' #')[0]}")["pod"]
        assert set(pod) == set(PodSize.model_fields), step
    defaults_shown(Freshness, section(text, "freshness"))


def test_every_source_and_recipe_field_is_visible_in_the_bundled_files():
    sources = section(DEFAULT_SOURCES.read_text(), "sources")
    first = [t.replace("  - ", "    ", 1) if t.startswith("  - ") else t for t in sources]
    first = first[: next(i for i, t in enumerate(first[1:], 1) if t.startswith("    name:"))]
    shown = keys_in(first)
    assert set(Source.model_fields) <= set(shown), set(Source.model_fields) - set(shown)
    recipe = keys_in(section(DEFAULT_RECIPE.read_text(), "recipe"))
    fields = {f.alias or name for name, f in Recipe.model_fields.items()}
    assert fields <= set(recipe), fields - set(recipe)


def test_a_default_quality_cut_without_a_model_is_reported_once_unless_every_source_turns_it_off(tmp_path):
    s = write(tmp_path / "s.yaml", {"sources": [{"name": n, "uris": ["a"], "licence": "t"} for n in ("books", "code")]})
    r = write(tmp_path / "r.yaml", {"recipe": {"name": "r", "weights": {"books": 1}}})
    t = {"filtered": {"default": {"min_quality_score": 0.5}}}
    cut = write(tmp_path / "t.yaml", t)
    assert problems(sources=s, recipe=r, thresholds=cut) == [
        f"{cut}: filtered.default.min_quality_score: cuts by quality score, but quality_model has no background "
        f"source (web) in {s}, so there is no model"
    ]
    t["filtered"]["per_source"] = {n: {"min_quality_score": None} for n in ("books", "code")}
    assert load_config(s, r, write(tmp_path / "t.yaml", t)).quality_model_params is None


def test_an_override_that_is_only_wrong_merged_onto_the_default_names_its_key(tmp_path):
    t = write(
        tmp_path / "t.yaml", {"deduped": {"default": {"bands": 32, "rows": 4}, "per_source": {"code": {"rows": 8}}}}
    )
    assert problems(thresholds=t) == [
        f"{t}: deduped.per_source.code: merged onto default: need bands >= 1, bands * rows <= num_perm: 32x8/128"
    ]
    commented = tmp_path / "c.yaml"  # sections and overrides whose keys are all commented out are YAML null
    commented.write_text("mixed:\n  # pod: {cpu: '2'}\nfiltered:\n  default:\n  per_source:\n    web:\n")
    cfg = load_config(thresholds=commented)
    assert cfg.thresholds.mixed.pod == PodSize() and cfg.thresholds.filtered.for_source("web") == FilterParams()


def test_huge_keys_and_values_stay_short_lines(tmp_path):
    t = write(tmp_path / "t.yaml", {"raw": {"default": {"k" * 100_000: 1, "max_doc_bytes": "9" * 100_000 + "x"}}})
    lines = problems(thresholds=t)
    assert len(lines) == 2 and all(len(line) < len(str(t)) + 700 for line in lines), [len(x) for x in lines]
