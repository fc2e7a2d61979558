"""The deployment's environment: the only place that reads environment variables.

`Settings.from_env()` is called when Dagster loads the definitions and when a `curation` command starts (never at
import time). `env` is `local` (the embedded default) or `k8s`; `resources.build_resources` is the one function
that branches on it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from curation_assets.config.errors import ConfigError, line, short
from curation_assets.config import zone_of

REPO_ROOT = Path(__file__).resolve().parents[2]
# Every variable a deployment may set; a CURATION_* variable not listed here is reported (a typo is silent otherwise)
VARIABLES = (
    "CURATION_ENV",
    "CURATION_DATA_ROOT",
    "CURATION_SOURCES",
    "CURATION_RECIPE",
    "CURATION_THRESHOLDS",
    "CURATION_COSTS",
    "CURATION_S3_ENDPOINT",
    "CURATION_POD_ZONE",
    "CURATION_DATA_REGION",
    "CURATION_DATA_ZONE",
    "CURATION_DATA_VIA",
    "CURATION_ZONE_LABEL",
    "CURATION_LLM_BASE_URL",
    "CURATION_LLM_MODEL",
    "CURATION_LLM_API_KEY",
    "CURATION_NAMESPACE",
    "CURATION_RAY_ADDRESS",
    "CURATION_WORKERS",
    "CURATION_RAY_DIR",
)
FILE_VARIABLES = {
    "sources": "CURATION_SOURCES",
    "recipe": "CURATION_RECIPE",
    "thresholds": "CURATION_THRESHOLDS",
    "costs": "CURATION_COSTS",
}
ZONE_ID = re.compile(r"^[a-z0-9]+-az\d+$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


GLOB_CHARACTERS = "*?[]"


def environment_problems(environ: Mapping[str, str]) -> list[str]:
    """One line per environment variable whose value cannot work (`environment: <VAR>: <message>`)."""
    e = {k: v for k, v in environ.items() if v != ""}  # an empty variable means "unset" (from_env reads it so)
    out = []

    def bad(var: str, message: str) -> None:
        out.append(line("environment", var, message))

    if e.get("CURATION_ENV", "local") not in ("local", "k8s"):
        bad("CURATION_ENV", f"must be 'local' or 'k8s', got {short(e['CURATION_ENV'])}")
    if "CURATION_DATA_ROOT" in e:
        root = e["CURATION_DATA_ROOT"]
        scheme, _, rest = root.rpartition("://")
        if scheme not in ("", "s3"):
            bad("CURATION_DATA_ROOT", f"must be a local path or an s3:// URI, got {short(root)}")
        elif not rest.strip("/"):
            bad(
                "CURATION_DATA_ROOT",
                f"must name a directory below the root, not {short(root)} (versions are deleted under it)",
            )
        elif ".." in rest.split("/"):
            bad("CURATION_DATA_ROOT", f"must not contain '..' segments, got {short(root)}")
        elif any(c in rest for c in GLOB_CHARACTERS):
            # outputs are found again by listing and globbing under the root: `[1]` would match nothing
            bad("CURATION_DATA_ROOT", f"must not contain glob characters {GLOB_CHARACTERS}, got {short(root)}")
    if e.get("CURATION_DATA_VIA", "gateway") not in ("gateway", "nat"):
        bad("CURATION_DATA_VIA", f"must be 'gateway' or 'nat', got {short(e['CURATION_DATA_VIA'])}")
    for var in ("CURATION_POD_ZONE", "CURATION_DATA_ZONE"):
        if var in e and not ZONE_ID.match(e[var]):
            bad(var, f"must be an AZ ID such as use1-az4 (not a zone name such as us-east-1a), got {short(e[var])}")
    for var in ("CURATION_S3_ENDPOINT", "CURATION_LLM_BASE_URL"):
        if var in e and not re.match(r"^https?://[^/\s]+", e[var]):
            bad(var, f"must be an http:// or https:// URL, got {short(e[var])}")
    if "CURATION_NAMESPACE" in e and not DNS_LABEL.match(e["CURATION_NAMESPACE"]):
        bad("CURATION_NAMESPACE", f"must be a Kubernetes namespace (DNS label), got {short(e['CURATION_NAMESPACE'])}")
    if "CURATION_RAY_ADDRESS" in e and not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", e["CURATION_RAY_ADDRESS"]):
        bad("CURATION_RAY_ADDRESS", f"must be a Ray GCS address host:port, got {short(e['CURATION_RAY_ADDRESS'])}")
    if "CURATION_WORKERS" in e and not e["CURATION_WORKERS"].isdigit():
        bad("CURATION_WORKERS", f"must be a number of CPUs (0: no Ray), got {short(e['CURATION_WORKERS'])}")
    return out


def misspelled_variables(environ: Mapping[str, str]) -> list[str]:
    """A `CURATION_*` variable curation does not read but that is one typo away from one it does (`CURATION_THRESHOLD`
    silently leaves the bundled thresholds in force). Reported by `curation validate`; not refused at load."""
    out = []
    for var in sorted(k for k in environ if k.startswith("CURATION_") and k not in VARIABLES):
        near = difflib.get_close_matches(var, VARIABLES, n=1, cutoff=0.85)
        if near:
            out.append(line("environment", var, f"not a variable curation reads (did you mean {near[0]!r}?)"))
    return out


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
    ray_address: str | None = None  # an existing Ray cluster (the KubeRay head); None: the embedded local cluster
    # CPUs of the embedded Ray cluster (None: every core); 0, as DataLoader's num_workers=0: no Ray, each step runs its
    # tasks in its own process, one after another (a debugger, a tiny machine; the tests where Ray is not the subject)
    workers: int | None = None
    # where the embedded Ray cluster is recorded: by default `<DAGSTER_HOME>/ray`, one cluster per Dagster instance
    # (CURATION_RAY_DIR shares one across instances, as the test suite does)
    ray_dir: str = str(REPO_ROOT / ".curation" / "dagster" / "ray")

    @property
    def data_root_zone(self) -> str | None:
        """The data root's AZ ID: CURATION_DATA_ZONE, else the zone an S3 Express directory bucket's name carries."""
        return self.data_zone or zone_of(self.data_root)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of this process's environment; a `ConfigError` (one line per bad variable) if any value
        cannot work (see `environment_problems`)."""
        e = os.environ if environ is None else environ
        problems = environment_problems(e)
        if problems:
            raise ConfigError(problems)
        return cls(
            env=e.get("CURATION_ENV") or "local",
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
            ray_address=e.get("CURATION_RAY_ADDRESS") or None,
            workers=int(e["CURATION_WORKERS"]) if e.get("CURATION_WORKERS") else None,
            ray_dir=e.get("CURATION_RAY_DIR") or (f"{e['DAGSTER_HOME']}/ray" if e.get("DAGSTER_HOME") else cls.ray_dir),
        )
