"""deploy/: the kustomize overlays render and pass strict schema validation, their cross-references hold, dev and
prod differ only where they are meant to, every pod (the Deployments' and the run and step Jobs dagster-k8s creates)
is hardened and pinned, RBAC is exactly what dagster-k8s calls, and dagster.yaml loads as a real instance.

Run and step Jobs are produced by dagster-k8s itself: the K8sRunLauncher built from deploy/dagster.yaml, and the
K8sStepHandler of each job's own executor (`curation_assets.defs.build_definitions` with the overlay's
curation-env as the environment), with the Kubernetes API replaced by a mock that records what is submitted."""

import base64
import contextlib
import functools
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
import uuid
import zlib
from copy import deepcopy
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import StepHandlerContext
from dagster._core.launcher import LaunchRunContext, ResumeRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s import K8sRunLauncher, construct_dagster_k8s_job, k8s_job_executor
from dagster_k8s.client import DagsterKubernetesClient
from dagster_k8s.executor import K8sStepHandler
from dagster_k8s.job import DagsterK8sJobConfig, get_user_defined_k8s_config
from kubernetes.utils import parse_quantity
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from curation_assets.config import load_config
from curation_assets.config.settings import Settings
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import ASSETS
from tests.podsecurity import UID, assert_hardened

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
OVERLAYS = ["dev", "prod"]
# 1.30: the oldest minor whose EKS nodes carry the zone-id label; 1.33: EKS standard support; the newest schemas
# bundled with kubernetes-validate.
K8S_VERSIONS = sorted({"1.30", "1.33", ".".join(kubernetes_validate.latest_version().split(".")[:2])})
DAGSTER_HOME = "/opt/dagster/dagster_home"
ZONE_LABEL = "topology.k8s.aws/zone-id"  # AZ ID label of EKS >= 1.30 nodes
ZONE_LABELS = (ZONE_LABEL, "topology.kubernetes.io/zone")
# What deploy/README.md tells the operator to put in Secret curation-postgres.
POSTGRES_SECRET_KEYS = {"DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
# The op_tags example of deploy/README.md (same shape as curation_assets.steps.common.pod()).
STEP_K8S_CONFIG = {
    "container_config": {"resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}}
}
# The run launcher's default container resources (dagster.yaml): what a step without op tags gets.
ASSET_NAMES = ASSETS
LAUNCHER_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}}


# ---------------------------------------------------------------- rendering and small accessors


@functools.cache
def _kustomize(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    proc = subprocess.run([kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(_kustomize(overlay)) if doc]


def base_name(obj: dict) -> str:
    """The name without a configMapGenerator hash suffix."""
    name = obj["metadata"]["name"]
    return re.sub(r"-[a-z0-9]{10}$", "", name) if obj["kind"] == "ConfigMap" else name


def get(objs: list[dict], kind: str, name: str) -> dict:
    """The rendered object; generated ConfigMaps may carry a `-<hash>` suffix."""
    found = [o for o in objs if o["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", o["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{name}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def env_data(objs: list[dict]) -> dict[str, str]:
    return get(objs, "ConfigMap", "curation-env")["data"]


def container(deployment: dict) -> dict:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "dagster"]
    return c


def env_value(c: dict, name: str) -> str:
    (value,) = [e["value"] for e in c.get("env", []) if e["name"] == name]
    return value


def deployments(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] == "Deployment"]


def allowed_zones(pod_spec: dict) -> dict[str, set[str]]:
    """Per zone label, the zones the scheduler may put the pod in: nodeSelector AND the required nodeAffinity
    (whose terms are ORed; a term without that label allows any zone). Labels that are not constrained are absent.
    """
    out: dict[str, set[str]] = {}
    for label in ZONE_LABELS:
        constraints = []
        if label in pod_spec.get("nodeSelector", {}):
            constraints.append({pod_spec["nodeSelector"][label]})
        terms = (
            pod_spec.get("affinity", {})
            .get("nodeAffinity", {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", {})
            .get("nodeSelectorTerms", [])
        )
        per_term = []
        for term in terms:
            exprs = [e for e in term.get("matchExpressions", []) if e["key"] == label]
            assert all(e["operator"] == "In" for e in exprs), f"unexpected operator on {label}: {exprs}"
            per_term.append(set.intersection(*(set(e["values"]) for e in exprs)) if exprs else None)
        if per_term and None not in per_term:
            constraints.append(set().union(*per_term))
        if constraints:
            out[label] = set.intersection(*constraints)
    return out


def env_refs(node) -> set[str]:
    """Every `{env: NAME}` in a parsed dagster.yaml."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node))
    return set()


def manifest(k8s_object) -> dict:
    """camelCase dict of a kubernetes client model (`.to_dict()` would give snake_case)."""
    return kubernetes.client.ApiClient().sanitize_for_serialization(k8s_object)


def assert_valid(obj: dict) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for k8s {version}: {e.message}")


# ---------------------------------------------------------------- dagster-k8s, offline


def fake_kubeconfig(path: Path) -> str:
    """A kubeconfig that parses; nothing ever connects to its server."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "offline",
                "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "offline", "user": {"token": "unused"}}],
            }
        )
    )
    return str(path)


def offline_instance_yaml(tmp_path: Path) -> dict:
    """deploy/dagster.yaml with one change: K8sRunLauncher.__init__ loads the kube config eagerly and the
    in-cluster loader fails off-cluster ("Service host/port is not set"), so it gets a dummy kubeconfig.
    The launcher is still constructed from the real config; no API call is made."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=fake_kubeconfig(tmp_path / "kubeconfig")
    )
    return config


@contextlib.contextmanager
def cluster_instance(tmp_path: Path, namespace: str):
    """A test instance whose run launcher is deploy/dagster.yaml's, with the overlay's CURATION_NAMESPACE."""
    with mock.patch.dict(os.environ, {"CURATION_NAMESPACE": namespace}):
        with dg.instance_for_test(overrides={"run_launcher": offline_instance_yaml(tmp_path)["run_launcher"]}) as inst:
            yield inst


def code_origin(objs: list[dict], job_name: str) -> JobPythonOrigin:
    """The origin a run of `job_name` gets from the overlay's code server: `dagster code-server start` reports
    DAGSTER_CURRENT_IMAGE as the image and DAGSTER_CONTAINER_CONTEXT as the container context (dagster/_cli)."""
    env = {e["name"]: e.get("value") for e in container(get(objs, "Deployment", "curation-code"))["env"]}
    context = env.get("DAGSTER_CONTAINER_CONTEXT")
    return JobPythonOrigin(
        job_name,
        RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python",
            code_pointer=ModuleCodePointer("curation_assets.defs", "defs", working_directory=None),
            container_image=env["DAGSTER_CURRENT_IMAGE"],
            container_context=json.loads(context) if context else None,
        ),
    )


def launch_run_job(instance, objs: list[dict], job_name: str) -> tuple[DagsterRun, str, dict]:
    """(run, namespace, Job manifest) that the instance's K8sRunLauncher submits for a new run of `job_name`."""
    run = instance.add_run(
        DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()), job_code_origin=code_origin(objs, job_name))
    )
    with mock.patch.object(instance.run_launcher, "_api_client") as api:
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    (call,) = api.create_namespaced_job_with_retries.call_args_list
    return run, call.kwargs["namespace"], manifest(call.kwargs["body"])


class Steps:
    """The K8sStepHandler of `job_def`'s own executor, created the way Dagster creates it in the run pod (from the
    executor definition and its config, on the instance with deploy/dagster.yaml's launcher), and one
    StepHandlerContext per step of the execution plan, built like StepDelegatingExecutor builds them."""

    def __init__(self, instance, run: DagsterRun, job_def: dg.JobDefinition):
        executor_def = job_def.executor_def
        # As create_executor does: the executor config resolved from the run's config (a configured executor,
        # like the app's, carries its own).
        self.executor_config = ResolvedRunConfig.build(job_def, run.run_config).execution.execution_engine_config
        job = InMemoryJob(job_def)
        self.executor = executor_def.executor_creation_fn(
            InitExecutorContext(
                job=job, executor_def=executor_def, executor_config=self.executor_config, instance=instance
            )
        )
        self.handler: K8sStepHandler = self.executor._step_handler
        assert isinstance(self.handler, K8sStepHandler), job_def.name
        plan = create_execution_plan(job_def)
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(job=job, dagster_run=run, instance=instance, execution_plan=plan),
            log_manager=create_context_free_log_manager(instance, run),
            executor=self.executor,
            output_capture=None,
        )
        self.steps = {step.key: step for step in plan.steps}
        self.contexts = {
            step.key: StepHandlerContext(
                instance=instance,
                plan_context=plan_context,
                steps=[step],
                dagster_run=run,
                execute_step_args=ExecuteStepArgs(
                    job_origin=run.job_code_origin,
                    run_id=run.run_id,
                    step_keys_to_execute=[step.key],
                    instance_ref=instance.get_ref(),
                    retry_mode=self.executor.retries.for_inner_plan(),
                ),
            )
            for step in plan.steps
        }

    def launch(self, step_key: str) -> tuple[str, dict]:
        """(namespace, Job manifest) that K8sStepHandler.launch_step submits for the step."""
        with mock.patch.object(self.handler, "_api_client") as api:
            list(self.handler.launch_step(self.contexts[step_key]))
        (call,) = api.create_namespaced_job_with_retries.call_args_list
        return call.kwargs["namespace"], manifest(call.kwargs["body"])


def tag_only_pod(tags: dict) -> dict:
    """The pod spec that an op's `dagster-k8s/config` tag alone produces (camelCase, as rendered)."""
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="x"),
        args=[],
        job_name="tag-only",
        user_defined_k8s_config=get_user_defined_k8s_config(tags),
    )
    return manifest(job)["spec"]["template"]["spec"]


def assert_pod_of_overlay(objs: list[dict], job: dict, where: str) -> dict:
    """A dagster-created pod is valid and hardened, runs as curation-dagster with the code server's image and the
    overlay's env sources, and mounts no dagster.yaml. Returns the container."""
    assert_valid(job)
    pod = job["spec"]["template"]["spec"]
    assert_hardened(pod, where)
    assert pod["serviceAccountName"] == "curation-dagster"
    if job["metadata"]["labels"]["app.kubernetes.io/component"] == "run_worker":
        assert pod.get("automountServiceAccountToken", True), "run pods create step Jobs through the API"
    (c,) = pod["containers"]
    assert c["image"] == container(get(objs, "Deployment", "curation-code"))["image"]
    assert {r.get("configMapRef", r.get("secretRef"))["name"] for r in c["envFrom"]} == {
        "curation-env",
        "curation-postgres",
        "curation-aws",
    }
    # No dagster.yaml is mounted (instance_config_map is unused): the instance travels in the run pod's args and
    # the step pod's DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS, so the image's read-only DAGSTER_HOME is never read.
    assert {"name": "DAGSTER_HOME", "value": DAGSTER_HOME} in c["env"]
    assert not [m for m in c.get("volumeMounts", []) if m["mountPath"].startswith(DAGSTER_HOME)]
    # Run and step pods load the definitions: the sources and the recipe are mounted where curation-env names them.
    assert_mounts_config(pod, c, env_data(objs), where)
    return c


def assert_mounts_config(pod: dict, c: dict, env: dict[str, str], where: str) -> None:
    """The pod mounts ConfigMap curation-config (read-only) at the directory of CURATION_SOURCES and CURATION_RECIPE."""
    (config_dir,) = {os.path.dirname(env[var]) for var in ("CURATION_SOURCES", "CURATION_RECIPE")}
    (mount,) = [m for m in c.get("volumeMounts", []) if m["mountPath"] == config_dir]
    assert mount.get("readOnly"), where
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "curation-config", where


# ---------------------------------------------------------------- layout


def test_kustomize_tree_is_at_the_documented_paths():
    """`kubectl apply -k deploy/overlays/prod`: base and overlays where issue 6 and deploy/README.md put them,
    deploy/dagster.yaml is the file the base packs into ConfigMap curation-instance, and every deploy/ path that
    the docs and the Dockerfile name exists."""
    assert (DEPLOY / "base" / "kustomization.yaml").is_file()
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text())
        assert (DEPLOY / "overlays" / overlay / kustomization["resources"][0]).resolve() == DEPLOY / "base"
    assert not (DEPLOY / "k8s").exists()
    assert (DEPLOY / "dagster.yaml").resolve() == (DEPLOY / "base" / "dagster.yaml").resolve()
    docs = (DEPLOY / "README.md").read_text() + (DEPLOY / "Dockerfile").read_text()
    named = set(re.findall(r"\bdeploy/[\w./-]*\w", docs))
    assert {"deploy/overlays/prod", "deploy/base"} <= named
    for path in named:
        assert (REPO / path).exists(), path
    # The image context allows exactly what the Dockerfile copies from the repo.
    copied = re.findall(r"^COPY (?!--from)(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for src in copied:
        assert re.search(rf"^!{re.escape(src.removeprefix('./'))}(/\*\*)?$", ignore, re.M), src


# ---------------------------------------------------------------- rendered manifests


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_validation(overlay):
    objs = render(overlay)
    kinds = {(o["kind"], base_name(o)) for o in objs}
    assert kinds == {
        ("Namespace", f"curation{'-dev' if overlay == 'dev' else ''}"),
        ("ServiceAccount", "curation-dagster"),
        ("Role", "curation-dagster"),
        ("RoleBinding", "curation-dagster"),
        ("ConfigMap", "curation-env"),
        ("ConfigMap", "curation-config"),  # sources.yaml + recipe.yaml (tests/test_deploy_ingest.py)
        ("ConfigMap", "curation-instance"),
        ("ConfigMap", "curation-workspace"),
        ("Deployment", "curation-code"),
        ("Service", "curation-code"),
        ("Deployment", "curation-webserver"),
        ("Service", "curation-webserver"),
        ("Deployment", "curation-daemon"),
        ("RayCluster", "curation-ray"),  # the KubeRay CRD: validated against its schema in tests/test_raycluster.py
    }
    for obj in objs:
        if obj["kind"] != "RayCluster":
            assert_valid(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_code_server_runs_dagster_code_server_on_port_4000(overlay):
    objs = render(overlay)
    c = container(get(objs, "Deployment", "curation-code"))
    args = c["args"]
    assert args[:3] == ["dagster", "code-server", "start"]
    assert args[args.index("-p") + 1] == "4000" and args[args.index("-h") + 1] == "0.0.0.0"
    assert args[args.index("-m") + 1] == "curation_assets.defs"
    assert {"name": "grpc", "containerPort": 4000} in c["ports"]
    assert c["readinessProbe"]["exec"]["command"] == ["dagster", "api", "grpc-health-check", "-p", "4000"]
    # The image's own CMD is the same command, so `docker run <image>` behaves like the pod.
    cmd = re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert json.loads(cmd.group(1)) == args
    # Runs and steps of this location use the image the code server reports: the deployed one.
    assert env_value(c, "DAGSTER_CURRENT_IMAGE") == c["image"] != "curation"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workspace_points_at_the_code_server_service(overlay):
    objs = render(overlay)
    workspace_cm = get(objs, "ConfigMap", "curation-workspace")
    (entry,) = yaml.safe_load(workspace_cm["data"]["workspace.yaml"])["load_from"]
    grpc = entry["grpc_server"]
    service = get(objs, "Service", grpc["host"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == grpc["port"]]
    code = get(objs, "Deployment", "curation-code")
    pod_labels = code["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (target,) = [p for p in container(code)["ports"] if p["name"] == port["targetPort"]]
    assert target["containerPort"] == grpc["port"] == 4000
    # webserver and daemon read exactly this ConfigMap at the path they pass to -w.
    for name in ("curation-webserver", "curation-daemon"):
        dep = get(objs, "Deployment", name)
        args = container(dep)["args"]
        ws_dir = os.path.dirname(args[args.index("-w") + 1])
        (mount,) = [m for m in container(dep)["volumeMounts"] if m["mountPath"] == ws_dir]
        (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
        assert vol["configMap"]["name"] == workspace_cm["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_instance_config_map_is_dagster_yaml_and_its_references_resolve(overlay):
    objs = render(overlay)
    text = get(objs, "ConfigMap", "curation-instance")["data"]["dagster.yaml"]
    assert text == (DEPLOY / "dagster.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert config["telemetry"] == {"enabled": False}
    # Names inside dagster.yaml are not rewritten by kustomize, so they must exist verbatim.
    lc = launcher["config"]
    get(objs, "ConfigMap", lc["instance_config_map"])
    assert lc["instance_config_map"] == "curation-instance"
    get(objs, "ServiceAccount", lc["service_account_name"])
    for name in lc["env_config_maps"]:
        assert get(objs, "ConfigMap", name)["metadata"]["name"] == name
    assert set(lc["env_secrets"]) == {"curation-postgres", "curation-aws"}
    # Every env var dagster.yaml reads is supplied: by curation-env, or by Secret curation-postgres.
    env_cm = env_data(objs)
    assert env_refs(config) <= set(env_cm) | POSTGRES_SECRET_KEYS
    # Every Deployment loads that instance: DAGSTER_HOME is the mounted ConfigMap, env from both sources.
    for dep in deployments(objs):
        c = container(dep)
        assert env_value(c, "DAGSTER_HOME") == DAGSTER_HOME == lc["dagster_home"]
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == DAGSTER_HOME]
        (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
        assert vol["configMap"]["name"] == "curation-instance"
        sources = {(k, v["name"]) for ref in c["envFrom"] for k, v in ref.items()}
        assert sources == {
            ("configMapRef", "curation-env"),
            ("secretRef", "curation-postgres"),
            ("secretRef", "curation-aws"),
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_identity_and_security_are_consistent(overlay):
    objs = render(overlay)
    namespace = get(objs, "Namespace", "curation(-dev)?")
    ns = namespace["metadata"]["name"]
    # Pod Security Admission refuses any pod of the namespace that is not "restricted", dagster-created ones too.
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert {o["metadata"].get("namespace", ns) for o in objs if o["kind"] != "Namespace"} == {ns}
    env = env_data(objs)
    # Step Jobs (app) and run Jobs (dagster.yaml job_namespace) go to CURATION_NAMESPACE: this namespace.
    assert env["CURATION_NAMESPACE"] == ns
    assert env["CURATION_ENV"] == "k8s"
    binding = get(objs, "RoleBinding", "curation-dagster")
    (subject,) = binding["subjects"]
    assert (subject["kind"], subject["name"], subject["namespace"]) == ("ServiceAccount", "curation-dagster", ns)
    assert binding["roleRef"]["name"] == get(objs, "Role", "curation-dagster")["metadata"]["name"]
    for dep in deployments(objs):
        spec = dep["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "curation-dagster"
        assert_hardened(spec, dep["metadata"]["name"])
        res = container(dep)["resources"]
        assert {"cpu", "memory"} <= res["requests"].keys() and {"cpu", "memory"} <= res["limits"].keys()
    # The code server never calls the Kubernetes API, so it gets no token; the daemon and webserver do.
    assert get(objs, "Deployment", "curation-code")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # No secret values in manifests: Secrets are created by the operator, and no env value looks like a credential.
    assert not [o for o in objs if o["kind"] == "Secret"]
    for dep in deployments(objs):
        for e in container(dep).get("env", []):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", e["name"]), e
    assert not set(env) & (POSTGRES_SECRET_KEYS | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})


def test_prod_pods_are_pinned_to_the_bucket_zone():
    objs = render("prod")
    env = env_data(objs)
    zone = env["CURATION_POD_ZONE"]
    assert re.fullmatch(r"[a-z]{3,4}\d-az\d+", zone), "an AZ ID, as the zone-id node label carries"
    # The data bucket is the S3 Express directory bucket of that same AZ.
    bucket_zone = re.match(r"s3://[a-z0-9-]+?--(?P<zone>[a-z0-9]+-az\d+)--x-s3/", env["CURATION_DATA_ROOT"])
    assert bucket_zone and bucket_zone["zone"] == env["CURATION_DATA_ZONE"] == zone
    for dep in deployments(objs):
        assert allowed_zones(dep["spec"]["template"]["spec"]) == {ZONE_LABEL: {zone}}, dep["metadata"]["name"]
    # Run and step pods are created by dagster-k8s; the code location's container context pins them, and that
    # is all it does (anything else in it would be a prod-only difference of the pods dagster creates).
    context = json.loads(env_value(container(get(objs, "Deployment", "curation-code")), "DAGSTER_CONTAINER_CONTEXT"))
    assert context == {
        "k8s": {
            "run_k8s_config": {
                "pod_spec_config": {"affinity": context["k8s"]["run_k8s_config"]["pod_spec_config"]["affinity"]}
            }
        }
    }
    assert allowed_zones(context["k8s"]["run_k8s_config"]["pod_spec_config"]) == {ZONE_LABEL: {zone}}
    sa = get(objs, "ServiceAccount", "curation-dagster")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    # Dev runs in any zone, and prod is sized above dev.
    dev = render("dev")
    assert "DAGSTER_CONTAINER_CONTEXT" not in str(dev)
    for name in ("curation-code", "curation-webserver", "curation-daemon"):
        assert not allowed_zones(get(dev, "Deployment", name)["spec"]["template"]["spec"])
        prod_mem = container(get(objs, "Deployment", name))["resources"]["requests"]["memory"]
        dev_mem = container(get(dev, "Deployment", name))["resources"]["requests"]["memory"]
        assert parse_quantity(prod_mem) > parse_quantity(dev_mem)


# ---------------------------------------------------------------- dev/prod parity


class _Absent:
    def __repr__(self):
        return "<absent>"


ABSENT = _Absent()
POD = ("spec", "template", "spec")
DAGSTER_CONTAINER = (*POD, "containers", "[dagster]")
# curation-env keys whose values are per environment (deploy/README.md, "Configuration").
PER_ENV_KEYS = [
    "CURATION_NAMESPACE",
    "CURATION_DATA_ROOT",
    "CURATION_DATA_REGION",
    "CURATION_DATA_ZONE",
    "CURATION_POD_ZONE",
    "AWS_REGION",
    "DAGSTER_COMPUTE_LOG_BUCKET",
    "DAGSTER_COMPUTE_LOG_PREFIX",
    "PGSSLMODE",
    "CURATION_S3_ENDPOINT",
    "AWS_ENDPOINT_URL_S3",
    "CURATION_WORKERS",  # follows the overlay's RayCluster size (tests/test_raycluster.py)
]


def image_repository(ref: str) -> str:
    """`<registry>/<path>/curation:<tag>` -> `curation`: the image a Deployment runs, without registry and tag."""
    return ref.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def same_image(dev, prod) -> bool:
    return ABSENT not in (dev, prod) and image_repository(dev) == image_repository(prod)


def ray_head_of_its_namespace(dev, prod) -> bool:
    """CURATION_RAY_ADDRESS is the head service of the overlay's own RayCluster: the same but for the namespace."""
    return ABSENT not in (dev, prod) and dev.replace(".curation-dev.", ".curation.") == prod


def only_zone_pinning(dev, prod) -> bool:
    """The code server's container context exists for one reason: zone pinning of run and step pods."""
    for value in (dev, prod):
        if value is not ABSENT:
            pod_spec = json.loads(value)["k8s"]["run_k8s_config"]["pod_spec_config"]
            if set(pod_spec) - {"affinity", "nodeSelector"} or json.loads(value) != {
                "k8s": {"run_k8s_config": {"pod_spec_config": pod_spec}}
            }:
                return False
    return True


# (kind, name, path pattern, check of the two values or None, why). A pattern segment "*" matches one segment,
# a trailing "**" any rest; "[x]" is the list item named x (containers, env, volumes, ports are lists of named
# items, so order does not matter).
ALLOWED_DIFFS = [
    ("*", "*", ("metadata", "namespace"), None, "namespace"),
    ("Namespace", "*", ("metadata", "name"), None, "namespace"),
    ("RoleBinding", "curation-dagster", ("subjects", "*", "namespace"), None, "namespace"),
    ("ServiceAccount", "curation-dagster", ("metadata", "annotations", "eks.amazonaws.com/role-arn"), None, "IRSA"),
    ("Deployment", "*", ("spec", "replicas"), None, "replicas"),
    ("Deployment", "*", (*POD, "affinity", "**"), None, "zone pinning"),
    ("Deployment", "*", (*POD, "nodeSelector", "**"), None, "zone pinning"),
    ("Deployment", "*", (*DAGSTER_CONTAINER, "resources", "**"), None, "resources"),
    ("Deployment", "*", (*DAGSTER_CONTAINER, "image"), same_image, "image registry and tag"),
    (
        "Deployment",
        "curation-code",
        (*DAGSTER_CONTAINER, "env", "[DAGSTER_CURRENT_IMAGE]", "value"),
        same_image,
        "image registry and tag of run and step pods",
    ),
    (
        "Deployment",
        "curation-code",
        (*DAGSTER_CONTAINER, "env", "[DAGSTER_CONTAINER_CONTEXT]", "name"),
        None,
        "zone pinning of run and step pods",
    ),
    (
        "Deployment",
        "curation-code",
        (*DAGSTER_CONTAINER, "env", "[DAGSTER_CONTAINER_CONTEXT]", "value"),
        only_zone_pinning,
        "zone pinning of run and step pods",
    ),
    (
        "Deployment",
        "curation-daemon",
        (*POD, "initContainers", "[migrate]", "image"),
        same_image,
        "image registry and tag",
    ),
    *[("ConfigMap", "curation-env", ("data", key), None, "per-environment value") for key in PER_ENV_KEYS],
    # each environment's source buckets and its data root's landing zone (tests/test_deploy_ingest.py checks both)
    ("ConfigMap", "curation-config", ("data", "sources.yaml"), None, "per-environment sources"),
    ("ConfigMap", "curation-env", ("data", "CURATION_RAY_ADDRESS"), ray_head_of_its_namespace, "namespace"),
    # how dev and prod Ray clusters may differ (sizes, zone, image) is tests/test_raycluster.py's to check
    ("RayCluster", "curation-ray", ("**",), None, "tests/test_raycluster.py"),
]


def _named_list(value) -> bool:
    return all(isinstance(i, dict) and "name" in i for i in value) and len({i["name"] for i in value}) == len(value)


def structural_diff(dev, prod, path: tuple = ()):
    """Yield (path, dev value, prod value) for every leaf that differs; a side that lacks the key is ABSENT.
    Dicts are compared key by key, lists of named items name by name, other lists of equal length index by index."""
    present = [v for v in (dev, prod) if v is not ABSENT]
    if all(isinstance(v, dict) for v in present):
        d, p = (v if v is not ABSENT else {} for v in (dev, prod))
        for key in sorted(set(d) | set(p)):
            yield from structural_diff(d.get(key, ABSENT), p.get(key, ABSENT), (*path, key))
        return
    if all(isinstance(v, list) for v in present):
        if all(_named_list(v) for v in present):
            d, p = ({f"[{i['name']}]": i for i in v} if v is not ABSENT else {} for v in (dev, prod))
            yield from structural_diff(d, p, path)
            return
        if len(present) == 2 and len(dev) == len(prod):
            for i, (a, b) in enumerate(zip(dev, prod)):
                yield from structural_diff(a, b, (*path, f"[{i}]"))
            return
    if dev != prod:
        yield path, dev, prod


def _matches(pattern: tuple, path: tuple) -> bool:
    if pattern and pattern[-1] == "**":
        return len(path) >= len(pattern) - 1 and _matches(pattern[:-1], path[: len(pattern) - 1])
    return len(pattern) == len(path) and all(p in ("*", s) for p, s in zip(pattern, path))


def parity_key(obj: dict) -> tuple[str, str]:
    return (obj["kind"], "<namespace>" if obj["kind"] == "Namespace" else base_name(obj))


def disallowed_diffs(dev_objs: list[dict], prod_objs: list[dict]) -> list[str]:
    dev, prod = ({parity_key(o): o for o in objs} for objs in (dev_objs, prod_objs))
    assert dev.keys() == prod.keys(), dev.keys() ^ prod.keys()
    bad = []
    for (kind, name), dev_obj in sorted(dev.items()):
        for path, a, b in structural_diff(dev_obj, prod[kind, name]):
            rule = next(
                (r for r in ALLOWED_DIFFS if r[0] in ("*", kind) and r[1] in ("*", name) and _matches(r[2], path)), None
            )
            if rule is None or (rule[3] is not None and not rule[3](a, b)):
                bad.append(f"{kind}/{name} {'.'.join(path)}: dev={a!r} prod={b!r}")
    return bad


def test_dev_and_prod_differ_only_in_the_fields_meant_to_differ():
    """Both overlays render the same (kind, name) set, and a structural diff of every pair of objects finds only
    differences on the allow-list: namespace, image registry/tag, zone pinning, replicas, resources, the IRSA
    annotation and the per-environment keys of curation-env. In particular dagster.yaml, RBAC, the security
    settings, probes, commands and the workspace are identical."""
    dev, prod = render("dev"), render("prod")
    assert disallowed_diffs(dev, prod) == []
    # The allow-list is not vacuous: prod really differs in each kind of allowed field...
    prod_by_key = {parity_key(o): o for o in prod}
    found = {
        (kind, name, ".".join(path))
        for o in dev
        for kind, name in [parity_key(o)]
        for path, _, _ in structural_diff(o, prod_by_key[kind, name])
    }
    for expected in [
        ("Namespace", "<namespace>", "metadata.name"),
        ("ConfigMap", "curation-env", "data.CURATION_DATA_ROOT"),
        ("ServiceAccount", "curation-dagster", "metadata.annotations.eks.amazonaws.com/role-arn"),
        ("Deployment", "curation-daemon", "spec.template.spec.containers.[dagster].image"),
        (
            "Deployment",
            "curation-daemon",
            "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        ),
    ]:
        assert expected in found, (expected, sorted(found))
    # ...and a difference outside it is reported: a weakened security context, another dagster.yaml, a new env.
    for mutate in [
        lambda objs: container(get(objs, "Deployment", "curation-daemon"))["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        lambda objs: get(objs, "ConfigMap", "curation-instance")["data"].update({"dagster.yaml": "telemetry: {}"}),
        lambda objs: container(get(objs, "Deployment", "curation-webserver"))["env"].append(
            {"name": "DEBUG", "value": "1"}
        ),
        lambda objs: get(objs, "Role", "curation-dagster")["rules"][0]["verbs"].append("patch"),
        lambda objs: container(get(objs, "Deployment", "curation-code"))["env"].append(
            {"name": "DAGSTER_CONTAINER_CONTEXT", "value": '{"k8s": {"env_vars": ["X=1"]}}'}
        ),
    ]:
        tampered = deepcopy(prod)
        mutate(tampered)
        assert disallowed_diffs(dev, tampered), mutate


# ---------------------------------------------------------------- pods that dagster-k8s creates


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_and_step_jobs_are_valid_hardened_and_pinned(overlay, tmp_path):
    """The run Job the K8sRunLauncher of deploy/dagster.yaml submits, and a step Job of an op sized by the op_tags
    example of deploy/README.md (requests plus a memory limit), through the real K8sStepHandler."""
    objs = render(overlay)
    env = env_data(objs)
    pinned = {ZONE_LABEL: {env["CURATION_POD_ZONE"]}} if "CURATION_POD_ZONE" in env else {}

    @dg.op(tags={"dagster-k8s/config": STEP_K8S_CONFIG})
    def dedup():
        pass

    # An op that pins itself and adds env and a security field, the way a cost-guard op tag might: dagster-k8s
    # deep-merges it into the launcher's config, so the hardening, /tmp and HOME stay and the lists are appended.
    zone = env.get("CURATION_POD_ZONE", "use1-az4")
    own_pin = {
        "pod_spec_config": {"node_selector": {ZONE_LABEL: zone}},
        "container_config": {"env": [{"name": "STEP_FLAG", "value": "1"}], "security_context": {"runAsGroup": UID}},
    }

    @dg.op(tags={"dagster-k8s/config": own_pin})
    def pinned_step():
        pass

    @dg.job(executor_def=k8s_job_executor)
    def readme_example():
        dedup()
        pinned_step()

    with cluster_instance(tmp_path, env["CURATION_NAMESPACE"]) as instance:
        run, namespace, run_job = launch_run_job(instance, objs, "readme_example")
        assert namespace == env["CURATION_NAMESPACE"]
        c = assert_pod_of_overlay(objs, run_job, "run pod")
        assert allowed_zones(run_job["spec"]["template"]["spec"]) == pinned
        assert c["resources"] == LAUNCHER_RESOURCES
        assert c["args"][:5] == ["/usr/local/bin/python", "-m", "dagster", "api", "execute_run"]

        steps = Steps(instance, run, readme_example)
        (namespace, job), (_, pinned_job) = steps.launch("dedup"), steps.launch("pinned_step")
    assert namespace == env["CURATION_NAMESPACE"]
    c = assert_pod_of_overlay(objs, job, "step pod")
    assert allowed_zones(job["spec"]["template"]["spec"]) == pinned
    # The op tag replaces the launcher's default resources, and no launcher limit leaks into the step pod.
    assert c["resources"] == STEP_K8S_CONFIG["container_config"]["resources"]
    assert c["args"][:5] == ["/usr/local/bin/python", "-m", "dagster", "api", "execute_step"]

    c = assert_pod_of_overlay(objs, pinned_job, "self-pinned step pod")
    pod = pinned_job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {ZONE_LABEL: zone}
    assert allowed_zones(pod) == {ZONE_LABEL: {zone}}
    assert {"name": "STEP_FLAG", "value": "1"} in c["env"] and {"name": "HOME", "value": "/tmp"} in c["env"]
    assert c["resources"] == LAUNCHER_RESOURCES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_asset_of_the_app_gets_the_step_job_its_op_tags_declare(overlay, tmp_path):
    """The app's own Definitions, built with the overlay's curation-env as the environment: for every step of
    every job (one per asset: its checks run in its pod, never in a pod of their own) the K8sStepHandler of the
    app's executor submits a valid, hardened Job in the overlay's namespace; an asset's pod has exactly the
    resources of its op's `dagster-k8s/config` tag, and in prod every pod may only run in the data bucket's zone."""
    objs = render(overlay)
    env = env_data(objs)
    settings = Settings.from_env(env)
    assert (settings.env, settings.namespace, settings.data_root) == (
        "k8s",
        env["CURATION_NAMESPACE"],
        env["CURATION_DATA_ROOT"],
    )
    assert settings.pod_zone == settings.data_zone == env.get("CURATION_POD_ZONE")
    definitions = build_definitions(load_config(), settings)
    graph = definitions.resolve_asset_graph()
    asset_ops = {graph.get(key).assets_def.op.name: key for key in graph.get_all_asset_keys()}

    launched: dict[str, dict] = {}
    with cluster_instance(tmp_path, env["CURATION_NAMESPACE"]) as instance:
        for job in definitions.jobs:
            job_def = definitions.resolve_job_def(job.name)
            assert job_def.executor_def.name == "k8s", job.name
            run, namespace, run_job = launch_run_job(instance, objs, job_def.name)
            assert namespace == env["CURATION_NAMESPACE"]
            assert_pod_of_overlay(objs, run_job, f"run pod of {job.name}")
            steps = Steps(instance, run, job_def)
            config = steps.executor_config
            assert config["service_account_name"] == "curation-dagster"
            assert "curation-env" in config["env_config_maps"]
            assert not config.get("enable_owner_references"), "needs `pods get`, which rbac.yaml does not grant"
            for key, step in steps.steps.items():
                namespace, step_job = steps.launch(key)
                assert namespace == env["CURATION_NAMESPACE"], key
                launched[key] = {"step": step, "job": step_job}

    assert asset_ops.keys() == launched.keys(), "one step per asset, no check steps"
    for key, item in launched.items():
        tags, job = item["step"].tags, item["job"]
        c = assert_pod_of_overlay(objs, job, f"step pod {key}")
        pod = job["spec"]["template"]["spec"]
        if key in asset_ops:
            op_tags = graph.get(asset_ops[key]).assets_def.op.tags
            assert tags["dagster-k8s/config"] == op_tags["dagster-k8s/config"], key
        if "dagster-k8s/config" in tags:
            declared = json.loads(tags["dagster-k8s/config"])["container_config"]["resources"]
            assert c["resources"] == declared, key
        else:
            assert key not in asset_ops, f"asset {key} has no `dagster-k8s/config` op tag"
            assert c["resources"] == LAUNCHER_RESOURCES, key
        assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), key
        for resource, limit in c["resources"].get("limits", {}).items():
            # The API server rejects a pod whose request exceeds its limit.
            assert parse_quantity(c["resources"]["requests"].get(resource, limit)) <= parse_quantity(limit), key
        # Zone: the op tag's own pin (if any) and the overlay's must agree; prod pins every pod to the bucket zone.
        own = allowed_zones(tag_only_pod(tags))
        zones = allowed_zones(pod)
        assert all(zones.values()), f"{key}: pinned to no zone at all (conflicting pins): {zones}"
        if "CURATION_POD_ZONE" in env:
            assert zones == {ZONE_LABEL: {env["CURATION_POD_ZONE"]}}, key
        else:
            assert zones == own, key


def test_each_step_is_pinned_to_the_zone_its_data_lives_in(tmp_path):
    """The zones come from the config, not from the overlay: with a directory-bucket data root every step runs in
    its zone; with a regional data root only `raw` of a source in a directory bucket is pinned, per partition,
    through ingest_source's partitioned config, and everything else may run anywhere. A source in a zone other
    than the data root's gets no pin of its own (the cost guard refuses that raw step; tests/test_raw.py)."""
    objs = render("dev")
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"name": "books", "uris": ["s3://src--use1-az6--x-s3/books/*"], "licence": "t"},
                    {"name": "web", "uris": ["s3://corpus/web/*"], "licence": "t"},
                ]
            }
        )
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"books": 1, "web": 1}}}))
    cases = {
        "s3://out--use1-az4--x-s3/curation": {"books": dict.fromkeys(ASSET_NAMES, "use1-az4"), "web": "use1-az4"},
        "s3://regional-bucket/curation": {"books": {"raw": "use1-az6"}, "web": None},
    }
    for root, expected in cases.items():
        env = {**env_data(objs), "CURATION_DATA_ROOT": root, "CURATION_SOURCES": str(sources)}
        env |= {"CURATION_RECIPE": str(recipe)}
        settings = Settings.from_env(env)
        definitions = build_definitions(load_config(settings.sources, settings.recipe), settings)
        with cluster_instance(tmp_path, env["CURATION_NAMESPACE"]) as instance:
            jobs = (
                ("ingest_source", ["books", "web"]),
                ("train_quality_model", [None]),
                ("curate_source", ["books", "web"]),
                ("build_mixture", [None]),
            )
            for job_name, partitions in jobs:
                job_def = definitions.resolve_job_def(job_name)
                for partition in partitions:
                    run_config = (
                        job_def.partitioned_config.get_run_config_for_partition_key(partition)
                        if partition and job_def.partitioned_config
                        else {}
                    )
                    run = instance.add_run(
                        DagsterRun(
                            job_name=job_name,
                            run_id=str(uuid.uuid4()),
                            run_config=run_config,
                            job_code_origin=code_origin(objs, job_name),
                        )
                    )
                    steps = Steps(instance, run, job_def)
                    want = expected.get(partition, expected["web"])
                    for step in set(steps.steps) & set(ASSET_NAMES):
                        _, job = steps.launch(step)
                        assert_valid(job)
                        zone = want.get(step) if isinstance(want, dict) else want
                        got = allowed_zones(job["spec"]["template"]["spec"])
                        assert got == ({ZONE_LABEL: {zone}} if zone else {}), (root, partition, step, got)


# ---------------------------------------------------------------- RBAC


def _rule(api: str, method: str) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) that a kubernetes client method needs, e.g. read_namespaced_job_status ->
    ("batch", "jobs/status", "get")."""
    m = re.fullmatch(r"(create|delete|list|read|patch|replace)_namespaced_([a-z]+?)(?:_(status|log))?", method)
    assert m, method
    verb = {"read": "get", "replace": "update"}.get(m[1], m[1])
    resource = m[2] + "s" + (f"/{m[3]}" if m[3] else "")
    return ("batch" if api == "batch" else "", resource, verb)


def recording_api() -> tuple[DagsterKubernetesClient, mock.Mock, mock.Mock]:
    """A DagsterKubernetesClient over autospec'd BatchV1Api/CoreV1Api mocks that answer like a cluster with one
    failed pod, so every branch that reads status, logs and events is taken."""
    c = kubernetes.client
    batch = mock.create_autospec(c.BatchV1Api, instance=True)
    core = mock.create_autospec(c.CoreV1Api, instance=True)
    status = c.V1JobStatus(start_time=datetime.now(timezone.utc), active=0, failed=1)
    batch.read_namespaced_job_status.return_value = c.V1Job(status=status)
    batch.list_namespaced_job.return_value = c.V1JobList(
        items=[c.V1Job(metadata=c.V1ObjectMeta(name="j"), status=status)]
    )
    terminated = c.V1ContainerState(terminated=c.V1ContainerStateTerminated(exit_code=1, reason="Error"))
    pod = c.V1Pod(
        metadata=c.V1ObjectMeta(name="p"),
        spec=c.V1PodSpec(containers=[c.V1Container(name="dagster")]),
        status=c.V1PodStatus(
            phase="Failed",
            container_statuses=[
                c.V1ContainerStatus(
                    name="dagster", image="i", image_id="", ready=False, restart_count=0, state=terminated
                )
            ],
        ),
    )
    core.list_namespaced_pod.return_value = c.V1PodList(items=[pod])
    core.read_namespaced_pod_log.return_value = mock.Mock(data=b"log")
    core.list_namespaced_event.return_value = c.CoreV1EventList(items=[])
    return DagsterKubernetesClient.production_client(batch_api_override=batch, core_api_override=core), batch, core


# Methods of the launcher / step handler that use the API client, and the ones the test drives below.
DRIVEN = {
    K8sRunLauncher: {"_launch_k8s_job_with_args", "terminate", "get_run_worker_debug_info", "check_run_worker_health"},
    K8sStepHandler: {"launch_step", "check_step_health", "terminate_step"},
}
NOT_USED = {(K8sStepHandler, "_detect_current_name_and_uid")}  # only with enable_owner_references (asserted off)


def test_rbac_grants_exactly_the_api_calls_dagster_k8s_makes(tmp_path):
    """Every launcher and step-handler method that touches the Kubernetes API is driven against a recording API
    (the daemon's launch/resume/monitoring, the webserver's terminate, the run pod's step launch/health/terminate);
    the Role grants exactly the (group, resource, verb) set those calls need, no more, no less."""
    for cls, driven in DRIVEN.items():
        uses_api = {
            name
            for name, fn in vars(cls).items()
            if callable(fn) and name != "__init__" and "_api_client" in inspect.getsource(fn)
        }
        assert uses_api == driven | {n for c, n in NOT_USED if c is cls}, (cls.__name__, uses_api)

    objs = render("prod")
    env = env_data(objs)
    client, batch, core = recording_api()
    definitions = build_definitions(load_config(), Settings.from_env(env))
    job_def = definitions.resolve_job_def(next(iter(definitions.jobs)).name)
    with cluster_instance(tmp_path, env["CURATION_NAMESPACE"]) as instance:
        launcher = instance.run_launcher
        launcher._api_client = client
        run = instance.add_run(
            DagsterRun(job_name=job_def.name, run_id=str(uuid.uuid4()), job_code_origin=code_origin(objs, job_def.name))
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        launcher.resume_run(ResumeRunContext(dagster_run=run, workspace=None, resume_attempt_number=1))
        launcher.check_run_worker_health(run)
        assert "Last 25 log lines for container 'dagster'" in launcher.get_run_worker_debug_info(run)
        pods = core.list_namespaced_pod.return_value
        core.list_namespaced_pod.return_value = kubernetes.client.V1PodList(items=[])
        launcher.get_run_worker_debug_info(run)  # no pods: the Job's own status and events
        core.list_namespaced_pod.return_value = pods
        assert launcher.terminate(run.run_id)

        steps = Steps(instance, instance.get_run_by_id(run.run_id), job_def)
        steps.handler._api_client = client
        ctx = next(iter(steps.contexts.values()))
        list(steps.handler.launch_step(ctx))
        steps.handler.check_step_health(ctx)
        list(steps.handler.terminate_step(ctx))

    used = {_rule("batch", name) for name, *_ in batch.method_calls} | {
        _rule("core", name) for name, *_ in core.method_calls
    }
    granted = {
        (g, r, v)
        for rule in get(objs, "Role", "curation-dagster")["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == used, {"granted, never used": granted - used, "used, not granted": used - granted}


# ---------------------------------------------------------------- dagster.yaml against a real Postgres


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture
def postgres_db():
    """A fresh database on the local Postgres (127.0.0.1:5432, user postgres, trust auth), dropped after."""
    if not _port_open("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (CI starts it; locally: pg_ctlcluster 15 main start)")
    import psycopg2

    name = f"curation_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def log_bucket_s3(monkeypatch):
    """A loopback moto S3 for the compute logs, reached the way a MinIO endpoint would be: AWS_ENDPOINT_URL_S3."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
    }.items():
        monkeypatch.setenv(key, value)
    yield f"http://{host}:{port}"
    server.stop()


PASSWORD = "ignored-by-trust-auth-7f3a"


def test_dagster_yaml_loads_as_instance_and_runs_against_postgres(tmp_path, monkeypatch, postgres_db, log_bucket_s3):
    import boto3
    import psycopg2
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(offline_instance_yaml(tmp_path)))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="curation-logs")
    # The env the overlays provide (curation-env + Secret curation-postgres), pointed at local services.
    monkeypatch.delenv("PGSSLMODE", raising=False)
    for key, value in {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": PASSWORD,
        "DAGSTER_PG_DB": postgres_db,
        "CURATION_NAMESPACE": "curation",
        "DAGSTER_COMPUTE_LOG_BUCKET": "curation-logs",
        "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs",
    }.items():
        monkeypatch.setenv(key, value)

    @dg.asset
    def probe() -> int:
        print("hello from probe")
        return 1

    @dg.op
    def step():
        pass

    @dg.job(executor_def=k8s_job_executor)
    def queued_job():
        step()

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled and not instance.telemetry_enabled

        result = dg.materialize([probe], instance=instance)
        assert result.success
        (run,) = instance.get_runs()
        assert run.run_id == result.run_id and run.status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey("probe"))
        assert event is not None and event.run_id == result.run_id

        # What the daemon would submit for a queued run, and what its run pod would submit for a step: the
        # instance travels in the pod's args / env with its env references unresolved, so the database password
        # never lands in a Job spec.
        origin = JobPythonOrigin(
            "queued_job",
            RepositoryPythonOrigin(
                executable_path="/usr/local/bin/python",
                container_image="img:1",
                code_pointer=ModuleCodePointer("curation_assets.defs", "defs", None),
            ),
        )
        queued = instance.add_run(DagsterRun(job_name="queued_job", run_id=str(uuid.uuid4()), job_code_origin=origin))
        with mock.patch.object(instance.run_launcher, "_api_client") as api:
            instance.run_launcher.launch_run(LaunchRunContext(dagster_run=queued, workspace=None))
        run_body = json.dumps(manifest(api.create_namespaced_job_with_retries.call_args.kwargs["body"]))
        _, step_job = Steps(instance, queued, queued_job).launch("step")
        (step_args,) = [
            e["value"]
            for e in step_job["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"
        ]
        step_body = json.dumps(step_job) + zlib.decompress(base64.b64decode(step_args)).decode()
        for body in (run_body, step_body):
            assert "DAGSTER_PG_PASSWORD" in body and PASSWORD not in body

    # The rows are in the test database, and the step's stdout reached the compute-log bucket.
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=postgres_db) as conn:
        cur = conn.cursor()
        cur.execute("SELECT run_id, status FROM runs ORDER BY create_timestamp")
        assert cur.fetchall() == [(result.run_id, "SUCCESS"), (queued.run_id, "NOT_STARTED")]
    conn.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="curation-logs").get("Contents", [])]
    out_keys = [k for k in keys if k.startswith("compute-logs/") and result.run_id in k and k.endswith(".out")]
    assert out_keys, keys
    body = s3.get_object(Bucket="curation-logs", Key=out_keys[0])["Body"].read().decode()
    assert "hello from probe" in body


# ---------------------------------------------------------------- image


def test_requirements_lock_pins_every_dependency_of_pyproject():
    lock = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            lock[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in map(Requirement, project["dependencies"]):
        assert canonicalize_name(dep.name) in lock, f"{dep.name} missing from deploy/requirements.lock"
        assert dep.specifier.contains(lock[canonicalize_name(dep.name)]), f"{dep} vs {lock[dep.name]}"
    # The same pins the tests ran with: the image runs what CI tested.
    from importlib.metadata import version

    for name in ("dagster", "dagster-k8s", "dagster-aws", "dagster-postgres", "sqlalchemy", "psycopg2-binary"):
        assert lock[canonicalize_name(name)] == version(name), name
