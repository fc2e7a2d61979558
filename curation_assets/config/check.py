"""`curation validate` without Dagster: the environment and all four config files, every problem at once.

`check(environ)` returns the loaded config and a short summary, or raises one `ConfigError` whose lines name the
file (or `environment`), the key path and what is wrong. It reads files only: local source paths and globs must
match a file; `s3://` sources, the data root and the Dagster instance are not contacted.
"""

from __future__ import annotations

from collections.abc import Mapping

from curation_assets.config import CurationConfig, load_config
from curation_assets.config.errors import ConfigError
from curation_assets.config.settings import (
    FILE_VARIABLES,
    Settings,
    environment_problems,
    misspelled_variables,
)
from curation_assets.config.versions import asset_versions


def check(environ: Mapping[str, str]) -> tuple[Settings, CurationConfig, list[str]]:
    """(settings, config, summary lines) of the environment `environ`, or a ConfigError with every problem."""
    problems = environment_problems(environ) + misspelled_variables(environ)
    files = {kind: environ.get(var) or None for kind, var in FILE_VARIABLES.items()}
    cfg = None
    try:
        cfg = load_config(**files, check_paths=True)
    except ConfigError as e:
        problems += [_origin(p, files) for p in e.problems]
    if problems or cfg is None:
        raise ConfigError(problems)
    settings = Settings.from_env(environ)
    return settings, cfg, summary(settings, cfg, files)


def _origin(problem: str, files: Mapping[str, str | None]) -> str:
    """Say which variable named a file that is not there."""
    for kind, path in files.items():
        if path and problem == f"{path}: file not found":
            return f"{problem} (set by {FILE_VARIABLES[kind]})"
    return problem


def summary(settings: Settings, cfg: CurationConfig, files: Mapping[str, str | None]) -> list[str]:
    """What was loaded, from where, and the code_version each asset gets."""
    where = {kind: path or "bundled" for kind, path in files.items()}
    r, model = cfg.recipe, cfg.quality_model_params
    n = len(r.component_names())
    mix = f"{r.sampling} over {n} component{'s' if n != 1 else ''}" + (
        f", {r.target_tokens:,} target tokens" if r.target_tokens else ""
    )
    zones = cfg.sources.landing_zones
    return [
        f"ok: sources ({where['sources']}): {len(cfg.source_names)} ({', '.join(cfg.source_names)})"
        + (f"; landing zones: {', '.join(z.name for z in zones)}" if zones else ""),
        f"ok: recipe ({where['recipe']}): {r.name!r}, {mix}, tokenizer {r.tokenizer}",
        f"ok: thresholds ({where['thresholds']}): quality model "
        + (
            f"{', '.join(model.reference)} vs {', '.join(model.background)}"
            if model
            else "none (a class has no source)"
        ),
        f"ok: costs ({where['costs']}): budget ${cfg.costs.budget_usd:g} per step and run",
        f"ok: environment: {settings.env}, data root {settings.data_root}",
        "ok: config versions: " + " ".join(f"{a}={v}" for a, v in asset_versions(cfg).items()),
    ]
