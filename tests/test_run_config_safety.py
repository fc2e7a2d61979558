"""A run cannot configure a resource (issue 20 item 9): every resource's config is a safety property (where outputs
are written, the cost guard's placement, the store's endpoint, the Ray cluster), set by the deployment only. A run
config that names one, from the Launchpad, the API or a sensor, fails validation before anything runs; the run tag
`curation/allow-transfer` stays the only way across a zone (tests/steps/test_raw.py)."""

import os

import boto3
import dagster as dg
import pytest

from curation_assets.cli import QUIET
from curation_assets.config import load_config
from curation_assets.defs import build_definitions
from curation_assets.defs.deployment import deployment
from curation_assets.defs.jobs import INGEST_SOURCE, JOB_ASSETS
from tests.helpers import local_settings


def zonal(s3_endpoint: str, **kw) -> dict:
    """The cluster deployment of the issue: the data root is zonal (use1-az4), the pods run in use1-az1, so the cost
    guard refuses every step that writes it."""
    return dict(env="k8s", pod_zone="use1-az1", data_zone="use1-az4", s3_endpoint=s3_endpoint, **kw)


@pytest.mark.s3
@pytest.mark.parametrize("resource", ["cost_guard", "io_manager"])
def test_a_run_config_that_would_disarm_the_guard_or_redirect_writes_is_refused_before_anything_runs(
    resource, tmp_path, s3_endpoint
):
    prefix = f"run-config-{os.urandom(4).hex()}"
    settings = local_settings(**zonal(s3_endpoint, data_root=f"s3://curation/{prefix}"))
    elsewhere = tmp_path / "elsewhere"
    run_config = {
        "cost_guard": {"resources": {"cost_guard": {"config": {"pod_region": None}}}},  # every path `local`
        "io_manager": {"resources": {"io_manager": {"config": {"base_uri": str(elsewhere)}}}},
    }[resource]
    job = build_definitions(load_config(), settings).resolve_job_def(INGEST_SOURCE)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["books"])
        with pytest.raises(dg.DagsterInvalidConfigError) as refused:
            job.execute_in_process(run_config=run_config, partition_key="books", instance=instance)
        assert f"root:resources:{resource}:config" in str(refused.value)
        assert instance.get_runs_count() == 0
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert s3.list_objects_v2(Bucket="curation", Prefix=prefix).get("KeyCount") == 0  # nothing under the data root
    assert list(tmp_path.iterdir()) == []  # nor anywhere else (a local base_uri and the staging dir beside it)


@pytest.mark.parametrize("env", ["local", "k8s"])
def test_no_job_accepts_config_for_any_resource_and_the_deployments_own_run_config_still_validates(env, tmp_path):
    """Every resource of every job (the Launchpad's asset jobs among them) refuses even its deployment's own values
    in a run config; the run config the deployment itself sends (ingest_source's partitioned config, merged with
    `curation run`'s loggers) still validates."""
    cfg = load_config()
    cluster = zonal("http://127.0.0.1:9", data_root=str(tmp_path)) if env == "k8s" else {}  # no S3 call is made
    settings = local_settings(**cluster)
    built = deployment(cfg, settings).resources
    defs = build_definitions(cfg, settings)
    jobs = list(defs.get_repository_def().get_all_jobs())
    assert {j.name for j in jobs} == {"__ASSET_JOB", *JOB_ASSETS}
    for key, resource in built.items():
        # the first field of its own config (io_manager's store and cost guard are resources, not config fields)
        field = next(
            f for f in type(resource).model_fields if not isinstance(getattr(resource, f), dg.ConfigurableResource)
        )
        for job in jobs:
            with pytest.raises(dg.DagsterInvalidConfigError, match=f"root:resources:{key}:config"):
                dg.validate_run_config(job, {"resources": {key: {"config": {field: getattr(resource, field)}}}})
    ingest = defs.resolve_job_def(INGEST_SOURCE)
    sent = ingest.partitioned_config.get_run_config_for_partition_key("books")  # the k8s executor's zone pin of raw
    dg.validate_run_config(ingest, {**sent, "loggers": QUIET})


def test_a_run_gets_exactly_the_resources_the_deployment_built(tmp_path, monkeypatch):
    """What the run sees is the deployment's instance, field for field (the seal must not fall back to the class
    defaults: a cost guard without `pod_region` classifies every path as `local`); the LLM key stays an environment
    reference, read when the run starts."""
    monkeypatch.setenv("CURATION_LLM_API_KEY", "secret-at-run-time")
    settings = local_settings(**zonal("http://127.0.0.1:9", data_root=str(tmp_path), llm_api_key=True))
    built = deployment(load_config(), settings).resources
    assert built["cost_guard"].pod_region == "us-east-1" and built["cost_guard"].pinned  # armed in the cluster
    with dg.build_resources(build_definitions(load_config(), settings).resources) as run:
        for key, resource in built.items():
            assert getattr(run, key).model_dump(exclude={"api_key"}) == resource.model_dump(exclude={"api_key"}), key
        assert run.synth_backend.api_key == "secret-at-run-time"
