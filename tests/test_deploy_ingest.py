"""The cluster ingests something from the README's steps: the image's package ships what its bundled default reads,
each overlay's sources ConfigMap is what the code location loads in the cluster, its sources resolve to their files
on S3 and its landing zone is under the data root, and the daemon migrates the instance before it starts.

"The image's package" is built the way deploy/Dockerfile's build stage builds it (the files it copies, setuptools
from pyproject.toml), into a directory that the code location is then imported from, in a process of its own."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from curation_assets.config import load_config
from tests.background import clean_env
from tests.test_deploy import (  # noqa: F401 (postgres_db: the fixture)
    DEPLOY,
    assert_mounts_config,
    container,
    env_data,
    get,
    offline_instance_yaml,
    postgres_db,
    render,
)

REPO = DEPLOY.parent
SAMPLE = REPO / "curation_assets" / "sample"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `curation` package as the image installs it: the build stage's COPY sources of deploy/Dockerfile in a
    fresh directory, built by setuptools from pyproject.toml. `build_py` writes exactly the files the wheel holds
    (packages and package-data); the venv has no `wheel`, which setuptools 65 needs for `bdist_wheel`."""
    tmp = tmp_path_factory.mktemp("image")
    build_stage = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")[1]
    copied = re.findall(r"^COPY (?!--from)(\S+) ", build_stage, re.M)
    assert {"pyproject.toml", "curation_assets", "resources"} <= set(copied), copied
    src, lib = tmp / "src", tmp / "site-packages"
    src.mkdir()
    for name in copied:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, src / name)
    build = [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "-d", str(lib)]
    proc = subprocess.run(build, cwd=src, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return lib


def run_in_image(lib: Path, script: str, env: dict[str, str], cwd: Path) -> dict:
    """Run `script` (which prints one JSON line last) with the package imported from `lib`, not from the checkout."""
    env = clean_env(**env) | {"PYTHONPATH": str(lib), "HOME": str(cwd)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["package"]).is_relative_to(lib), out["package"]
    return out


# Loads the code location as `dagster code-server start -m curation_assets.defs` does (its `@dg.definitions`
# function, with this environment), then lists each source's files and the landing zones the way raw and the
# landing sensors do: through the deployment's own ObjectStore and the config's URI resolution.
LOAD_LOCATION = """
import json
import dagster as dg
import curation_assets
from curation_assets.config.settings import Settings
from curation_assets.defs import config_for, defs
from curation_assets.defs.deployment import deployment

location = defs()
assert isinstance(location, dg.Definitions)
settings = Settings.from_env()
cfg = config_for(settings)
store = deployment(cfg, settings).resources["store"]
print(json.dumps({
    "package": curation_assets.__file__,
    "assets": sorted(k.to_user_string() for k in location.resolve_asset_graph().get_all_asset_keys()),
    "sources_file": str(cfg.sources_path),
    "files": {s: [u for uri in cfg.source(s).uris for u, _ in store.expand(cfg.resolve_uri(uri))]
              for s in cfg.source_names},
    "landing": [cfg.resolve_uri(z.uri) for z in cfg.sources.landing_zones],
}))
"""


def config_map_files(objs: list[dict], tmp: Path) -> dict[str, str]:
    """The files of ConfigMap curation-config as the kubelet mounts them (one file per key, in `tmp`), and the
    environment that names them: CURATION_SOURCES and CURATION_RECIPE of curation-env, moved from the pods' mount
    directory (which every pod that loads the definitions mounts: tests/test_deploy.py) to `tmp`."""
    tmp.mkdir()
    for key, text in get(objs, "ConfigMap", "curation-config")["data"].items():
        (tmp / key).write_text(text)
    env = env_data(objs)
    moved = {var: str(tmp / Path(env[var]).name) for var in ("CURATION_SOURCES", "CURATION_RECIPE")}
    assert all(Path(path).is_file() for path in moved.values()), f"{moved}: not keys of curation-config"
    return moved


def test_prod_overlay_sources_resolve_to_their_files_in_the_code_location_of_the_image(
    installed, s3_endpoint, tmp_path
):
    """Acceptance of issue 17: the prod overlay's sources ConfigMap, loaded by the code location of the image's
    installed package with prod's curation-env (CURATION_ENV=k8s), resolves every source to exactly the shards
    uploaded under its prefix on S3 (loopback moto), and lands new sources under the data root's S3 prefix."""
    objs = render("prod")
    env = {**env_data(objs), **config_map_files(objs, tmp_path / "config"), "CURATION_S3_ENDPOINT": s3_endpoint}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "DAGSTER_HOME": str(tmp_path)}
    assert env["CURATION_ENV"] == "k8s"
    cfg = load_config(env["CURATION_SOURCES"], env["CURATION_RECIPE"])
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    expected = {}
    for source in cfg.sources.sources:
        assert source.name in ("web", "books"), "the example ships shards of the bundled sample's sources"
        (uri,) = source.uris
        bucket, _, pattern = uri.removeprefix("s3://").partition("/")
        prefix, suffix = pattern.split("*")
        s3.create_bucket(Bucket=bucket)
        shards = sorted((SAMPLE / source.name).glob(f"*{suffix}"))
        assert shards
        for i, shard in enumerate(shards * 2):  # two objects per source, and one that the glob must not match
            s3.put_object(Bucket=bucket, Key=f"{prefix}part-{i:05d}{suffix}", Body=shard.read_bytes())
        s3.put_object(Bucket=bucket, Key=f"{prefix}README.md", Body=b"not a shard")
        expected[source.name] = [f"s3://{bucket}/{prefix}part-{i:05d}{suffix}" for i in range(len(shards) * 2)]

    out = run_in_image(installed, LOAD_LOCATION, env, tmp_path)
    assert out["sources_file"] == env["CURATION_SOURCES"]
    assert {"raw", "filtered", "quality_model", "tokenized"} <= set(out["assets"])
    assert out["files"] == expected
    assert out["landing"] and all(z.startswith(env["CURATION_DATA_ROOT"].rstrip("/") + "/") for z in out["landing"])


def test_the_bundled_default_resolves_inside_the_installed_package(installed, tmp_path):
    """Without any CURATION_* variable (`docker run <image> curation validate`, `dagster dev` from the image) the
    packaged sources.yaml names files the package ships: every glob matches files below the installed package (the
    sample is package-data), and so does the language-ID model every `filtered` step loads."""
    script = """
import glob, json
import curation_assets, resources
from curation_assets.config import load_config
cfg = load_config(check_paths=True)  # raises on a glob that matches no file
print(json.dumps({
    "package": curation_assets.__file__,
    "resources": resources.__file__,
    "files": {s: sorted(f for uri in cfg.source(s).uris for f in glob.glob(cfg.resolve_uri(uri)))
              for s in cfg.source_names},
}))
"""
    out = run_in_image(installed, script, {}, tmp_path)
    assert set(out["files"]) == {"web", "code", "books", "multilingual"}
    for source, files in out["files"].items():
        assert files and all(Path(f).is_relative_to(installed) for f in files), source
    assert (Path(out["resources"]).parent / "models" / "lid.176.ftz").is_file()


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_overlay_ingests_from_s3_and_lands_under_its_data_root(overlay, tmp_path):
    """The sources ConfigMap of every overlay loads with the base's recipe and the bundled thresholds, names only
    S3 URIs (a relative path would resolve into the read-only mount), and its landing zone is the data root's
    `landing/` prefix, which the pods can write and the sensor lists; the code server mounts it where curation-env
    says (run and step pods: tests/test_deploy.py)."""
    objs = render(overlay)
    files = config_map_files(objs, tmp_path / "config")
    cfg = load_config(files["CURATION_SOURCES"], files["CURATION_RECIPE"])
    assert cfg.quality_model_params is not None, "the example trains the quality model (books and web)"
    assert all(uri.startswith("s3://") for s in cfg.sources.sources for uri in s.uris)
    root = env_data(objs)["CURATION_DATA_ROOT"].rstrip("/")
    assert [z.uri for z in cfg.sources.landing_zones] == [f"{root}/landing"]
    code = get(objs, "Deployment", "curation-code")
    assert_mounts_config(code["spec"]["template"]["spec"], container(code), env_data(objs), "curation-code")


@pytest.mark.postgres
def test_daemon_migrates_the_instance_before_it_starts(tmp_path, postgres_db):  # noqa: F811 (the imported fixture)
    """Every rollout of the daemon (an upgrade rolls it: new image) first runs `dagster instance migrate` in an
    init container with the daemon's instance, env and mounts; that command, run here against a fresh database on
    the local Postgres with deploy/dagster.yaml, leaves the instance's storage at the current schema."""
    objs = render("prod")
    pod = get(objs, "Deployment", "curation-daemon")["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    daemon = container({"spec": {"template": {"spec": pod}}})
    assert migrate["args"] == ["dagster", "instance", "migrate"]
    assert migrate["image"] == daemon["image"]
    for key in ("env", "envFrom"):
        assert migrate[key] == daemon[key], key
    assert {(m["name"], m["mountPath"]) for m in migrate["volumeMounts"]} <= {
        (m["name"], m["mountPath"]) for m in daemon["volumeMounts"]
    }

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(offline_instance_yaml(tmp_path)))
    env = clean_env(
        DAGSTER_HOME=home,
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="trust",
        DAGSTER_PG_DB=postgres_db,
        CURATION_NAMESPACE="curation",
        DAGSTER_COMPUTE_LOG_BUCKET="curation-logs",
        DAGSTER_COMPUTE_LOG_PREFIX="compute-logs",
        AWS_REGION="us-east-1",
    )
    env.pop("PGSSLMODE", None)
    dagster = str(Path(sys.executable).parent / migrate["args"][0])
    proc = subprocess.run([dagster, *migrate["args"][1:]], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Storage schema state after migration" in proc.stdout
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=postgres_db) as conn:
        cur = conn.cursor()
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT version_num FROM alembic_version")
        assert cur.fetchone(), "no schema version recorded"
    assert {"runs", "event_logs", "jobs", "alembic_version"} <= tables
