"""deploy/'s KubeRay RayCluster `curation-ray`: both overlays render exactly one, it validates against the KubeRay CRD's
schema with unknown fields rejected (as the API server's strict field validation would), its pods (head with the
autoscaler sidecar KubeRay adds, workers with the init container KubeRay adds) pass the same Pod Security
"restricted" checks as every other pod (tests/test_deploy.py), its sizes come from the overlays, steps find it
through CURATION_RAY_ADDRESS, and in prod its workers are pinned to the data's zone, which the cost guard's zone
rule for Ray workers (resources/ray_zones.py) accepts while it refuses a worker group in another zone or unpinned.

No cluster is reachable from here, so the CRD schema is the one of ../shared/crds/kuberay/ (KubeRay 1.7) and the
pods KubeRay builds from the templates are modelled after its pod builder (ray-operator/controllers/ray/common/pod.go,
v1.7.0): only what it adds that the restricted profile looks at (containers, volumes, mounts, securityContext)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tomllib
from copy import deepcopy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.utils import parse_quantity
from packaging.requirements import Requirement

from resources.local_ray import WORKER_ENV
from resources.ray_zones import (
    DEFAULT_ZONE_LABEL,
    RAY_GROUP_LABEL,
    RAY_ZONE_LABEL,
    foreign_nodes,
    local_root_problems,
    pod_zones,
    ray_node_zones,
    raycluster_worker_zones,
    worker_zone_problems,
)
from tests.helpers import _origin_checkout
from tests.podsecurity import assert_hardened

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
OVERLAYS = ["dev", "prod"]
CRD_FILE = "ray.io_rayclusters.yaml"  # the KubeRay CRD of kind RayCluster
K8S_VERSIONS = sorted({"1.30", "1.33", ".".join(kubernetes_validate.latest_version().split(".")[:2])})
RAY_VERSION = "2.60.0"
OTHER_ZONE = "use1-az6"


# ---------------------------------------------------------------- rendering


@functools.cache
def _kustomize(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(_kustomize(overlay)) if doc]


def raycluster(objs: list[dict]) -> dict:
    (rc,) = [o for o in objs if o["kind"] == "RayCluster"]
    return rc


def env_data(objs: list[dict]) -> dict[str, str]:
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "curation-env"]
    return cm["data"]


def namespace_of(objs: list[dict]) -> str:
    (ns,) = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    return ns


def code_server_image(objs: list[dict]) -> str:
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "curation-code"]
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "dagster"]
    return c["image"]


def head_template(rc: dict) -> dict:
    return rc["spec"]["headGroupSpec"]["template"]


def worker_groups(rc: dict) -> list[dict]:
    return rc["spec"]["workerGroupSpecs"]


def ray_container(template: dict) -> dict:
    """KubeRay runs Ray in the template's first container (utils.RayContainerIndex)."""
    return template["spec"]["containers"][0]


# ---------------------------------------------------------------- the CRD's schema, strict


def _strict(node):
    """The schema with unknown fields rejected: every object schema that lists `properties` (or is a bare
    `type: object`, whose content a structural schema prunes) and says nothing about others gets
    `additionalProperties: false`, except where `x-kubernetes-preserve-unknown-fields` keeps unknown fields;
    `nullable` becomes a null type. Recurses through every subschema position only."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_strict(s) for s in out[key]]
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# The root `metadata` of a custom resource is ObjectMeta, which the API server validates itself (the CRD says only
# `type: object`); these are the fields a manifest in git may set.
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


@functools.cache
def crd_schema(version: str = "v1") -> dict:
    # ../shared/crds/kuberay/ next to the checkout, or next to the checkout CI cloned it from.
    candidates = [root.parent / "shared" / "crds" / "kuberay" / CRD_FILE for root in [REPO, *_origin_checkout()]]
    path = next((p for p in candidates if p.is_file()), None)
    assert path is not None, f"KubeRay CRD not found at any of {[str(p) for p in candidates]}"
    (crd,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert crd["spec"]["names"]["kind"] == "RayCluster"
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert v["served"] and v["storage"]
    return v["schema"]["openAPIV3Schema"]


@functools.cache
def strict_validator() -> jsonschema.protocols.Validator:
    schema = deepcopy(crd_schema())
    schema["properties"]["metadata"] = OBJECT_META
    schema = _strict(schema)
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def schema_errors(obj: dict, validator: jsonschema.protocols.Validator | None = None) -> list[str]:
    validator = validator or strict_validator()
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj))


def kuberay_validation_errors(rc: dict) -> list[str]:
    """The checks the KubeRay operator itself makes before it builds pods (utils/validation.go,
    ValidateRayClusterMetadata and ValidateRayClusterSpec) that apply to this manifest."""
    errors = []
    name = rc["metadata"]["name"]
    if len(name) > 63 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"name {name!r} is not a DNS-1035 label")
    spec = rc["spec"]
    groups = [("Head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    for group, g in groups:
        if not g["template"]["spec"].get("containers"):
            errors.append(f"{group}: no container")
        if "labels" in g.get("rayStartParams", {}):
            errors.append(f"{group}: rayStartParams['labels'] is not supported; use the group's `labels`")
        for key, value in g.get("labels", {}).items():
            if not re.fullmatch(
                r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?",
                key,
            ):
                errors.append(f"{group}: label key {key!r}")
            if not re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?", value):
                errors.append(f"{group}: label value {value!r}")
    for g in spec["workerGroupSpecs"]:
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1)
        if not spec.get("enableInTreeAutoscaling") and ("minReplicas" not in g or "maxReplicas" not in g):
            errors.append(f"{g['groupName']}: minReplicas and maxReplicas are required without autoscaling")
        if lo < 0 or lo > hi:
            errors.append(f"{g['groupName']}: minReplicas {lo} > maxReplicas {hi}")
    return errors


# ---------------------------------------------------------------- the pods KubeRay builds, and "restricted"


def _add_empty_dir(pod: dict, container: dict, name: str, path: str, medium: str | None = None) -> None:
    """pod.go addEmptyDir: mount an emptyDir at `path` unless the container already mounts something there."""
    if any(m["mountPath"] == path for m in container.get("volumeMounts", [])):
        return
    if not any(v["name"] == name for v in pod.setdefault("volumes", [])):
        pod["volumes"].append({"name": name, "emptyDir": {"medium": medium} if medium else {}})
    container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})


def kuberay_pods(rc: dict) -> dict[str, dict]:
    """{"head" | <worker group>: the pod spec KubeRay 1.7 creates from the template}: the head gets the autoscaler
    sidecar built from autoscalerOptions (BuildAutoscalerContainer + mergeAutoscalerOverrides) and a shared
    /tmp/ray; every Ray container gets /dev/shm; each worker gets the `wait-gcs-ready` init container, a copy of the
    Ray container's image, securityContext, env and volumeMounts (DefaultWorkerPodTemplate)."""
    spec = rc["spec"]
    pods = {}
    head = deepcopy(head_template(rc)["spec"])
    _add_empty_dir(head, head["containers"][0], "shared-mem", "/dev/shm", "Memory")
    if spec.get("enableInTreeAutoscaling"):
        options = spec.get("autoscalerOptions", {})
        autoscaler = {
            "name": "autoscaler",
            "image": options.get("image", head["containers"][0]["image"]),
            "imagePullPolicy": options.get("imagePullPolicy", "IfNotPresent"),
            "env": [
                {
                    "name": "RAY_CLUSTER_NAME",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}},
                },
                {"name": "RAY_CLUSTER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "RAY_HEAD_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "KUBERAY_CRD_VER", "value": "v1"},
                *options.get("env", []),
            ],
            "envFrom": options.get("envFrom", []),
            "resources": options.get(
                "resources",
                {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "500m", "memory": "512Mi"}},
            ),
            "volumeMounts": list(options.get("volumeMounts", [])),
        }
        if "securityContext" in options:
            autoscaler["securityContext"] = options["securityContext"]
        head["containers"].append(autoscaler)
        _add_empty_dir(head, head["containers"][0], "ray-logs", "/tmp/ray")
        _add_empty_dir(head, autoscaler, "ray-logs", "/tmp/ray")
        # No serviceAccountName: KubeRay uses (and creates) the ServiceAccount named after the cluster.
        head.setdefault("serviceAccountName", rc["metadata"]["name"])
    pods["head"] = head
    for group in worker_groups(rc):
        pod = deepcopy(group["template"]["spec"])
        ray = pod["containers"][0]
        _add_empty_dir(pod, ray, "shared-mem", "/dev/shm", "Memory")
        init = {
            "name": "wait-gcs-ready",
            "image": ray["image"],
            "securityContext": deepcopy(ray.get("securityContext")),
            "env": deepcopy(ray.get("env", [])),
            "volumeMounts": deepcopy(ray.get("volumeMounts", [])),
        }
        if init["securityContext"] is None:
            del init["securityContext"]
        pod["initContainers"] = [init, *pod.get("initContainers", [])]
        pods[group["groupName"]] = pod
    return pods


def assert_ray_writable(pod: dict, where: str) -> None:
    """With a read-only root filesystem, Ray writes only to emptyDirs: /tmp/ray (session dir, shared by the head and
    the autoscaler) and /dev/shm (the object store, in memory, at most the container's memory limit)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    ray = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in ray["volumeMounts"]}
    for path in ("/tmp/ray", "/dev/shm"):
        assert path in mounts and not mounts[path].get("readOnly"), (where, path)
        assert "emptyDir" in volumes[mounts[path]["name"]], (where, path)
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm.get("medium") == "Memory", (where, shm)
    limit = ray.get("resources", {}).get("limits", {}).get("memory")
    assert limit and parse_quantity(shm["sizeLimit"]) == parse_quantity(limit), (where, shm, limit)
    for c in pod["containers"][1:]:  # the autoscaler reads and writes the head's session dir
        (logs,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp/ray"]
        assert logs["name"] == mounts["/tmp/ray"]["name"], (where, c["name"])


# ---------------------------------------------------------------- rendered: schema


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_one_raycluster_that_the_crd_schema_accepts_with_unknown_fields_rejected(overlay):
    objs = render(overlay)
    assert [o["kind"] for o in objs].count("RayCluster") == 1
    rc = raycluster(objs)
    assert (rc["apiVersion"], rc["metadata"]["name"]) == ("ray.io/v1", "curation-ray")
    assert rc["metadata"]["namespace"] == namespace_of(objs)
    assert schema_errors(rc) == []
    assert kuberay_validation_errors(rc) == []
    # The pod templates are also valid core/v1 objects of every Kubernetes version the project targets (the CRD
    # embeds the PodTemplateSpec schema of the Kubernetes release KubeRay was built against).
    for name, template in [("head", head_template(rc))] + [(g["groupName"], g["template"]) for g in worker_groups(rc)]:
        obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{overlay} RayCluster {name} pod template invalid for k8s {version}: {e.message}")


def test_the_strict_schema_rejects_unknown_fields_the_crd_schema_alone_would_let_through():
    """The CRD's schema never says `additionalProperties: false`, so on its own it accepts typos; the strict
    validator refuses each one, naming the field, and still refuses wrong types and missing required fields."""
    rc = raycluster(render("prod"))
    raw = jsonschema.Draft4Validator(crd_schema())
    assert schema_errors(rc) == [] == schema_errors(rc, raw)

    def head_container(r):
        return ray_container(head_template(r))

    def worker(r):
        return worker_groups(r)[0]

    unknown_fields = {
        "spec.rayVersoin": lambda r: r["spec"].update(rayVersoin="2.60.0"),
        "headGroupSpec.rayStartParam": lambda r: r["spec"]["headGroupSpec"].update(rayStartParam={"a": "b"}),
        "container.securityContex": lambda r: head_container(r).update(securityContex={"runAsNonRoot": True}),
        "autoscalerOptions.securityContext.runAsUserr": lambda r: r["spec"]["autoscalerOptions"][
            "securityContext"
        ].update(runAsUserr=10001),
        "worker.template.spec.nodeSelectr": lambda r: worker(r)["template"]["spec"].update(nodeSelectr={"a": "b"}),
        "worker.maxReplica": lambda r: worker(r).update(maxReplica=3),
        "volume.emptyDir.sizelimit": lambda r: worker(r)["template"]["spec"]["volumes"][0]["emptyDir"].update(
            sizelimit="1Gi"
        ),
        "metadata.label": lambda r: r["metadata"].update(label={"a": "b"}),
    }
    for what, mutate in unknown_fields.items():
        bad = deepcopy(rc)
        mutate(bad)
        errors = schema_errors(bad)
        assert len(errors) == 1 and "Additional properties are not allowed" in errors[0], (what, errors)
        assert what.rsplit(".", 1)[-1] in errors[0], (what, errors)
        if not what.startswith("metadata"):
            assert schema_errors(bad, raw) == [], f"the CRD schema alone refuses {what}: the case proves nothing"

    wrong = {
        "enableInTreeAutoscaling as a string": lambda r: r["spec"].update(enableInTreeAutoscaling="true"),
        "maxReplicas as a string": lambda r: worker(r).update(maxReplicas="16"),
        "a worker group without groupName": lambda r: worker(r).pop("groupName"),
        "a container without name": lambda r: head_container(r).pop("name"),
        "an unknown upscalingMode": lambda r: r["spec"]["autoscalerOptions"].update(upscalingMode="Fast"),
    }
    for what, mutate in wrong.items():
        bad = deepcopy(rc)
        mutate(bad)
        assert schema_errors(bad) and schema_errors(bad, raw), what


# ---------------------------------------------------------------- rendered: pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_head_autoscaler_and_worker_pods_pass_pod_security_restricted(overlay):
    objs = render(overlay)
    rc = raycluster(objs)
    pods = kuberay_pods(rc)
    assert set(pods) == {"head", "workers"}
    for name, pod in pods.items():
        assert_hardened(pod, f"{overlay} ray {name}")
        assert_ray_writable(pod, f"{overlay} ray {name}")
    head, workers = pods["head"], pods["workers"]
    assert [c["name"] for c in head["containers"]] == ["ray-head", "autoscaler"]
    assert [c["name"] for c in workers["initContainers"]] == ["wait-gcs-ready"]
    # Same image as the code server (and so as the run and step pods, the drivers): one Ray version everywhere.
    image = code_server_image(objs)
    assert image != "curation"
    for pod in pods.values():
        assert {c["image"] for c in pod["containers"] + pod.get("initContainers", [])} == {image}
    # The head runs no task, so it needs neither data nor S3; its ServiceAccount is the one KubeRay creates for the
    # autoscaler. The workers read and write the data root like step pods, and never call the Kubernetes API.
    assert head_template(rc)["spec"].get("serviceAccountName") is None
    assert rc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert "envFrom" not in ray_container(head_template(rc))
    worker_spec = worker_groups(rc)[0]["template"]["spec"]
    assert worker_spec["serviceAccountName"] == "curation-dagster"
    assert worker_spec["automountServiceAccountToken"] is False
    assert {r.get("configMapRef", r.get("secretRef"))["name"] for r in workers["containers"][0]["envFrom"]} == {
        "curation-env",
        "curation-aws",
    }
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"} >= {"curation-dagster"}

    # The checks bite: without the autoscaler's own securityContext, or with a writable root filesystem on the
    # workers (which the init container copies), the pods are not restricted.
    for mutate, pod_name in [
        (lambda r: r["spec"]["autoscalerOptions"].pop("securityContext"), "head"),
        (lambda r: r["spec"]["autoscalerOptions"]["env"].clear(), "head"),
        (
            lambda r: ray_container(worker_groups(r)[0]["template"])["securityContext"].update(
                readOnlyRootFilesystem=False
            ),
            "workers",
        ),
        (lambda r: head_template(r)["spec"]["securityContext"].pop("runAsNonRoot"), "head"),
    ]:
        bad = deepcopy(rc)
        mutate(bad)
        with pytest.raises(AssertionError):
            assert_hardened(kuberay_pods(bad)[pod_name], "tampered")


def _resources(container: dict) -> dict:
    res = container.get("resources", {})
    assert {"cpu", "memory"} <= res.get("requests", {}).keys() and {"cpu", "memory"} <= res.get("limits", {}).keys()
    for key, limit in res["limits"].items():
        assert parse_quantity(res["requests"][key]) <= parse_quantity(limit), res
    return res


def test_sizes_and_replicas_come_from_the_overlays_and_prod_is_bigger():
    """Base has no sizes: each overlay's raycluster.yaml sets cpu/memory requests and limits of head and workers
    (Ray takes num-cpus and memory from the limits), the /dev/shm limit and the worker group's replica bounds."""
    base = yaml.safe_load((DEPLOY / "base" / "raycluster.yaml").read_text())
    assert "resources" not in ray_container(head_template(base))
    assert "resources" not in ray_container(worker_groups(base)[0]["template"])
    assert not {"replicas", "minReplicas", "maxReplicas"} & worker_groups(base)[0].keys()

    sizes = {}
    for overlay in OVERLAYS:
        rc = raycluster(render(overlay))
        assert rc["spec"]["rayVersion"] == RAY_VERSION
        assert rc["spec"]["enableInTreeAutoscaling"] is True
        (group,) = worker_groups(rc)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1
        sizes[overlay] = {
            "head": _resources(ray_container(head_template(rc))),
            "workers": _resources(ray_container(group["template"])),
            "max": group["maxReplicas"],
        }
    for part in ("head", "workers"):
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                dev, prod = (parse_quantity(sizes[o][part][kind][resource]) for o in OVERLAYS)
                assert prod > dev, (part, kind, resource)
    assert sizes["prod"]["max"] > sizes["dev"]["max"]


def test_ray_version_is_the_one_the_image_installs():
    """rayVersion must be the Ray of the image (drivers and cluster run the same Ray); once pyproject.toml or
    deploy/requirements.lock pins ray, it is that pin."""
    pins = []
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("dependencies", [])
    for dep in deps:
        req = Requirement(dep)
        if req.name == "ray":
            pins.append(str(req.specifier))
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if re.match(r"ray(\[[^\]]*\])?==", line.strip()):
            pins.append("==" + line.split("==", 1)[1].split()[0].strip())
    for pin in pins:
        assert pin == f"=={RAY_VERSION}", pins
    base = yaml.safe_load((DEPLOY / "base" / "raycluster.yaml").read_text())
    assert base["spec"]["rayVersion"] == RAY_VERSION


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_runner_pool_is_as_large_as_the_worker_group_can_grow(overlay):
    """CURATION_WORKERS sizes the runner pool (resources/engine.py `TaskRunner`, one CPU each): maxReplicas x the
    workers' cpu limit, so the pool's pending runners are what the autoscaler scales the group up for, and no runner
    waits for a CPU the group can never have."""
    objs = render(overlay)
    (group,) = worker_groups(raycluster(objs))
    cpus = parse_quantity(_resources(ray_container(group["template"]))["limits"]["cpu"])
    assert int(env_data(objs)["CURATION_WORKERS"]) == group["maxReplicas"] * cpus


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_curation_ray_address_is_the_head_services_gcs_port_in_the_overlays_namespace(overlay):
    objs = render(overlay)
    rc = raycluster(objs)
    address = env_data(objs)["CURATION_RAY_ADDRESS"]
    ns = namespace_of(objs)
    # KubeRay names the head Service <cluster>-head-svc (utils.GenerateHeadServiceName) unless headService renames it.
    assert "headService" not in rc["spec"]["headGroupSpec"]
    (gcs,) = [p for p in ray_container(head_template(rc))["ports"] if p["name"] == "gcs-server"]
    assert address == f"{rc['metadata']['name']}-head-svc.{ns}.svc.cluster.local:{gcs['containerPort']}"
    assert gcs["containerPort"] == int(rc["spec"]["headGroupSpec"]["rayStartParams"].get("port", 6379))


def test_dev_and_prod_rayclusters_differ_only_in_sizes_zone_and_image():
    def normalised(rc: dict) -> dict:
        rc = deepcopy(rc)
        rc["metadata"].pop("namespace")
        for group in [rc["spec"]["headGroupSpec"], *worker_groups(rc)]:
            group.pop("labels", None)
            for key in ("replicas", "minReplicas", "maxReplicas"):
                group.pop(key, None)
            spec = group["template"]["spec"]
            spec.pop("affinity", None)
            spec.pop("nodeSelector", None)
            for c in spec["containers"]:
                c.pop("resources", None)
                c["image"] = c["image"].split("@")[0].rsplit("/", 1)[-1].split(":")[0]
            for v in spec["volumes"]:
                if v["emptyDir"].get("medium") == "Memory":
                    v["emptyDir"].pop("sizeLimit", None)
        return rc

    dev, prod = (raycluster(render(o)) for o in OVERLAYS)
    assert normalised(dev) == normalised(prod)
    assert dev != prod


# ---------------------------------------------------------------- rendered: zones


def test_prod_pins_ray_to_the_data_zone_and_labels_each_ray_node_with_it():
    objs = render("prod")
    env = env_data(objs)
    rc = raycluster(objs)
    zone = env["CURATION_POD_ZONE"]
    assert zone == env["CURATION_DATA_ZONE"]
    # Exactly like the step pods: a required nodeAffinity on the zone-id label, head and every worker group.
    assert raycluster_worker_zones(rc) == {"workers": zone}
    assert pod_zones(head_template(rc)["spec"]) == {zone}
    # The Ray node label equals the pin on every group, so a driver reads the truth from ray.nodes().
    for group in [rc["spec"]["headGroupSpec"], *worker_groups(rc)]:
        assert group["labels"] == {RAY_ZONE_LABEL: zone}
        assert "labels" not in group.get("rayStartParams", {})
    assert worker_zone_problems(raycluster_worker_zones(rc), env["CURATION_DATA_ZONE"]) == []

    # A copy whose workers run in another zone, or anywhere, is refused, naming the group and both zones.
    moved = deepcopy(rc)
    terms = worker_groups(moved)[0]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    terms[0]["matchExpressions"][0]["values"] = [OTHER_ZONE]
    (problem,) = worker_zone_problems(raycluster_worker_zones(moved), zone)
    assert "'workers'" in problem and OTHER_ZONE in problem and zone in problem and "across AZs" in problem

    unpinned = deepcopy(rc)
    del worker_groups(unpinned)[0]["template"]["spec"]["affinity"]
    assert raycluster_worker_zones(unpinned) == {"workers": None}
    (problem,) = worker_zone_problems(raycluster_worker_zones(unpinned), zone)
    assert "'workers'" in problem and "not pinned" in problem and zone in problem

    # A second group, pinned by nodeSelector instead, in the data zone: allowed; in another zone: refused alone.
    extra = deepcopy(worker_groups(rc)[0])
    extra["groupName"] = "big"
    del extra["template"]["spec"]["affinity"]
    extra["template"]["spec"]["nodeSelector"] = {DEFAULT_ZONE_LABEL: zone}
    two = deepcopy(rc)
    worker_groups(two).append(extra)
    assert schema_errors(two) == []
    assert worker_zone_problems(raycluster_worker_zones(two), zone) == []
    extra["template"]["spec"]["nodeSelector"] = {DEFAULT_ZONE_LABEL: OTHER_ZONE}
    (problem,) = worker_zone_problems(raycluster_worker_zones(two), zone)
    assert "'big'" in problem and OTHER_ZONE in problem and zone in problem


def test_dev_ray_is_unpinned_which_only_a_regional_data_root_allows():
    objs = render("dev")
    env = env_data(objs)
    rc = raycluster(objs)
    assert "CURATION_POD_ZONE" not in env and "CURATION_DATA_ZONE" not in env
    assert raycluster_worker_zones(rc) == {"workers": None}
    assert all("labels" not in g for g in [rc["spec"]["headGroupSpec"], *worker_groups(rc)])
    assert worker_zone_problems(raycluster_worker_zones(rc), None) == []
    # Pointed at a directory bucket, dev's workers could be in any AZ: refused.
    assert worker_zone_problems(raycluster_worker_zones(rc), "use1-az4")


# ---------------------------------------------------------------- resources/ray_zones.py (no kubectl)


def test_worker_zone_problems_is_the_cost_guards_zone_rule():
    assert worker_zone_problems({"workers": "use1-az4", "big": None}, None) == []
    assert worker_zone_problems({"workers": "use1-az4", "big": None}, "") == []
    assert worker_zone_problems({}, "use1-az4") == []
    assert worker_zone_problems({"workers": "use1-az4"}, "use1-az4") == []
    problems = worker_zone_problems({"workers": "use1-az4", "b": OTHER_ZONE, "a": None}, "use1-az4")
    assert problems == [
        (
            "Ray worker group 'a' is not pinned to a zone (it may run in any AZ) but the data root is in zone "
            "use1-az4: its tasks would move the step's data across AZs"
        ),
        (
            f"Ray worker group 'b' runs in zone {OTHER_ZONE} but the data root is in zone use1-az4: "
            "its tasks would move the step's data across AZs"
        ),
    ]


def test_ray_node_zones_reads_the_zone_label_of_the_nodes_that_run_tasks():
    def node(node_id, group, zone=None, cpu=4.0, alive=True):
        labels = {"ray.io/node-id": node_id, RAY_GROUP_LABEL: group}
        if zone:
            labels[RAY_ZONE_LABEL] = zone
        return {"NodeID": node_id, "Alive": alive, "Labels": labels, "Resources": {"CPU": cpu} if cpu else {}}

    nodes = [
        node("h" * 56, "headgroup", "use1-az4", cpu=0),  # the head runs no task
        node("a" * 56, "workers", "use1-az4"),
        node("b" * 56, "workers", "use1-az4"),
        node("c" * 56, "big", OTHER_ZONE, alive=False),  # gone
    ]
    assert ray_node_zones(nodes) == {"workers": "use1-az4"}
    assert worker_zone_problems(ray_node_zones(nodes), "use1-az4") == []
    # A node without the label, or a group split over zones, is reported (per node when split).
    nodes += [node("d" * 56, "spot"), node("e" * 56, "mixed", "use1-az4"), node("f" * 56, "mixed", OTHER_ZONE)]
    zones = ray_node_zones(nodes)
    assert zones == {
        "workers": "use1-az4",
        "spot": None,
        f"mixed[{'e' * 12}]": "use1-az4",
        f"mixed[{'f' * 12}]": OTHER_ZONE,
    }
    problems = worker_zone_problems(zones, "use1-az4")
    assert len(problems) == 2 and "'spot'" in problems[1] and f"mixed[{'f' * 12}]" in problems[0]
    # The embedded local cluster: one unlabelled node, no data zone: nothing to refuse.
    local = [{"NodeID": "1" * 56, "Alive": True, "Labels": {"ray.io/node-id": "1" * 56}, "Resources": {"CPU": 2.0}}]
    assert ray_node_zones(local) == {f"node {'1' * 12}": None}
    assert worker_zone_problems(ray_node_zones(local), None) == []


def test_a_local_data_root_refuses_a_ray_node_on_another_machine_that_does_not_see_it():
    """Tasks write their parts under the data root of the node they run on: a local directory must be on every node."""

    def node(host, cpu=2.0, alive=True):
        return {
            "NodeManagerHostname": host,
            "NodeManagerAddress": f"10.0.0.{len(host)}",
            "Alive": alive,
            "Resources": {"CPU": cpu} if cpu else {},
        }

    here = [node("laptop"), node("laptop")]
    assert foreign_nodes(here, "laptop") == []  # never probed
    away = [*here, node("ray-worker-1"), node("ray-head", cpu=0), node("ray-worker-2", alive=False)]
    assert foreign_nodes(away, "laptop") == [away[2]]  # the head runs no task, a dead node none
    (problem,) = local_root_problems([away[2]], "/data/curation")
    assert "'ray-worker-1'" in problem and "/data/curation" in problem and "s3://" in problem
    assert local_root_problems([], "/data/curation") == []  # every node saw the probe's file: a shared mount


def test_raycluster_worker_zones_reads_nodeselector_and_required_affinity():
    def group(name, **spec):
        return {"groupName": name, "template": {"spec": {"containers": [{"name": "c"}], **spec}}}

    def affinity(*terms):
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": DEFAULT_ZONE_LABEL, "operator": "In", "values": list(t)}]}
                        if t is not None
                        else {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["x"]}]}
                        for t in terms
                    ]
                }
            }
        }

    rc = {
        "kind": "RayCluster",
        "spec": {
            "workerGroupSpecs": [
                group("selector", nodeSelector={DEFAULT_ZONE_LABEL: "use1-az4"}),
                group("affinity", affinity=affinity(["use1-az4"])),
                group("both", nodeSelector={DEFAULT_ZONE_LABEL: "use1-az4"}, affinity=affinity(["use1-az4", "b"])),
                group("two-zones", affinity=affinity(["use1-az4", OTHER_ZONE])),
                group("or-any", affinity=affinity(["use1-az4"], None)),  # a term without the label allows any zone
                group("other-label", nodeSelector={"topology.kubernetes.io/zone": "us-east-1a"}),
                group("none"),
            ]
        },
    }
    assert raycluster_worker_zones(rc) == {
        "selector": "use1-az4",
        "affinity": "use1-az4",
        "both": "use1-az4",
        "two-zones": None,
        "or-any": None,
        "other-label": None,
        "none": None,
    }
    assert raycluster_worker_zones(rc, zone_label="topology.kubernetes.io/zone")["other-label"] == "us-east-1a"
    conflicting = {
        "kind": "RayCluster",
        "spec": {
            "workerGroupSpecs": [
                group("x", nodeSelector={DEFAULT_ZONE_LABEL: OTHER_ZONE}, affinity=affinity(["use1-az4"]))
            ]
        },
    }
    with pytest.raises(ValueError, match="'x'.*allow no zone"):
        raycluster_worker_zones(conflicting)
    with pytest.raises(ValueError, match="not a RayCluster"):
        raycluster_worker_zones({"kind": "Deployment"})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_workers_run_tasks_with_the_embedded_clusters_worker_environment(overlay):
    """One polars thread per task and freed memory returned at once on the head and every worker, as on a laptop
    (resources/local_ray.py WORKER_ENV): the same task uses the same cores and reports the same peak RSS in both."""
    rc = raycluster(render(overlay))
    for template in [head_template(rc)] + [g["template"] for g in worker_groups(rc)]:
        env = {e["name"]: e.get("value") for e in ray_container(template)["env"]}
        assert {k: env.get(k) for k in WORKER_ENV} == WORKER_ENV
