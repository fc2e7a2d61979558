"""The code location `curation_assets.defs`: eleven assets, their checks, jobs, schedules, sensors, resources and the
executor, wired in one place.

Loaded lazily (`@dg.definitions`): the environment is read when Dagster loads the location, not at import time.
"""

import dagster as dg

from curation_assets.config import CurationConfig, load_config
from curation_assets.config.settings import Settings
from curation_assets.config.versions import asset_versions
from curation_assets.defs.deployment import deployment
from curation_assets.defs.jobs import INGEST_SOURCE, build_jobs, schedules
from curation_assets.defs.sensors import automation_sensor, landing_sensors, register_sources_sensor, with_automation
from curation_assets.steps import (
    annotated,
    decontam_index,
    dedup,
    deduped,
    filtered,
    mixed,
    quality_model,
    raw,
    synthetic,
    tokenized,
)
from curation_assets.steps.common import freshness_policy
from resources import sealed


def build_definitions(cfg: CurationConfig, settings: Settings) -> dg.Definitions:
    v = asset_versions(cfg)
    model = cfg.quality_model_params  # None: no source of a class is configured (no model, no scores)
    steps = [
        *raw.build(cfg, v["raw"]),
        *annotated.build(cfg, v["annotated"]),
        *(quality_model.build(cfg, model, v["quality_model"]) if model else []),
        *filtered.build(cfg, v["filtered"], with_model=model is not None),
        *dedup.build_signatures(cfg, v["dedup_signatures"]),
        *dedup.build_clusters(cfg, v["dedup_clusters"]),
        *decontam_index.build(cfg, v["decontam_index"]),
        *deduped.build(cfg, v["deduped"]),
        *synthetic.build(cfg, v["synthetic"]),
        *mixed.build(cfg, v["mixed"]),
        *tokenized.build(cfg, v["tokenized"]),
    ]
    assets = with_automation(steps, freshness_policy(cfg.thresholds.freshness))

    where = deployment(cfg, settings)
    jobs = build_jobs(ingest_config=where.ingest_config, with_model=model is not None)
    return dg.Definitions(
        assets=assets,
        jobs=list(jobs.values()),
        schedules=schedules(jobs),
        sensors=[
            register_sources_sensor(cfg, jobs[INGEST_SOURCE]),
            *landing_sensors(cfg, jobs[INGEST_SOURCE]),
            automation_sensor,
        ],
        resources=sealed(where.resources),  # configured by the deployment only, never by a run
        executor=where.executor,
    )


def config_for(settings: Settings) -> CurationConfig:
    return load_config(settings.sources, settings.recipe, settings.thresholds, settings.costs)


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(config_for(settings), settings)
