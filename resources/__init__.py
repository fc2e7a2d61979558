"""Resources of the code location, built by `build_resources` from the settings and the deployment's placement, and
bound by `sealed` so that only the deployment configures them.

The environment is read by `curation_assets.config.settings.Settings.from_env()` when Dagster loads the Definitions
(never at import time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package imports nothing itself: `curation run` starts Ray (`resources.local_ray`) first
    import dagster as dg

    from curation_assets.config.settings import Settings
    from curation_assets.config.tokenizer import TokenizerSpec


def build_resources(
    settings: Settings,
    costs: Mapping[str, object],
    placement: Mapping[str, object] | None = None,
    tokenizer: TokenizerSpec | None = None,
) -> dict[str, object]:
    """Resource instances by key. `costs`: the price table and budgets; `placement`: where the steps run, for the cost
    guard (`pod_region`, `pod_zone`, `pinned`; none on a laptop, where every path is `local`). The deployment
    (`curation_assets/defs/deployment.py`) decides it."""
    import dagster as dg

    from resources.classifiers import LanguageIdResource
    from resources.cost_guard import CostGuard
    from resources.engine import RayEngine
    from resources.io_manager import ParquetIOManager
    from resources.store import ObjectStore
    from resources.synthetic import SyntheticBackend
    from resources.tokenizer import TokenizerResource
    from resources.versions import staging_dir_for

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
        # the recipe's tokenizer (resolved by the config; cl100k_base without one): it counts filtered's n_tokens, so
        # the mixture's token weights and the shards are in the same tokens
        "tokenizer": TokenizerResource(encoding=tokenizer.encoding, eos_token=tokenizer.eos_token)
        if tokenizer
        else TokenizerResource(),
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
            data_root=settings.data_root,
        ),
    }


def sealed(
    resources: Mapping[str, dg.ConfigurableResource | dg.ConfigurableIOManager],
) -> dict[str, dg.ResourceDefinition]:
    """The definitions Dagster binds for `resources`: each fixed to the values its instance was built with, with an
    empty run-config schema, so a run config that names one (`resources: {cost_guard: {config: ...}}` from the
    Launchpad, a sensor or the API) fails validation before the run starts.

    Every resource's config is a safety property (where outputs are written, the cost guard's placement, the store's
    endpoint, the Ray cluster and its zone, the LLM endpoint, the encoding): only the deployment sets it, and the run
    tag `curation/allow-transfer` stays the only way across a zone."""
    out: dict[str, dg.ResourceDefinition] = {}
    for key, resource in resources.items():
        definition = resource.get_resource_definition()
        # the instance's own values (an EnvVar stays a reference, read at run time): `configured({})` would give the
        # class defaults, an unarmed cost guard among them
        out[key] = definition.configured(definition.config_schema.default_value, config_schema={})
    return out
