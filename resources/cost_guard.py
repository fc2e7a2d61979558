"""Cost guard: prices the bytes a step will move and refuses the step before it moves any across an AZ or region.

Path classes and list prices (AWS, checked 2026-11; ../shared/notes/k8s.md §3.1; the table lives in costs.yaml):
- `local`: a local disk or a pod-local volume: free;
- `same_zone`: zonal storage (S3 Express One Zone directory bucket `name--<az-id>--x-s3`, one-zone EFS) in the pod's
  zone: free;
- `regional_gateway`: regional S3 in the compute region through a gateway VPC endpoint: free, whatever the AZ;
- `regional_nat`: the same through a NAT gateway: NAT processing, about $0.045/GB;
- `cross_az`: zonal storage in another AZ of the region: $0.01/GB in each direction, both billed, so $0.02/GB;
- `cross_region`: another region: about $0.02/GB out of US regions (up to $0.09 elsewhere), plus NAT if any.
Zones are AZ IDs (`use1-az4`), never names (`us-east-1a`): names map to different physical zones per account.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import dagster as dg

from curation_assets.config import zone_of
from resources.store import kind_of

GB = 1e9
PathClass = Literal["local", "same_zone", "regional_gateway", "regional_nat", "cross_az", "cross_region"]
REFUSED: tuple[PathClass, ...] = ("cross_az", "cross_region")
# A run tag whose value (a reason) lets a run move data across zones or over budget; it is logged and recorded.
OVERRIDE_TAG = "curation/allow-transfer"


class CrossZoneTransferError(Exception):
    """Raised before a transfer that crosses an AZ or region, or whose estimated cost exceeds the step's budget."""


@dataclass(frozen=True)
class Transfer:
    """`bytes` moved between the step's pod and `uri`. `region`/`zone` say where the bytes live (None = the
    compute region / no zone affinity); `via` is the network path for remote storage."""

    uri: str
    bytes: int
    region: str | None = None
    zone: str | None = None
    via: Literal["gateway", "nat"] = "gateway"
    label: str = ""  # e.g. the source name, for error messages


@dataclass
class TransferPlan:
    bytes_by_class: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    usd: float = 0.0
    offenders: list[str] = field(default_factory=list)

    @property
    def cross_az_bytes(self) -> int:
        return self.bytes_by_class.get("cross_az", 0)

    @property
    def cross_region_bytes(self) -> int:
        return self.bytes_by_class.get("cross_region", 0)

    def metadata(self) -> dict[str, object]:
        """The plan's numbers (what the checks read): bytes per path class, cross-zone bytes, estimated cost."""
        md: dict[str, object] = {f"bytes_{c}": int(n) for c, n in sorted(self.bytes_by_class.items())}
        md |= {
            "cross_az_bytes": self.cross_az_bytes,
            "cross_region_bytes": self.cross_region_bytes,
            "transfer_usd": round(self.usd, 6),
        }
        return md

    def markdown(self) -> str:
        """The one cost table a step page shows: bytes per network path and the estimated price of all of them."""
        rows = [f"| {c.replace('_', ' ')} | {n:,} |" for c, n in sorted(self.bytes_by_class.items()) if n]
        return "\n".join(
            ["| network path | bytes |", "|---|---:|", *(rows or ["| none | 0 |"]), f"| **cost** | ${self.usd:.4f} |"]
        )


class CostGuard(dg.ConfigurableResource):
    """Plans transfers and enforces: no cross-AZ/region byte and no step above `budget_usd` without an override.

    `pod_region`/`pod_zone` are where steps run (on Kubernetes the overlay pins the zone with nodeAffinity on
    `topology.k8s.aws/zone-id` and exports the same value); locally both are None and every path is `local`.
    `data_*` describe the data root (CURATION_DATA_ROOT) that every step reads and writes.
    """

    pod_region: str | None = None
    pod_zone: str | None = None
    # Under the k8s executor every step that touches zonal data is pinned to that zone (`zone_pin`, applied by
    # definitions.executor); then a step's pod runs where its zonal data is, and only data elsewhere is crossed.
    pinned: bool = False
    data_uri: str = ""
    data_region: str | None = None
    data_zone: str | None = None
    data_via: Literal["gateway", "nat"] = "gateway"
    usd_per_gb: dict[str, float] = {
        "local": 0.0,
        "same_zone": 0.0,
        "regional_gateway": 0.0,
        "regional_nat": 0.045,
        "cross_az": 0.02,
        "cross_region": 0.02,
    }
    nat_usd_per_gb: float = 0.045  # added on top of cross_region when the path goes through a NAT gateway
    budget_usd: float = 10.0
    step_budgets_usd: dict[str, float] = {}

    def data_root(self, nbytes: int) -> Transfer:
        """Reading or writing `nbytes` of step outputs under the data root."""
        return Transfer(
            self.data_uri,
            int(nbytes),
            self.data_region,
            self.data_zone or zone_of(self.data_uri),
            self.data_via,
            label="data root",
        )

    def step_zone(self, transfers: list[Transfer]) -> tuple[str | None, list[str]]:
        """(the zone the step's pod runs in, every distinct zone its in-region zonal data lives in).

        Unpinned, the pod runs in `pod_zone` (None: anywhere). Pinned, it runs in the zone of its zonal data, which
        is only well defined when that data lives in one zone (and the deployment's own pin, if any, agrees)."""
        zones = sorted(
            {
                z
                for t in transfers
                if not t.region or t.region == self.pod_region
                for z in [t.zone or zone_of(t.uri)]
                if z
            }
            | ({self.pod_zone} if self.pod_zone and self.pinned else set())
        )
        return (zones[0] if self.pinned and len(zones) == 1 else self.pod_zone), zones

    def classify(self, t: Transfer, pod_zone: str | None = None) -> PathClass:
        if kind_of(t.uri) == "local" or self.pod_region is None:
            return "local"
        zone = t.zone or zone_of(t.uri)
        if t.region and t.region != self.pod_region:
            return "cross_region"
        if zone:  # a pod in an unknown zone reads zonal data from another AZ unless luck says otherwise
            return "same_zone" if zone == (pod_zone or self.pod_zone) else "cross_az"
        return "regional_gateway" if t.via == "gateway" else "regional_nat"

    def plan(self, transfers: list[Transfer]) -> TransferPlan:
        plan = TransferPlan()
        pod_zone, zones = self.step_zone(transfers)
        if self.pod_region is not None and len(zones) > 1:
            plan.offenders.append(
                f"the step's data lives in {len(zones)} zones ({', '.join(zones)}): no pod is local to all of it"
            )
        for t in transfers:
            c = self.classify(t, pod_zone)
            plan.bytes_by_class[c] += t.bytes
            plan.usd += (
                t.bytes
                / GB
                * (self.usd_per_gb[c] + (self.nat_usd_per_gb if c == "cross_region" and t.via == "nat" else 0.0))
            )
            if c in REFUSED:
                where = f"{t.region or self.pod_region}/{t.zone or zone_of(t.uri)}"
                plan.offenders.append(
                    f"{t.label or t.uri}: {t.bytes} B {c} ({where} -> {self.pod_region}/"
                    f"{pod_zone}), about ${t.bytes / GB * self.usd_per_gb[c]:.4f}"
                )
        return plan

    def budget(self, step: str | None) -> float:
        return self.step_budgets_usd.get(step or "", self.budget_usd)

    def enforce(self, transfers: list[Transfer], override: str | None = None, step: str | None = None) -> TransferPlan:
        """Raise `CrossZoneTransferError` unless the plan is free of cross-zone bytes and within the step's budget,
        or an explicit `override` (a reason, logged by the caller) is given."""
        plan = self.plan(transfers)
        problems = list(plan.offenders)
        if plan.usd > self.budget(step):
            problems.append(f"estimated ${plan.usd:.2f} exceeds the {step or 'step'} budget ${self.budget(step):.2f}")
        if problems and not override:
            raise CrossZoneTransferError("refusing to start: " + "; ".join(problems[:5]))
        return plan


def zone_pin(zone: str, label: str = "topology.k8s.aws/zone-id") -> dict:
    """The `dagster-k8s/config` fragment that pins a pod to `zone` (an AZ ID under EKS's `zone-id` label, or a zone
    name when the cluster labels nodes with `topology.kubernetes.io/zone` only)."""
    return {"pod_spec_config": {"node_selector": {label: zone}}}
