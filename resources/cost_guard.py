"""Cost guard: refuses a step before it moves data across availability zones or regions.

Pricing model (AWS list prices, checked 2026-11; see ../shared/notes/k8s.md §3.1):
- regional S3 -> compute in the same region: free, whatever the AZ;
- zonal storage (S3 Express One Zone directory buckets `name--<az-id>--x-s3`, EBS/EFS one-zone, a pod-to-pod hop) in
  another AZ of the same region: $0.01/GB in each direction, both billed, so $0.02 per GB moved;
- another region: about $0.02/GB out of the source region between US regions, up to $0.09 elsewhere.
Zones are compared as given; use AZ IDs (`use1-az4`) rather than names (`us-east-1a`): names map to different
physical zones in different accounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dagster as dg

S3_EXPRESS = re.compile(r"^s3://(?P<base>[a-z0-9][a-z0-9-]*?)--(?P<zone_id>[a-z0-9]+-az\d+)--x-s3(/|$)")
GB = 1e9


class CrossZoneTransferError(Exception):
    """Raised before a transfer whose cross-AZ or cross-region bytes exceed the configured allowance."""


@dataclass(frozen=True)
class Transfer:
    uri: str
    bytes: int
    region: str | None = None  # None: the compute region
    zone: str | None = None  # None: regional (or local) storage, no zone affinity


@dataclass
class TransferPlan:
    cross_az_bytes: int = 0
    cross_region_bytes: int = 0
    usd: float = 0.0
    offenders: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, object]:
        return {"cross_az_bytes": self.cross_az_bytes, "cross_region_bytes": self.cross_region_bytes,
                "transfer_usd_estimate": round(self.usd, 6)}


class CostGuard(dg.ConfigurableResource):
    """Plans the bytes a step will move and raises `CrossZoneTransferError` when they cross a paid boundary.

    `pod_zone`/`pod_region`: where this step runs (on Kubernetes the overlay pins the zone with nodeAffinity and sets
    the same value in the environment; locally both are None and everything counts as co-located).
    """

    pod_region: str | None = None
    pod_zone: str | None = None
    data_uri: str = ""
    data_region: str | None = None
    data_zone: str | None = None
    max_cross_az_bytes: int = 0
    max_cross_region_bytes: int = 0
    usd_per_gb_cross_az: float = 0.02
    usd_per_gb_cross_region: float = 0.02

    def locate(self, uri: str, region: str | None = None, zone: str | None = None) -> Transfer:
        """A transfer with the zone of an S3 Express directory bucket read off its name when not given."""
        m = S3_EXPRESS.match(uri)
        return Transfer(uri=uri, bytes=0, region=region, zone=zone or (m["zone_id"] if m else None))

    def data_root(self, nbytes: int) -> Transfer:
        """Reading `nbytes` of step outputs from the data root (CURATION_DATA_ROOT)."""
        t = self.locate(self.data_uri, self.data_region, self.data_zone)
        return Transfer(uri=t.uri, bytes=nbytes, region=t.region, zone=t.zone)

    def plan(self, transfers: list[Transfer]) -> TransferPlan:
        plan = TransferPlan()
        for t in transfers:
            if t.region and self.pod_region and t.region != self.pod_region:
                plan.cross_region_bytes += t.bytes
                plan.usd += t.bytes / GB * self.usd_per_gb_cross_region
                plan.offenders.append(f"{t.uri} ({t.region} -> {self.pod_region}, {t.bytes} B)")
            elif t.zone and self.pod_zone and t.zone != self.pod_zone:
                plan.cross_az_bytes += t.bytes
                plan.usd += t.bytes / GB * self.usd_per_gb_cross_az
                plan.offenders.append(f"{t.uri} ({t.zone} -> {self.pod_zone}, {t.bytes} B)")
        return plan

    def enforce(self, transfers: list[Transfer]) -> TransferPlan:
        plan = self.plan(transfers)
        if plan.cross_az_bytes > self.max_cross_az_bytes or plan.cross_region_bytes > self.max_cross_region_bytes:
            raise CrossZoneTransferError(
                f"refusing to move {plan.cross_az_bytes} B across AZs and {plan.cross_region_bytes} B across regions "
                f"(about ${plan.usd:.2f}); allowed {self.max_cross_az_bytes} / {self.max_cross_region_bytes} B: "
                + "; ".join(plan.offenders[:5]))
        return plan
