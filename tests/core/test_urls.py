"""core/urls.py and config/url_lists.py: datatrove's URLFilter semantics per list kind (registered domain vs host
name, exact URL, whole words, the soft threshold, normalised substrings), list files named in the thresholds, and
the bundled lists, which drop nothing of the bundled sample or the shared corpus."""

import glob
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation_assets.config import DEFAULT_SOURCES, DEFAULT_THRESHOLDS, load_config
from curation_assets.config.errors import ConfigError
from curation_assets.config.url_lists import BUNDLED, url_lists
from curation_assets.config.versions import asset_versions
from curation_assets.core.filtering import FilterParams, family_params, filter_docs
from curation_assets.core.urls import UrlLists, parse_list, url_features
from tests.core.reading import read
from tests.helpers import find_shared_corpus

LISTS = (
    UrlLists.parse("domains", ["example-adult.com", "cams.example.org", "bad.co.uk"])
    | UrlLists.parse("urls", ["https://spam.example.net/buy-now"])
    | UrlLists.parse("banned_words", ["porn"])
    | UrlLists.parse("soft_banned_words", ["sex", "nude", "naked"])
    | UrlLists.parse("banned_subwords", ["xvideos"])
)


def marked(urls: list[str | None], lists: UrlLists = LISTS, **params) -> pl.DataFrame:
    """`filter_docs` with only the URL family on (datatrove's URLFilter alone)."""
    n = len(urls)
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "text": ["some text"] * n, "url": urls})
    lang = pl.DataFrame({"lang": ["en"] * n, "lang_score": [1.0] * n})
    return filter_docs(docs.cast({"url": pl.String}), family_params("url", **params), lang, urls=lists)


@pytest.mark.parametrize(
    "url, reason",
    [
        # registered domain (public suffix + one label): the domain and every host under it
        ("https://example-adult.com/video/1", "url_domain_blocked"),
        ("https://www.example-adult.com/", "url_domain_blocked"),
        ("http://a.b.example-adult.com:8080/x?y=z", "url_domain_blocked"),
        ("https://WWW.Example-Adult.COM/", "url_domain_blocked"),  # host names are case-insensitive
        ("https://www.bad.co.uk/page", "url_domain_blocked"),  # co.uk is a public suffix
        ("https://example-adult.co.uk/", None),
        ("https://example-adult.com.mirror.net/", None),  # registered domain mirror.net
        ("https://notexample-adult.com/", None),
        # a listed host name blocks that host only (datatrove's `subdomain`), not the hosts under it
        ("https://cams.example.org/live", "url_subdomain_blocked"),
        ("https://x.cams.example.org/", None),
        ("https://example.org/", None),
        # exact URL
        ("https://spam.example.net/buy-now", "url_blocked"),
        ("https://spam.example.net/buy-now/", None),
        # banned words: whole words (runs of letters and digits) of the URL, any case
        ("https://blog.example/tags/porn/", "url_banned_word"),
        ("https://blog.example/Porn-Stars", "url_banned_word"),
        ("https://blog.example/pornography-law", None),
        # soft words: at least url_soft_word_threshold (2) distinct ones
        ("https://health.example/sex-education", None),
        ("https://health.example/sex/sex", None),
        ("https://gallery.example/sex/nude", "url_soft_banned_words"),
        # banned subwords: substrings of the URL with only letters and digits, lower case
        ("https://x-videos.example/", "url_banned_subword"),
        ("https://myXVideos.example/", "url_banned_subword"),
        # no URL passes; a URL without a host (deb://) has no domain
        (None, None),
        ("", None),
        ("deb://fortunes/fortunes/sex#12", None),
    ],
)
def test_each_list_kind(url, reason):
    assert marked([url])["drop_reason"].to_list() == [reason]


def test_datatrove_order_values_and_threshold():
    out = marked(["https://example-adult.com/porn/sex/nude", "https://gallery.example/sex/nude/naked"])
    assert out["drop_reason"].to_list() == ["url_domain_blocked", "url_soft_banned_words"]  # the first rule wins
    assert out["drop_value"].to_list() == [1.0, 3.0]  # soft: the distinct listed words
    values = out["values"][1]
    assert values["url_soft_banned_words"] == 3 and values["url_domain_blocked"] == 0 and values["url_banned_word"] == 0
    assert marked(["https://health.example/sex-education"], url_soft_word_threshold=1)["drop_reason"][0] == (
        "url_soft_banned_words"
    )
    assert marked(["https://example-adult.com/"], url_filter=False)["drop_reason"][0] is None
    assert marked(["https://example-adult.com/"], lists=UrlLists())["drop_reason"][0] is None  # no list, no drop


def test_a_document_dropped_by_url_reaches_no_text_rule():
    docs = pl.DataFrame({"doc_id": ["a", "b"], "text": ["tiny", "tiny"], "url": ["https://example-adult.com/", None]})
    lang = pl.DataFrame({"lang": ["en", "en"], "lang_score": [0.9, 0.9]})
    out = filter_docs(docs, FilterParams(c4_quality=False, fineweb_quality=False), lang, urls=LISTS)
    assert out["drop_reason"].to_list() == ["url_domain_blocked", "gopher_short_doc"]
    assert out["values"][0]["dup_line_frac"] is None and out["values"][1]["dup_line_frac"] == 0  # not computed
    assert not any(c.startswith("_url") for c in out.columns)


def test_parse_list_is_datatrove_parse_list_without_blank_entries():
    lines = ["# a comment\n", "\n", "Cam-Girl\n", "  porn \n", "x\n"]
    assert parse_list(lines, words=True) == {"camgirl", "porn", "x"}
    assert parse_list(["https://a.example/X \n", "#https://b.example/\n", "   \n"], words=False) == {
        "https://a.example/X"
    }
    assert UrlLists.parse("domains", ["Example.COM\n"]).domains == {"example.com"}
    features = url_features(pl.Series(["https://a.example/"]), UrlLists.parse("banned_words", ["\n", "#x"]))
    assert features["_url_banned_words"][0] == 0  # a blank line bans nothing (datatrove: "" matches a trailing /)


def thresholds_with(tmp_path: Path, filtered: dict) -> Path:
    t = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    t["filtered"]["default"] = {**(t["filtered"]["default"] or {}), **filtered}
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(t))
    return path


def test_list_files_are_relative_to_the_thresholds_file_and_versioned_by_content(tmp_path):
    (tmp_path / "lists").mkdir()
    domains = tmp_path / "lists" / "domains.txt"
    domains.write_text("# ours\nblocked.example\n")
    path = thresholds_with(tmp_path, {"url_domain_files": ["lists/domains.txt"]})
    cfg = load_config(thresholds=path)
    lists = url_lists(cfg, "web")
    assert "blocked.example" in lists.domains and "pornhub.com" in lists.domains  # ours on top of the bundled
    before = asset_versions(cfg)
    domains.write_text("blocked.example\nother.example\n")
    after = asset_versions(load_config(thresholds=path))
    # editing a list file re-runs annotated (where the URL filter runs; filtered follows its data), nothing upstream
    assert {k for k in before if before[k] != after[k]} == {"annotated"}
    only = load_config(
        thresholds=thresholds_with(tmp_path, {"url_bundled_lists": False, "url_domain_files": [str(domains)]})
    )
    assert url_lists(only, "web") == UrlLists(domains=frozenset({"blocked.example", "other.example"}))
    assert url_lists(load_config(thresholds=thresholds_with(tmp_path, {"url_filter": False})), "web") is None


def test_a_missing_list_file_is_a_config_error_with_its_key(tmp_path):
    path = thresholds_with(tmp_path, {"url_banned_word_files": ["nowhere.txt"]})
    with pytest.raises(ConfigError) as e:
        load_config(thresholds=path)
    assert "filtered.default.url_banned_word_files[0]" in str(e.value) and "nowhere.txt" in str(e.value)


def bundled() -> UrlLists:
    lists = UrlLists()
    for f in BUNDLED.glob("*.txt"):
        lists |= UrlLists.parse(f.stem, f.read_text().splitlines())
    return lists


def test_the_bundled_lists_are_small_and_block_what_they_name():
    lists = bundled()
    assert lists == url_lists(load_config(), "web")
    assert 0 < sum(len(getattr(lists, k)) for k in ("domains", "banned_words", "soft_banned_words")) < 100
    out = marked(
        ["https://www.pornhub.com/view", "https://tube.example/xxx", "https://x.example/nude-webcam"], bundled()
    )
    assert out["drop_reason"].to_list() == ["url_domain_blocked", "url_banned_word", "url_soft_banned_words"]


def test_the_bundled_lists_drop_nothing_of_the_sample_or_the_shared_corpus():
    sample = sorted(glob.glob(str(Path(DEFAULT_SOURCES).parent / ".." / "sample" / "*" / "part-*")))
    urls = [read(Path(s)).docs["url"] for s in sample]  # the WARC shard's too
    corpus = find_shared_corpus()
    for shard in sorted(glob.glob(str(corpus / "data" / "*" / "part-*"))) if corpus else []:
        urls.append(
            (pl.scan_parquet if shard.endswith(".parquet") else pl.scan_ndjson)(shard).select("url").collect()["url"]
        )
    urls = pl.concat(urls)
    assert urls.drop_nulls().len() > 100
    hits = url_features(urls, bundled()).select(pl.all().fill_null(0)).sum()
    assert hits.row(0) == (0,) * hits.width, hits
