"""Resources of the code location, and the one function that branches on the environment (`build_resources`).

The environment is read by `curation_assets.config.settings.Settings.from_env()` when Dagster loads the Definitions
(never at import time).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from curation_assets.config.settings import Settings
from resources.classifiers import LanguageIdResource
from resources.cost_guard import CostGuard
from resources.engine import RayEngine
from resources.io_manager import ParquetIOManager
from resources.store import ObjectStore
from resources.synthetic import SyntheticBackend
from resources.tokenizer import TokenizerResource
from resources.versions import staging_dir_for


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
        "engine": RayEngine(
            address=settings.ray_address, workers=settings.workers, state_dir=str(Path(settings.instance_dir) / "ray")
        ),
    }
