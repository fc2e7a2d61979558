import pytest
import yaml
from pydantic import ValidationError

from curation_assets.config import load_config, version_of
from curation_assets.defs import versions
from curation_assets.core.filtering import FilterParams


def test_bundled_config_is_valid_and_every_source_has_files():
    cfg = load_config()
    assert cfg.source_names == ["web", "code", "books", "multilingual"]
    assert cfg.recipe.sources() == set(cfg.source_names)
    for s in cfg.source_names:
        FilterParams(**cfg.thresholds.filtered.for_source(s))  # per-source overrides are valid params


def test_unknown_keys_and_unknown_sources_are_rejected(tmp_path):
    bad = tmp_path / "sources.yaml"
    bad.write_text(yaml.safe_dump({"sources": [{"name": "x", "uris": ["a"], "licence": "MIT", "colour": "red"}]}))
    with pytest.raises(ValidationError, match="colour"):
        load_config(sources=bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"sources": [{"name": "x", "uris": ["a"], "licence": "MIT"}]}))
    with pytest.raises(ValidationError, match="unknown sources"):
        load_config(sources=ok)  # the bundled recipe weights web, code, ...


def test_a_threshold_edit_changes_only_the_versions_it_drives(tmp_path):
    cfg = load_config()
    t = yaml.safe_load(open(cfg.sources_path.parent / "thresholds.yaml"))
    t["deduped"]["default"]["threshold"] = 0.9
    edited = tmp_path / "t.yaml"
    edited.write_text(yaml.safe_dump(t))
    before, after = versions(cfg), versions(load_config(thresholds=edited))
    # a clustering threshold: the ledger and its application change, the stored signatures stay valid
    assert {k for k in before if before[k] != after[k]} == {"dedup_clusters", "deduped"}
    assert version_of(cfg.recipe) == version_of(load_config().recipe)
