"""Resources of the code location, and the one function that branches on the environment.

`Settings.from_env()` is the only place that reads environment variables; it is called when Dagster loads the
Definitions (never at import time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.classifiers import LanguageIdResource
from resources.cost_guard import CostGuard
from resources.storage import ObjectStore, ParquetIOManager, staging_dir_for
from resources.synthetic import SyntheticBackend
from resources.tokenizer import TokenizerResource

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """Environment of one deployment. `env` is `local` (embedded default) or `k8s`."""

    env: str = "local"
    data_root: str = str(REPO_ROOT / ".curation" / "data")
    sources: str | None = None
    recipe: str | None = None
    thresholds: str | None = None
    costs: str | None = None
    s3_endpoint: str | None = None
    region: str = "us-east-1"
    pod_zone: str | None = None
    data_region: str | None = None
    data_zone: str | None = None
    data_via: str = "gateway"
    zone_label: str = "topology.k8s.aws/zone-id"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: bool = False
    namespace: str = "curation"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if environ is None else environ
        env = e.get("CURATION_ENV", "local")
        if env not in ("local", "k8s"):
            raise ValueError(f"CURATION_ENV must be 'local' or 'k8s', got {env!r}")
        return cls(
            env=env,
            data_root=e.get("CURATION_DATA_ROOT") or cls.data_root,
            sources=e.get("CURATION_SOURCES") or None,
            recipe=e.get("CURATION_RECIPE") or None,
            thresholds=e.get("CURATION_THRESHOLDS") or None,
            costs=e.get("CURATION_COSTS") or None,
            s3_endpoint=e.get("CURATION_S3_ENDPOINT") or None,
            region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or cls.region,
            pod_zone=e.get("CURATION_POD_ZONE") or None,
            data_region=e.get("CURATION_DATA_REGION") or None,
            data_zone=e.get("CURATION_DATA_ZONE") or None,
            data_via=e.get("CURATION_DATA_VIA") or cls.data_via,
            zone_label=e.get("CURATION_ZONE_LABEL") or cls.zone_label,
            llm_base_url=e.get("CURATION_LLM_BASE_URL") or None,
            llm_model=e.get("CURATION_LLM_MODEL") or None,
            llm_api_key="CURATION_LLM_API_KEY" in e,
            namespace=e.get("CURATION_NAMESPACE") or cls.namespace,
        )


def build_resources(settings: Settings, costs: Mapping[str, object]) -> dict[str, object]:
    """Resource instances by key; the only branch on the environment. `costs`: the price table and budgets."""
    store = ObjectStore(
        endpoint_url=settings.s3_endpoint, region=settings.region, staging_dir=staging_dir_for(settings.data_root)
    )
    # On a laptop there are no zones (pod_region None: every path is `local`); in the cluster the guard is armed.
    # The k8s executor pins each step to the zone of its zonal data (definitions.executor), so the guard may too.
    placement = (
        {"pod_region": settings.region, "pod_zone": settings.pod_zone, "pinned": True} if settings.env == "k8s" else {}
    )
    guard = CostGuard(
        **placement,
        data_uri=settings.data_root,
        data_region=settings.data_region,
        data_zone=settings.data_zone,
        data_via=settings.data_via,
        **costs,
    )
    return {
        "io_manager": ParquetIOManager(base_uri=settings.data_root, store=store, cost_guard=guard),
        "store": store,
        "tokenizer": TokenizerResource(),
        "lid": LanguageIdResource(),
        "cost_guard": guard,
        "synth_backend": SyntheticBackend(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=dg.EnvVar("CURATION_LLM_API_KEY") if settings.llm_api_key else None,  # a secret: never in config
            cache_uri=f"{settings.data_root.rstrip('/')}/_synthetic_cache",
        ),
    }
