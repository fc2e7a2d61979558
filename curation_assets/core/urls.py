"""URL filtering: datatrove's `URLFilter` (RefinedWeb, Penedo et al. 2023, §G.1; the first filter of FineWeb's recipe)
as per-document features of the `url` column, which `filtering._rules` turns into drop rules.

Lists are sets of entries (`UrlLists`), parsed from files of one entry per line (`parse_list`); a document is dropped,
in this order (datatrove's), when
- `url_domain_blocked`: its registered domain (public suffix + one label, tldextract with the Public Suffix List's
  ICANN section, as datatrove) is in `domains`;
- `url_subdomain_blocked`: its full host name is in `domains` (datatrove: a listed `a.example.com` blocks that host,
  not `b.a.example.com`, whose registered domain is `example.com`);
- `url_blocked`: the URL, exactly as written, is in `urls`;
- `url_banned_word`: a word of the URL (a run of letters and digits) is in `banned_words`;
- `url_soft_banned_words`: at least `soft_threshold` distinct words of the URL are in `soft_banned_words`;
- `url_banned_subword`: an entry of `banned_subwords` is a substring of the URL with everything but letters and
  digits removed (e.g. `pornhub` in `porn-hub.example`).
A document without a URL (null or empty) passes. Two deliberate differences from datatrove 0.10.1: host names and
URL words are compared in lower case (datatrove compares them as written against lower-case lists, so
`XXX.example` passes it; DNS names are case-insensitive, RFC 4343), and blank list lines are skipped (datatrove keeps
one as the empty word, which as a banned word matches every URL ending in `/`).

Pure: no I/O (the files are read by the config, `curation_assets/config/url_lists.py`); the Public Suffix List is
tldextract's bundled snapshot, never fetched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

import polars as pl

from curation_assets.core.frames import stable_id

_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")
# reason -> (feature column, drop when the feature is >= this; None: the soft threshold)
URL_RULES: dict[str, tuple[str, int | None]] = {
    "url_domain_blocked": ("_url_domain", 1),
    "url_subdomain_blocked": ("_url_subdomain", 1),
    "url_blocked": ("_url_exact", 1),
    "url_banned_word": ("_url_banned_words", 1),
    "url_soft_banned_words": ("_url_soft_words", None),
    "url_banned_subword": ("_url_subword", 1),
}


def normalize(word: str) -> str:
    """datatrove's `normalize`: letters and digits only, lower case."""
    return _NON_ALNUM.sub("", word).lower()


def parse_list(lines: Iterable[str], words: bool) -> frozenset[str]:
    """Entries of a list file: one per line, `#` starts a comment line, blank lines skipped; words normalised
    (`normalize`), domains lower-cased, URLs stripped."""
    out = set()
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.add(normalize(entry) if words else entry)
    out.discard("")
    return frozenset(out)


@dataclass(frozen=True)
class UrlLists:
    """The entries of every list kind (see the module docstring)."""

    domains: frozenset[str] = frozenset()
    urls: frozenset[str] = frozenset()
    banned_words: frozenset[str] = frozenset()
    soft_banned_words: frozenset[str] = frozenset()
    banned_subwords: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, kind: str, lines: Iterable[str]) -> UrlLists:
        """A `UrlLists` with only `kind` (a field name) filled from a list file's lines."""
        entries = parse_list(lines, words=kind not in ("domains", "urls"))
        return cls(**{kind: frozenset(e.lower() for e in entries) if kind == "domains" else entries})

    def __or__(self, other: UrlLists) -> UrlLists:
        return UrlLists(**{f.name: getattr(self, f.name) | getattr(other, f.name) for f in fields(self)})

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @property
    def digest(self) -> str:
        """Content hash (part of `filtered`'s code_version: editing a list file re-runs it)."""
        return stable_id(*(sorted(getattr(self, f.name)) for f in fields(self)))[:12]


@functools.cache
def _extractor():
    from tldextract import TLDExtract

    # the bundled PSL snapshot only (no download at run time), no cache directory (read-only root filesystems)
    return TLDExtract(suffix_list_urls=(), cache_dir=None)


def _hosts(urls: list[str]) -> tuple[list[str], list[str]]:
    """(registered domain, full host name) of each URL, lower case ('' when it has none, e.g. `deb://x`)."""
    extract = _extractor()
    parts = [extract(u) for u in urls]
    return [p.top_domain_under_public_suffix.lower() for p in parts], [p.fqdn.lower() for p in parts]


def url_features(urls: pl.Series, lists: UrlLists) -> pl.DataFrame:
    """One row per URL: `_url_domain`, `_url_subdomain`, `_url_exact`, `_url_subword` (0/1), `_url_banned_words`,
    `_url_soft_words` (distinct listed words in the URL), Int32, null where the URL is null or empty."""
    url = urls.cast(pl.String).replace("", None)
    frame = pl.DataFrame({"url": url})
    uniq = url.drop_nulls().unique(maintain_order=True)
    domain, host = _hosts(uniq.to_list()) if lists.domains else ([""] * len(uniq), [""] * len(uniq))
    hosts = pl.DataFrame({"url": uniq, "_domain": domain, "_host": host}, schema_overrides={"url": pl.String})
    words = pl.col("url").str.to_lowercase().str.extract_all(r"[a-z0-9]+").list.unique()
    present = url.is_not_null()

    def count(listed: frozenset[str]) -> pl.Expr:
        return words.list.eval(pl.element().is_in(list(listed))).list.sum()

    def flag(expr: pl.Expr) -> pl.Expr:
        return pl.when(present).then(expr.fill_null(False).cast(pl.Int32))

    subword = (
        pl.col("url")
        .str.replace_all(r"[^a-zA-Z0-9]+", "")
        .str.to_lowercase()
        .str.contains_any(sorted(lists.banned_subwords))
        if lists.banned_subwords
        else pl.lit(False)
    )
    return frame.join(hosts, on="url", how="left", maintain_order="left").select(
        flag(pl.col("_domain").is_in(list(lists.domains)) & (pl.col("_domain") != "")).alias("_url_domain"),
        flag(pl.col("_host").is_in(list(lists.domains)) & (pl.col("_host") != "")).alias("_url_subdomain"),
        flag(pl.col("url").is_in(list(lists.urls))).alias("_url_exact"),
        pl.when(present).then(count(lists.banned_words).cast(pl.Int32)).alias("_url_banned_words"),
        pl.when(present).then(count(lists.soft_banned_words).cast(pl.Int32)).alias("_url_soft_words"),
        flag(subword).alias("_url_subword"),
    )
