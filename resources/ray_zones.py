"""The cost guard's zone rule for Ray workers: a step whose data root is zonal (an S3 Express One Zone directory
bucket in one AZ) may only hand its shards to Ray workers in that AZ; a worker in another AZ, or one that may run in
any AZ, would move the step's data across AZs (README "Cost guard").

Also the local data root's rule (`foreign_nodes`, `local_root_problems`): a local directory as the data root is
where the tasks write, so every Ray node on another machine that runs tasks must see it (a shared mount).

Pure and stdlib only. Three entry points for zones:
- `worker_zone_problems(worker_zones, data_zone)`: the rule. Empty list = allowed. The Ray engine calls it at
  connect time with the zones read from the Ray nodes (`ray_node_zones(ray.nodes())`) and refuses the step unless
  the run carries the cost guard's override tag.
- `ray_node_zones(nodes)`: {worker group: zone} from `ray.nodes()`, read from the Ray node label `RAY_ZONE_LABEL`.
- `raycluster_worker_zones(manifest)`: {worker group: zone} from a KubeRay RayCluster manifest (the zone each worker
  group's pods are pinned to), used to check deploy/ offline.

The Ray node label is `curation/zone` with the AZ ID as its value (`use1-az4`), set per group in the RayCluster
(`spec.workerGroupSpecs[].labels`, which KubeRay passes to `ray start --labels=curation/zone=use1-az4`) from the same
value as the group's zone pin, because a pod cannot read its node's labels. A node without it has no known zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The Ray node label carrying a node's zone (an AZ ID, as the cost guard uses).
RAY_ZONE_LABEL = "curation/zone"
# The Ray node label KubeRay sets (through RAY_NODE_TYPE_NAME) to the node's group name: `headgroup` or a worker
# group's `groupName`.
RAY_GROUP_LABEL = "ray.io/node-group"
# The Kubernetes node label the pods are pinned on (EKS >= 1.30; CURATION_ZONE_LABEL in the app).
DEFAULT_ZONE_LABEL = "topology.k8s.aws/zone-id"


def worker_zone_problems(worker_zones: Mapping[str, str | None], data_zone: str | None) -> list[str]:
    """One message per Ray worker (group) that would move data across AZs, sorted by name; empty when the step
    may use these workers.

    `worker_zones`: {worker group or node name: its zone, or None when it is not pinned to one zone}.
    `data_zone`: the AZ of the data root (CURATION_DATA_ZONE / the directory bucket's zone), None when the data root
    is regional or local: then no worker moves data across AZs and nothing is a problem."""
    if not data_zone:
        return []
    problems = []
    for name in sorted(worker_zones):
        zone = worker_zones[name]
        if zone == data_zone:
            continue
        where = f"runs in zone {zone}" if zone else "is not pinned to a zone (it may run in any AZ)"
        problems.append(
            f"Ray worker group {name!r} {where} but the data root is in zone {data_zone}: "
            f"its tasks would move the step's data across AZs"
        )
    return problems


def runs_tasks(node: Mapping[str, Any]) -> bool:
    """Whether a node of `ray.nodes()` can run tasks: alive, with a CPU (the head of a RayCluster has `num-cpus: 0`)."""
    return bool(node.get("Alive", True) and node.get("Resources", {}).get("CPU"))


def foreign_nodes(nodes: Iterable[Mapping[str, Any]], host: str) -> list[Mapping[str, Any]]:
    """The Ray nodes that can run tasks (`runs_tasks`) and are not this machine (`host`: its hostname, as Ray
    reports a node's `NodeManagerHostname`)."""
    return [node for node in nodes if runs_tasks(node) and node.get("NodeManagerHostname") != host]


def local_root_problems(unseen: Iterable[Mapping[str, Any]], local_root: str) -> list[str]:
    """One message per Ray node on another machine that does not see the local data root `local_root` (a file this
    machine wrote there is not there on it). A task writes its part into the step's staging version, and its scratch
    files, under the data root of the node it runs on: without a shared mount that is the node's own disk, and the
    step would publish a version whose parts are not where every reader looks."""
    return [
        f"Ray node {node.get('NodeManagerHostname')!r} ({node.get('NodeManagerAddress')}) does not see the local data "
        f"root {local_root}: its tasks would write their parts to that node's own disk; use an s3:// data root (or "
        f"mount the same directory on every node)"
        for node in unseen
    ]


def ray_node_zones(nodes: Iterable[Mapping[str, Any]], zone_label: str = RAY_ZONE_LABEL) -> dict[str, str | None]:
    """{worker group: zone} of the nodes that can run tasks, from `ray.nodes()` (dicts with `Alive`, `NodeID`,
    `Resources`, `Labels`). Dead nodes and nodes without a CPU (the head, `num-cpus: 0`) run no task and are left
    out. A group is named by its `ray.io/node-group` label (else `node <id>`); when the nodes of one group report
    different zones, each node is reported on its own as `<group>[<node id prefix>]`. A node without the zone label
    maps to None (its zone is unknown, which `worker_zone_problems` treats as unpinned)."""
    by_group: dict[str, dict[str, str | None]] = {}
    for node in nodes:
        if not runs_tasks(node):
            continue
        labels = node.get("Labels") or {}
        node_id = str(node.get("NodeID", ""))
        group = labels.get(RAY_GROUP_LABEL) or f"node {node_id[:12]}"
        by_group.setdefault(group, {})[node_id] = labels.get(zone_label) or None
    out: dict[str, str | None] = {}
    for group, zones in by_group.items():
        if len(set(zones.values())) == 1:
            out[group] = next(iter(zones.values()))
        else:
            out.update({f"{group}[{node_id[:12]}]": zone for node_id, zone in zones.items()})
    return out


def pod_zones(pod_spec: Mapping[str, Any], zone_label: str = DEFAULT_ZONE_LABEL) -> set[str] | None:
    """The zones (values of `zone_label`) the scheduler may put a pod with this spec in: its nodeSelector AND its
    required nodeAffinity (whose terms are ORed; a term that does not constrain the label allows any zone). None
    when the pod is not constrained on that label at all; an empty set when the constraints exclude every zone.
    Only the `In` operator can pin; any other operator on the label raises ValueError."""
    constraints: list[set[str]] = []
    selector = pod_spec.get("nodeSelector") or {}
    if zone_label in selector:
        constraints.append({selector[zone_label]})
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    per_term: list[set[str] | None] = []
    for term in required.get("nodeSelectorTerms") or []:
        exprs = [e for e in term.get("matchExpressions") or [] if e.get("key") == zone_label]
        for e in exprs:
            if e.get("operator") != "In":
                raise ValueError(f"unsupported operator {e.get('operator')!r} on {zone_label}: {e}")
        per_term.append(set.intersection(*(set(e.get("values") or []) for e in exprs)) if exprs else None)
    if per_term and None not in per_term:
        constraints.append(set().union(*per_term))  # type: ignore[arg-type]
    return set.intersection(*constraints) if constraints else None


def raycluster_worker_zones(manifest: Mapping[str, Any], zone_label: str = DEFAULT_ZONE_LABEL) -> dict[str, str | None]:
    """{worker group name: the zone its pods are pinned to, or None} of a KubeRay RayCluster manifest (a dict as
    rendered by kustomize). A group is pinned when its pod template's nodeSelector / required nodeAffinity on
    `zone_label` allows exactly one zone; a group that may run in several zones, or any, maps to None. A group whose
    constraints allow no zone at all cannot schedule and raises ValueError."""
    if manifest.get("kind") != "RayCluster":
        raise ValueError(f"not a RayCluster: kind {manifest.get('kind')!r}")
    out: dict[str, str | None] = {}
    for group in (manifest.get("spec") or {}).get("workerGroupSpecs") or []:
        name = group["groupName"]
        zones = pod_zones(((group.get("template") or {}).get("spec")) or {}, zone_label)
        if zones is not None and not zones:
            raise ValueError(f"Ray worker group {name!r}: its zone constraints on {zone_label} allow no zone")
        out[name] = next(iter(zones)) if zones and len(zones) == 1 else None
    return out
