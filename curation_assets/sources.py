"""Which `source` partitions stand for a source: configured, landed in a landing zone, or holding protected outputs.

A partition key can be created by anyone with the UI ("create partition" in the Launchpad). A key that is neither
in the sources config nor a `<zone>/<source>/` folder of a landing zone names nothing raw can read (its runs fail
in `steps/raw.py: resolve_source`); `stale` finds such keys so the `register_sources` sensor deletes them again,
and the nightly schedules do not try them every night. A key whose source has a protected output (a version of
`synthetic`, or a `tokenized` version that counts one of its components) is never stale: removing it would drop
that output's partition from the instance's history.
"""

from __future__ import annotations

import json
import re

from curation_assets.config import SOURCE_NAME, CurationConfig
from resources.store import ObjectStore
from resources.versions import UNPARTITIONED, list_versions

SYNTHETIC_SUFFIX = ".synthetic"  # a mixture component `<source>.synthetic` (config: recipe components)


def landed(cfg: CurationConfig, store: ObjectStore) -> dict[str, list[str]]:
    """source -> the landing zones (names) that have a `<zone>/<source>/` folder, by one listing per zone."""
    out: dict[str, list[str]] = {}
    for zone in cfg.sources.landing_zones:
        uri = cfg.resolve_uri(zone.uri)
        for name in store.list_dirs(uri):
            if re.fullmatch(SOURCE_NAME, name):
                out.setdefault(name, []).append(zone.name)
    return out


def protected_outputs(store: ObjectStore, data_root: str, name: str) -> list[str]:
    """What of source `name` no code path deletes (resources.versions.PROTECTED), one label each: every version of
    `synthetic[name]`, and every `tokenized` version whose manifest.json counts a component of `name`. A key that
    is no source name (`../x`, `News`) has none, and no path is built from it: raw refuses it before any write."""
    if not re.fullmatch(SOURCE_NAME, name):
        return []
    root = data_root.rstrip("/")
    out = [f"synthetic[{name}] {v}" for v in list_versions(store, f"{root}/synthetic/{name}")]
    tokenized = f"{root}/tokenized/{UNPARTITIONED}"
    for version in list_versions(store, tokenized):
        try:
            components = json.loads(store.read_bytes(f"{tokenized}/{version}/manifest.json")).get("components", {})
        except FileNotFoundError:
            continue
        if any(c.removesuffix(SYNTHETIC_SUFFIX) == name for c in components):
            out.append(f"tokenized {version}")
    return out


def stale(registered: list[str], cfg: CurationConfig, store: ObjectStore, data_root: str) -> list[str]:
    """The registered partitions that are neither configured nor landed and have no protected output."""
    candidates = [p for p in registered if p not in cfg.source_names]
    if not candidates:
        return []  # the usual case: nothing is listed
    here = landed(cfg, store)
    return [p for p in candidates if p not in here and not protected_outputs(store, data_root, p)]
