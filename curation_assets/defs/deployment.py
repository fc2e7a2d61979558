"""The deployment: the one place that knows whether the location runs on a laptop or in the cluster."""

from dataclasses import dataclass

import dagster as dg

from curation_assets.config import CurationConfig
from curation_assets.config.settings import Settings
from curation_assets.defs.jobs import ASSETS
from curation_assets.steps.common import source_partitions
from resources import build_resources
from resources.cost_guard import zone_pin


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
    zones |= {z for z in [settings.data_root_zone] if z}
    return {"raw": zone_pin(zones.pop(), settings.zone_label)} if len(zones) == 1 else {}


def k8s_executor(settings: Settings) -> dg.ExecutorDefinition:
    """dagster-k8s's executor: one Job per step, in the deployment's namespace, with the deployment's env."""
    from dagster_k8s import k8s_job_executor

    # Every step reads and writes the data root: when it is zonal (an S3 Express directory bucket), every step (its
    # checks run in it) runs in its zone. A run may add per-step pins (raw_pin, through ingest_source's partitioned
    # config).
    root = settings.data_root_zone
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


# forkserver with the location preloaded: each step (and check step) forks from a warm server instead of importing
# dagster, polars and the step modules again in a fresh interpreter
LOCAL_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["curation_assets.defs"]}}}
)


@dataclass(frozen=True)
class Deployment:
    # the configured instances, which in-process tools read; the Definitions bind them `sealed` (a run cannot
    # configure them)
    resources: dict[str, object]
    executor: dg.ExecutorDefinition
    ingest_config: dg.PartitionedConfig | None  # ingest_source's per-partition run config (raw's zone pin)


def deployment(cfg: CurationConfig, settings: Settings) -> Deployment:
    """Everything that differs between the laptop and the cluster, decided here and nowhere else: the resources
    (the cost guard is armed only in the cluster), the executor, and raw's per-source zone pin."""
    if settings.env != "k8s":  # a laptop: no zones (every path is `local`), the multiprocess executor
        resources = build_resources(settings, cfg.costs.model_dump(), tokenizer=cfg.tokenizer)
        return Deployment(resources, LOCAL_EXECUTOR, None)
    # in the cluster the cost guard is armed; the k8s executor pins each step to the zone of its zonal data
    # (k8s_executor, raw_pin), so the guard may assume that placement
    placement = {"pod_region": settings.region, "pod_zone": settings.pod_zone, "pinned": True}
    resources = build_resources(settings, cfg.costs.model_dump(), placement, cfg.tokenizer)
    pin_raw = dg.PartitionedConfig(
        partitions_def=source_partitions,
        run_config_for_partition_key_fn=lambda source: {
            "execution": {"config": {"per_step_k8s_config": raw_pin(cfg, settings, source)}}
        },
    )
    return Deployment(resources, k8s_executor(settings), pin_raw)
