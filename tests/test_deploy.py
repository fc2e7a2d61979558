"""deploy/: the kustomize overlays render and pass strict schema validation, their cross-references hold,
the pods dagster-k8s creates from them are pinned and valid, and dagster.yaml loads as a real instance."""

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from unittest import mock

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
OVERLAYS = ["dev", "prod"]
# EKS's current standard-support minor, and the newest schemas bundled with kubernetes-validate.
K8S_VERSIONS = sorted({"1.33", ".".join(kubernetes_validate.latest_version().split(".")[:2])})
DAGSTER_HOME = "/opt/dagster/dagster_home"
ZONE_LABEL = "topology.k8s.aws/zone-id"  # AZ ID label of EKS >= 1.30 nodes
# What deploy/README.md tells the operator to put in Secret curation-postgres.
POSTGRES_SECRET_KEYS = {"DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
# The op_tags example of deploy/README.md (same shape as curation_assets._dagster.pod()).
STEP_K8S_CONFIG = {
    "container_config": {"resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}}
}


@functools.cache
def _kustomize(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(_kustomize(overlay)) if doc]


def get(objs: list[dict], kind: str, name: str) -> dict:
    """The rendered object; generated ConfigMaps may carry a `-<hash>` suffix."""
    found = [
        o for o in objs if o["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind}/{name}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(deployment: dict) -> dict:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "dagster"]
    return c


def env_value(c: dict, name: str) -> str:
    (value,) = [e["value"] for e in c.get("env", []) if e["name"] == name]
    return value


def zone_terms(pod_spec: dict) -> list[dict]:
    """matchExpressions on the zone label in the pod's required nodeAffinity (camelCase, as rendered)."""
    terms = (
        pod_spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    return [e for t in terms for e in t.get("matchExpressions", []) if e["key"] == ZONE_LABEL]


def env_refs(node) -> set[str]:
    """Every `{env: NAME}` in a parsed dagster.yaml."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node))
    return set()


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


def manifest(k8s_object) -> dict:
    """camelCase dict of a kubernetes client model (`.to_dict()` would give snake_case)."""
    return kubernetes.client.ApiClient().sanitize_for_serialization(k8s_object)


def assert_valid(obj: dict) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for k8s {version}: {e.message}")


# ---------------------------------------------------------------- rendered manifests


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_validation(overlay):
    objs = render(overlay)
    kinds = {(o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in objs}
    assert kinds == {
        ("Namespace", f"curation{'-dev' if overlay == 'dev' else ''}"),
        ("ServiceAccount", "curation-dagster"),
        ("Role", "curation-dagster"),
        ("RoleBinding", "curation-dagster"),
        ("ConfigMap", "curation-env"),
        ("ConfigMap", "curation-instance"),
        ("ConfigMap", "curation-workspace"),
        ("Deployment", "curation-code"),
        ("Service", "curation-code"),
        ("Deployment", "curation-webserver"),
        ("Service", "curation-webserver"),
        ("Deployment", "curation-daemon"),
    }
    for obj in objs:
        assert_valid(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_code_server_runs_dagster_code_server_on_port_4000(overlay):
    objs = render(overlay)
    c = container(get(objs, "Deployment", "curation-code"))
    args = c["args"]
    assert args[:3] == ["dagster", "code-server", "start"]
    assert args[args.index("-p") + 1] == "4000" and args[args.index("-h") + 1] == "0.0.0.0"
    assert args[args.index("-m") + 1] == "curation_assets.definitions"
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
    env_cm = get(objs, "ConfigMap", "curation-env")["data"]
    assert env_refs(config) <= set(env_cm) | POSTGRES_SECRET_KEYS
    # Every Deployment loads that instance: DAGSTER_HOME is the mounted ConfigMap, env from both sources.
    for dep in (o for o in objs if o["kind"] == "Deployment"):
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
    ns = get(objs, "Namespace", "curation(-dev)?")["metadata"]["name"]
    assert {o["metadata"].get("namespace", ns) for o in objs if o["kind"] != "Namespace"} == {ns}
    env = get(objs, "ConfigMap", "curation-env")["data"]
    # Step Jobs (app) and run Jobs (dagster.yaml job_namespace) go to CURATION_NAMESPACE: this namespace.
    assert env["CURATION_NAMESPACE"] == ns
    assert env["CURATION_ENV"] == "k8s"
    binding = get(objs, "RoleBinding", "curation-dagster")
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject.get("namespace", ns) == ns
    assert binding["roleRef"]["name"] == get(objs, "Role", "curation-dagster")["metadata"]["name"]
    granted = {(g, r, v) for rule in get(objs, "Role", "curation-dagster")["rules"]
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [("batch", "jobs", "create"), ("batch", "jobs", "delete"), ("batch", "jobs/status", "get"),
                 ("", "pods", "list"), ("", "pods/log", "get"), ("", "events", "list")]:
        assert need in granted, need
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "curation-dagster"
        assert spec["securityContext"]["runAsNonRoot"] is True
        sc = container(dep)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        res = container(dep)["resources"]
        assert {"cpu", "memory"} <= res["requests"].keys() and {"cpu", "memory"} <= res["limits"].keys()


def test_prod_pods_are_pinned_to_the_bucket_zone():
    objs = render("prod")
    env = get(objs, "ConfigMap", "curation-env")["data"]
    zone = env["CURATION_POD_ZONE"]
    assert re.fullmatch(r"[a-z]{3,4}\d-az\d+", zone), "an AZ ID, as the zone-id node label carries"
    # The data bucket is the S3 Express directory bucket of that same AZ.
    bucket_zone = re.match(r"s3://[a-z0-9-]+?--(?P<zone>[a-z0-9]+-az\d+)--x-s3/", env["CURATION_DATA_ROOT"])
    assert bucket_zone and bucket_zone["zone"] == env["CURATION_DATA_ZONE"] == zone
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        (term,) = zone_terms(dep["spec"]["template"]["spec"])
        assert (term["operator"], term["values"]) == ("In", [zone]), dep["metadata"]["name"]
    # Run and step pods are created by dagster-k8s; the code location's container context pins them.
    context = json.loads(env_value(container(get(objs, "Deployment", "curation-code")), "DAGSTER_CONTAINER_CONTEXT"))
    (term,) = zone_terms(context["k8s"]["run_k8s_config"]["pod_spec_config"])
    assert term["values"] == [zone]
    sa = get(objs, "ServiceAccount", "curation-dagster")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    # Dev runs in any zone, and prod is sized above dev.
    dev = render("dev")
    assert "DAGSTER_CONTAINER_CONTEXT" not in str(dev)
    for name in ("curation-code", "curation-webserver", "curation-daemon"):
        assert not zone_terms(get(dev, "Deployment", name)["spec"]["template"]["spec"])
        prod_mem = container(get(objs, "Deployment", name))["resources"]["requests"]["memory"]
        dev_mem = container(get(dev, "Deployment", name))["resources"]["requests"]["memory"]
        assert int(prod_mem.removesuffix("Gi")) > int(dev_mem.removesuffix("Gi"))


@pytest.fixture
def launched(request, tmp_path, monkeypatch):
    """(overlay objects, K8sRunLauncher from deploy/dagster.yaml, a run of the overlay's code server, run Job).

    The run carries the code server's image and container context, as runs launched from that location do;
    the launcher's API client is mocked and the Job it would submit is captured."""
    objs = render(request.param)
    env = get(objs, "ConfigMap", "curation-env")["data"]
    code = container(get(objs, "Deployment", "curation-code"))
    context = {e["name"]: e["value"] for e in code["env"]}.get("DAGSTER_CONTAINER_CONTEXT")
    monkeypatch.setenv("CURATION_NAMESPACE", env["CURATION_NAMESPACE"])
    with dg.instance_for_test(overrides={"run_launcher": offline_instance_yaml(tmp_path)["run_launcher"]}) as inst:
        origin = JobPythonOrigin("curate_source", RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python",
            code_pointer=ModuleCodePointer("curation_assets.definitions", "defs", working_directory=None),
            container_image=code["image"],
            container_context=json.loads(context) if context else None,
        ))
        run = inst.add_run(DagsterRun(job_name="curate_source", run_id=str(uuid.uuid4()), job_code_origin=origin))
        with mock.patch.object(inst.run_launcher, "_api_client") as api:
            inst.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        (call,) = api.create_namespaced_job_with_retries.call_args_list
        assert call.kwargs["namespace"] == env["CURATION_NAMESPACE"]
        yield objs, inst.run_launcher, run, manifest(call.kwargs["body"])


def step_job(run, launcher, op_name: str, op_tags: dict, executor_config: dict | None = None) -> tuple[str, dict]:
    """(namespace, Job manifest) of one step, merged in K8sStepHandler's order (dagster_k8s/executor.py,
    `_get_container_context` and `launch_step`): launcher config, code-location container context, executor
    config, the op's `dagster-k8s/config` tag, `per_step_k8s_config[op_name]`."""
    exc = executor_config or {}
    executor_context = K8sContainerContext(
        service_account_name=exc.get("service_account_name"), env_config_maps=exc.get("env_config_maps"),
        env_secrets=exc.get("env_secrets"), env_vars=exc.get("env_vars"), labels=exc.get("labels"),
        namespace=exc.get("job_namespace"), resources=exc.get("resources"),
        security_context=exc.get("security_context"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(exc.get("step_k8s_config", {})),
    )
    ctx = (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op_tags)))
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            exc.get("per_step_k8s_config", {}).get(op_name, {}))))
    )
    job_config = ctx.get_k8s_job_config(exc.get("job_image"), launcher)
    if not job_config.job_image:
        job_config = job_config.with_image(run.job_code_origin.repository_origin.container_image)
    job = construct_dagster_k8s_job(
        job_config=job_config, args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{op_name}"[:63],
        component="step_worker", user_defined_k8s_config=ctx.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": op_name, "dagster/run-id": run.run_id},
    )
    return ctx.namespace, manifest(job)


def assert_pod_of_overlay(objs: list[dict], job: dict) -> dict:
    """A dagster-created pod is valid, runs as curation-dagster with the overlay's image and env sources, and is
    pinned exactly when the overlay pins its Deployments. Returns the container."""
    assert_valid(job)
    env = get(objs, "ConfigMap", "curation-env")["data"]
    pod = job["spec"]["template"]["spec"]
    expected = [{"key": ZONE_LABEL, "operator": "In", "values": [env["CURATION_POD_ZONE"]]}] \
        if "CURATION_POD_ZONE" in env else []
    assert zone_terms(pod) == expected
    assert pod["serviceAccountName"] == "curation-dagster"
    (c,) = pod["containers"]
    assert c["image"] == container(get(objs, "Deployment", "curation-code"))["image"]
    assert {r.get("configMapRef", r.get("secretRef"))["name"] for r in c["envFrom"]} == {
        "curation-env", "curation-postgres", "curation-aws"}
    # No dagster.yaml is mounted (instance_config_map is unused): the instance travels in the pod's args.
    assert {"name": "DAGSTER_HOME", "value": DAGSTER_HOME} in c["env"]
    return c


@pytest.mark.parametrize("launched", OVERLAYS, indirect=True)
def test_run_and_step_pods_are_valid_and_pinned(launched):
    """The run Job the K8sRunLauncher of deploy/dagster.yaml submits, and a step Job sized by op_tags in the
    shape deploy/README.md documents (requests, plus a memory limit)."""
    objs, launcher, run, run_job = launched
    c = assert_pod_of_overlay(objs, run_job)
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}}
    assert c["args"][:5] == ["/usr/local/bin/python", "-m", "dagster", "api", "execute_run"]

    namespace, job = step_job(run, launcher, "dedup", {"dagster-k8s/config": json.dumps(STEP_K8S_CONFIG)})
    assert namespace == get(objs, "ConfigMap", "curation-env")["data"]["CURATION_NAMESPACE"]
    c = assert_pod_of_overlay(objs, job)
    # The op tag replaces the launcher's default resources, and no launcher limit leaks into the step pod.
    assert c["resources"] == STEP_K8S_CONFIG["container_config"]["resources"]


@pytest.mark.parametrize("launched", OVERLAYS, indirect=True)
def test_every_asset_step_pod_of_the_app_is_valid_and_pinned(launched, monkeypatch):
    """The app's own Definitions, loaded with the overlay's curation-env as the environment: its executor and
    every asset's op_tags give a valid step Job in the right namespace, zone and identity."""
    objs, launcher, run, _ = launched
    env = get(objs, "ConfigMap", "curation-env")["data"]
    for key in [k for k in os.environ if k.startswith("CURATION_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Without an __init__.py, tests/resources/ would be imported as the top-level `resources` package
    # (pytest puts tests/ first on sys.path), hiding resources/__init__.py: put the repo first, import fresh.
    monkeypatch.syspath_prepend(str(REPO))
    for name in [m for m in sys.modules if m.split(".")[0] in ("resources", "curation_assets")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        from curation_assets.definitions import defs
        from resources import Settings
    except Exception as e:  # the app's own tests report this; here it only means there is nothing to render
        pytest.skip(f"curation_assets.definitions does not import: {type(e).__name__}: {e}")

    settings = Settings.from_env()
    assert (settings.env, settings.namespace, settings.data_root) == (
        "k8s", env["CURATION_NAMESPACE"], env["CURATION_DATA_ROOT"])
    assert settings.pod_zone == settings.data_zone == env.get("CURATION_POD_ZONE")
    definitions = defs()
    executor_def = definitions.resolve_job_def(next(iter(definitions.jobs)).name).executor_def
    assert executor_def.name == "k8s"
    resolved = executor_def.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    executor_config = resolved.value["config"]
    assert executor_config["service_account_name"] == "curation-dagster"
    assert "curation-env" in executor_config["env_config_maps"]

    ops = {}
    for job_def in definitions.jobs:
        for node in definitions.resolve_job_def(job_def.name).graph.nodes:
            ops[node.name] = node.definition.tags
    assert ops, "the Definitions have no asset jobs"
    for op_name, tags in ops.items():
        namespace, job = step_job(run, launcher, op_name, tags, executor_config)
        assert namespace == env["CURATION_NAMESPACE"]
        c = assert_pod_of_overlay(objs, job)
        if "dagster-k8s/config" in tags:
            declared = json.loads(tags["dagster-k8s/config"])["container_config"]["resources"]
            assert c["resources"] == declared, op_name


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
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(key, value)
    yield f"http://{host}:{port}"
    server.stop()


PASSWORD = "ignored-by-trust-auth-7f3a"


def test_dagster_yaml_loads_as_instance_and_runs_against_postgres(tmp_path, monkeypatch, postgres_db, log_bucket_s3):
    import boto3
    import psycopg2
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(offline_instance_yaml(tmp_path)))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="curation-logs")
    # The env the overlays provide (curation-env + Secret curation-postgres), pointed at local services.
    monkeypatch.delenv("PGSSLMODE", raising=False)
    for key, value in {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_USER": "postgres",
                       "DAGSTER_PG_PASSWORD": PASSWORD, "DAGSTER_PG_DB": postgres_db, "CURATION_NAMESPACE": "curation",
                       "DAGSTER_COMPUTE_LOG_BUCKET": "curation-logs", "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs"}.items():
        monkeypatch.setenv(key, value)

    @dg.asset
    def probe() -> int:
        print("hello from probe")
        return 1

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

        # What the daemon would submit for a queued run: the instance travels in the pod's args with its
        # env references unresolved, so the database password never lands in a Job spec.
        origin = JobPythonOrigin("curate", RepositoryPythonOrigin(
            "/usr/local/bin/python", ModuleCodePointer("curation_assets.definitions", "defs", None), "img:1"))
        queued = instance.add_run(DagsterRun(job_name="curate", run_id=str(uuid.uuid4()), job_code_origin=origin))
        with mock.patch.object(instance.run_launcher, "_api_client") as api:
            instance.run_launcher.launch_run(LaunchRunContext(dagster_run=queued, workspace=None))
        body = json.dumps(manifest(api.create_namespaced_job_with_retries.call_args.kwargs["body"]))
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
