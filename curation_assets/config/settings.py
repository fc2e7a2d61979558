"""The deployment's environment: the only place that reads environment variables.

`Settings.from_env()` is called when Dagster loads the definitions and when a `curation` command starts (never at
import time). `env` is `local` (the embedded default) or `k8s`; `resources.build_resources` is the one function
that branches on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
