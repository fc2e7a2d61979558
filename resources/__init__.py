"""Resources of the code location, built by `build_resources` from the settings and the deployment's placement.

The environment is read by `curation_assets.config.settings.Settings.from_env()` when Dagster loads the Definitions
(never at import time).
"""

from __future__ import annotations

from collections.abc import Mapping

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


def build_resources(
    settings: Settings, costs: Mapping[str, object], placement: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Resource instances by key. `costs`: the price table and budgets; `placement`: where the steps run, for the cost
    guard (`pod_region`, `pod_zone`, `pinned`; none on a laptop, where every path is `local`). The deployment
    (`curation_assets/defs/deployment.py`) decides it."""
    store = ObjectStore(
        endpoint_url=settings.s3_endpoint, region=settings.region, staging_dir=staging_dir_for(settings.data_root)
    )
    guard = CostGuard(
        **(placement or {}),
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
            address=settings.ray_address,
            workers=settings.workers,
            state_dir=settings.ray_dir,
            # in the cluster (a placement is given) every Ray worker must be in a zonal data root's zone
            data_zone=settings.data_root_zone if placement else None,
        ),
    }
