"""The URL filter's lists (`core/urls.py`): the bundled defaults in `blocklists/` and the list files `filtered`'s params
name (`url_*_files`, each path relative to the thresholds file's directory unless absolute), read into `UrlLists`.
Local files only, read when the definitions load (their contents are part of `filtered`'s code_version) and when
`filtered` runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from curation_assets.core.filtering import FilterParams
from curation_assets.core.urls import UrlLists

if TYPE_CHECKING:
    from curation_assets.config import CurationConfig, ThresholdsFile

BUNDLED = Path(__file__).parent / "blocklists"
# list kind (a UrlLists field) -> the FilterParams key naming its files
FILE_KEYS = {
    "domains": "url_domain_files",
    "urls": "url_files",
    "banned_words": "url_banned_word_files",
    "soft_banned_words": "url_soft_banned_word_files",
    "banned_subwords": "url_banned_subword_files",
}


def _files(params: FilterParams, base: Path) -> dict[str, list[Path]]:
    """kind -> the list files `params` read: the bundled one (`url_bundled_lists`), then the named ones."""
    return {
        kind: [BUNDLED / f"{kind}.txt"] * (params.url_bundled_lists and (BUNDLED / f"{kind}.txt").is_file())
        + [base / p for p in getattr(params, key)]
        for kind, key in FILE_KEYS.items()
    }


def read_url_lists(params: FilterParams, base: Path) -> UrlLists | None:
    """The lists of `params` (None with `url_filter` off)."""
    if not params.url_filter:
        return None
    lists = UrlLists()
    for kind, files in _files(params, base).items():
        for path in files:
            with open(path, encoding="utf-8") as f:
                lists |= UrlLists.parse(kind, f)
    return lists


def url_list_problems(t: ThresholdsFile, base: Path) -> list[tuple[str, str]]:
    """(key path, problem) of each list file the thresholds name that is a URL, missing, or not UTF-8 text."""
    from curation_assets.config import is_url  # this module is imported by the config package itself

    out = []
    named = [("default", t.filtered.default, set(FILE_KEYS.values()))]
    named += [(f"per_source.{s}", own, own.model_fields_set) for s, own in t.filtered.per_source.items()]
    for where, params, keys in named:
        for key in sorted(keys & set(FILE_KEYS.values())):
            for i, path in enumerate(getattr(params, key)):
                at = f"filtered.{where}.{key}[{i}]"
                if is_url(path):
                    out.append((at, f"{path}: URL lists are local files (read when the definitions load)"))
                    continue
                try:
                    (base / path).read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    out.append((at, f"{path}: not UTF-8 text"))
                except OSError as e:
                    out.append((at, f"{path}: cannot read ({e.strerror or e}; resolved: {base / path})"))
    return out


def url_lists(cfg: CurationConfig, source: str) -> UrlLists | None:
    """The URL lists `filtered` of `source` applies."""
    return read_url_lists(cfg.thresholds.filtered.for_source(source), cfg.thresholds_path.parent)


def _named(params: FilterParams) -> tuple:
    """What decides the lists `params` read (`read_url_lists`)."""
    return (params.url_filter, params.url_bundled_lists, *(getattr(params, k) for k in FILE_KEYS.values()))


def url_list_digests(cfg: CurationConfig) -> dict[str, str | None]:
    """Content hash of the lists of the default params and of each per-source override (for the code_version)."""
    t, base = cfg.thresholds.filtered, cfg.thresholds_path.parent
    params = {"default": t.default, **{s: t.for_source(s) for s in t.per_source}}
    digests: dict[tuple, str | None] = {}  # by the lists a params set names, each set read once: a per-source
    # override of other keys names the default's lists again, and a real blocklist has millions of lines
    for p in params.values():
        if _named(p) not in digests:
            lists = read_url_lists(p, base)
            digests[_named(p)] = lists.digest if lists is not None else None
    return {k: digests[_named(p)] for k, p in params.items()}
