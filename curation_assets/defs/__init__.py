"""The code location: nine assets, their checks, jobs, schedules, sensors, resources and the executor.

Loaded lazily (`@dg.definitions`): the environment is read when Dagster loads the location, not at import time.
"""

import dagster as dg

from curation_assets import dedup_corpus, deduped, filtered, mixed, quality_model, raw, synthetic, tokenized
from curation_assets.steps.common import freshness_policy, source_partitions, transfer_check
from curation_assets.defs.sensors import automation_sensor, landing_sensors, with_automation
from curation_assets.config import CurationConfig, load_config, version_of
from curation_assets.config.settings import Settings
from resources import build_resources
from curation_assets.config import zone_of
from resources.cost_guard import zone_pin

ASSETS = (
    "raw",
    "quality_model",
    "filtered",
    "dedup_signatures",
    "dedup_clusters",
    "deduped",
    "synthetic",
    "mixed",
    "tokenized",
)
# Jobs in the order a full rebuild runs them: per source its documents read; the quality classifier trained on the
# reference and background sources; per source up to its MinHash signatures (map); the corpus-wide clustering over
# every source's signatures (reduce); per source the ledger applied and synthetic data; the mixture.
INGEST_SOURCE = "ingest_source"
TRAIN_QUALITY = "train_quality_model"
CURATE_SOURCE = "curate_source"
DEDUPE_CORPUS = "dedupe_corpus"
FINISH_SOURCE = "finish_source"
BUILD_MIXTURE = "build_mixture"
JOB_ASSETS = {
    INGEST_SOURCE: ("raw",),
    TRAIN_QUALITY: ("quality_model",),
    CURATE_SOURCE: ("filtered", "dedup_signatures"),
    DEDUPE_CORPUS: ("dedup_clusters",),
    FINISH_SOURCE: ("deduped", "synthetic"),
    BUILD_MIXTURE: ("mixed", "tokenized"),
}
JOB_DESCRIPTIONS = {
    INGEST_SOURCE: "raw for one source partition (read, parsed, quarantined)",
    TRAIN_QUALITY: "the DCLM-style quality classifier, trained on raw of its reference and background sources",
    CURATE_SOURCE: "filtered -> dedup_signatures for one source partition (after train_quality_model)",
    DEDUPE_CORPUS: "near-duplicate clusters over every source's stored signatures (cross-source, by priority)",
    FINISH_SOURCE: "deduped -> synthetic for one source partition (after dedupe_corpus)",
    BUILD_MIXTURE: "the recipe's mixture and its token stream, over every source",
}


def versions(cfg: CurationConfig) -> dict[str, str]:
    """code_version per asset: the hash of the config that drives it, so a threshold edit marks it stale."""
    t = cfg.thresholds
    return {
        "raw": version_of(cfg.sources, t.raw.data_params(), "readers-v1"),
        "quality_model": version_of(quality_model.training_params(cfg), "quality-model-v1"),
        "filtered": version_of(t.filtered.data_params(), quality_model.training_params(cfg), "filtered-v3"),
        "dedup_signatures": version_of(dedup_corpus.corpus_params(cfg).signature_version, "signatures-v1"),
        "dedup_clusters": version_of(dedup_corpus.corpus_params(cfg).model_dump(mode="json"), "clusters-v1"),
        "deduped": version_of(t.deduped.data_params(), "deduped-v3"),
        "synthetic": version_of(t.synthetic.data_params(), "synthetic-v2"),
        "mixed": version_of(cfg.recipe, t.mixed.data_params(), "mixed-v2"),
        "tokenized": version_of(cfg.recipe, t.tokenized.data_params(), tokenized.FORMAT),
    }


def data_root_zone(settings: Settings) -> str | None:
    return settings.data_zone or zone_of(settings.data_root)


def raw_pin(cfg: CurationConfig, settings: Settings, source: str) -> dict:
    """Per-step k8s config that pins `raw` of `source` to the one zone its zonal data and the data root share
    (empty when nothing is zonal, or when they are in two zones: the cost guard then refuses the step)."""
    if source in cfg.source_names:
        zones = cfg.source(source).zones()
    elif len(cfg.sources.landing_zones) == 1:  # a landed source takes its zone from the landing zone
        zone = cfg.sources.landing_zones[0]
        zones = zone.source(source, cfg.resolve_uri(zone.uri)).zones()
    else:
        zones = set()
    zones |= {z for z in [data_root_zone(settings)] if z}
    return {"raw": zone_pin(zones.pop(), settings.zone_label)} if len(zones) == 1 else {}


def executor(settings: Settings) -> dg.ExecutorDefinition:
    if settings.env == "k8s":
        from dagster_k8s import k8s_job_executor

        # Every step reads and writes the data root: when it is zonal (an S3 Express directory bucket), every step
        # runs in its zone. A run may add per-step pins (raw_pin, through ingest_source's partitioned config).
        root = data_root_zone(settings)
        pins = {step: zone_pin(root, settings.zone_label) for step in ASSETS} if root else {}

        @dg.configured(
            k8s_job_executor,
            config_schema={"per_step_k8s_config": dg.Field(dg.Permissive(), is_required=False, default_value={})},
        )
        def k8s(config: dict) -> dict:
            return {
                "job_namespace": settings.namespace,
                "service_account_name": "curation-dagster",
                "env_config_maps": ["curation-env"],
                "env_secrets": ["curation-aws"],
                "max_concurrent": 16,
                "per_step_k8s_config": {**pins, **config["per_step_k8s_config"]},
            }

        return k8s
    # forkserver with the location preloaded: each step (and check step) forks from a warm server instead of
    # importing dagster, polars and the step modules again in a fresh interpreter
    return dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["curation_assets.defs"]}}}
    )


def register_sources_sensor(cfg: CurationConfig, job) -> dg.SensorDefinition:
    @dg.sensor(
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="adds a `source` partition for every source in the sources config and ingests new ones",
    )
    def register_sources(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        known = set(context.instance.get_dynamic_partitions(source_partitions.name))
        new = [s for s in cfg.source_names if s not in known]
        if not new:
            return dg.SkipReason("every configured source is registered")
        return dg.SensorResult(
            dynamic_partitions_requests=[source_partitions.build_add_request(new)],
            run_requests=[dg.RunRequest(run_key=f"register:{s}", partition_key=s) for s in new],
        )

    return register_sources


def build_definitions(cfg: CurationConfig, settings: Settings) -> dg.Definitions:
    v = versions(cfg)
    model = quality_model.training_params(cfg)  # None: no source of a class is configured (no model, no scores)
    assets = with_automation(
        [
            raw.build(cfg, v["raw"]),
            *([quality_model.build(cfg, model, v["quality_model"])] if model else []),
            filtered.build(cfg, v["filtered"], with_model=model is not None),
            dedup_corpus.build_signatures(cfg, v["dedup_signatures"]),
            dedup_corpus.build_clusters(cfg, v["dedup_clusters"]),
            deduped.build(cfg, v["deduped"]),
            synthetic.build(cfg, v["synthetic"]),
            mixed.build(cfg, v["mixed"]),
            tokenized.build(cfg, v["tokenized"]),
        ],
        freshness_policy(cfg.thresholds.freshness),
    )

    def job(name: str, config: dg.PartitionedConfig | None = None):
        selection = dg.AssetSelection.assets(*JOB_ASSETS[name])
        return dg.define_asset_job(name, selection=selection, description=JOB_DESCRIPTIONS[name], config=config)

    pin_raw = dg.PartitionedConfig(
        partitions_def=source_partitions,
        run_config_for_partition_key_fn=lambda source: {
            "execution": {"config": {"per_step_k8s_config": raw_pin(cfg, settings, source)}}
        },
    )
    ingest = job(INGEST_SOURCE, pin_raw if settings.env == "k8s" else None)
    train, curate, dedupe, finish, mixture = map(
        job, (TRAIN_QUALITY, CURATE_SOURCE, DEDUPE_CORPUS, FINISH_SOURCE, BUILD_MIXTURE)
    )

    def per_source(job, cron: str, name: str) -> dg.ScheduleDefinition:
        @dg.schedule(job=job, cron_schedule=cron, execution_timezone="UTC", name=name)
        def _schedule(context: dg.ScheduleEvaluationContext):
            day = context.scheduled_execution_time.strftime("%Y-%m-%d")
            for s in context.instance.get_dynamic_partitions(source_partitions.name):
                yield dg.RunRequest(run_key=f"{s}:{day}", partition_key=s)

        return _schedule

    # Nightly rebuild; each stage has 30-60 min for the one before it (declarative automation also runs the later
    # stages as soon as their inputs change, so the schedules are the floor, not the only trigger).
    schedules = [
        per_source(ingest, "0 1 * * *", "ingest_sources_daily"),
        *(
            [
                dg.ScheduleDefinition(
                    job=train, cron_schedule="30 1 * * *", execution_timezone="UTC", name="train_quality_model_daily"
                )
            ]
            if model
            else []
        ),
        per_source(curate, "0 2 * * *", "curate_sources_daily"),
        dg.ScheduleDefinition(
            job=dedupe, cron_schedule="0 3 * * *", execution_timezone="UTC", name="dedupe_corpus_daily"
        ),
        per_source(finish, "30 3 * * *", "finish_sources_daily"),
        dg.ScheduleDefinition(
            job=mixture, cron_schedule="0 5 * * *", execution_timezone="UTC", name="build_mixture_daily"
        ),
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[transfer_check(name) for name in ASSETS if model or name != "quality_model"],
        jobs=[ingest, *([train] if model else []), curate, dedupe, finish, mixture],
        schedules=schedules,
        sensors=[register_sources_sensor(cfg, ingest), *landing_sensors(cfg, ingest), automation_sensor],
        resources=build_resources(settings, cfg.costs.model_dump()),
        executor=executor(settings),
    )


def config_for(settings: Settings) -> CurationConfig:
    return load_config(settings.sources, settings.recipe, settings.thresholds, settings.costs)


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(config_for(settings), settings)
