import pytest

from curation_assets.config import load_config, zone_of
from resources.cost_guard import CostGuard, CrossZoneTransferError, Transfer

PRICES = load_config().costs.model_dump()  # the bundled price table


def guard(**kw) -> CostGuard:
    return CostGuard(pod_region="us-east-1", pod_zone="use1-az1", **{**PRICES, **kw})


def test_same_zone_and_regional_s3_through_a_gateway_are_free():
    plan = guard().enforce(
        [
            Transfer("s3://shards--use1-az1--x-s3/a", 10**10),
            Transfer("s3://corpus/web/part-0.jsonl.zst", 5 * 10**9, region="us-east-1"),
        ]
    )
    assert dict(plan.bytes_by_class) == {"same_zone": 10**10, "regional_gateway": 5 * 10**9} and plan.usd == 0


def test_directory_bucket_in_another_zone_is_refused_with_source_zones_bytes_and_dollars():
    uri = "s3://shards--use1-az4--x-s3/web/part-0.parquet"
    assert zone_of(uri) == "use1-az4"
    with pytest.raises(CrossZoneTransferError) as e:
        guard().enforce([Transfer(uri, 10**10, label="source web")])
    assert "source web: 10000000000 B cross_az (us-east-1/use1-az4 -> us-east-1/use1-az1), about $0.2000" in str(
        e.value
    )
    assert guard().plan([Transfer(uri, 10**10)]).usd == pytest.approx(0.2)  # $0.01/GB each way, both billed


def test_inter_region_is_refused_and_nat_is_priced():
    with pytest.raises(CrossZoneTransferError, match="cross_region"):
        guard().enforce([Transfer("s3://eu-bucket/x", 10**9, region="eu-west-1")])
    nat = guard().enforce([Transfer("s3://corpus/x", 10**10, via="nat")])
    assert nat.bytes_by_class["regional_nat"] == 10**10 and nat.usd == pytest.approx(0.45)


def test_budget_and_override():
    with pytest.raises(CrossZoneTransferError, match="exceeds the raw budget"):
        guard(step_budgets_usd={"raw": 0.1}).enforce([Transfer("s3://corpus/x", 10**10, via="nat")], step="raw")
    plan = guard().enforce([Transfer("s3://b--use1-az4--x-s3/x", 10**9)], override="one-off migration, ticket 42")
    assert plan.cross_az_bytes == 10**9  # allowed, and still measured


def test_local_guard_sees_no_zones():
    assert CostGuard(**PRICES).enforce([Transfer("s3://b--use1-az4--x-s3/x", 10**12)]).cross_az_bytes == 0
    assert guard().classify(Transfer("/data/x", 10)) == "local"


def test_a_pinned_step_runs_where_its_zonal_data_is_and_data_in_two_zones_is_refused():
    pinned = CostGuard(pod_region="us-east-1", pinned=True, **PRICES)
    az4 = [Transfer("s3://src--use1-az4--x-s3/a", 10**9), Transfer("s3://out--use1-az4--x-s3/b", 0)]
    assert pinned.step_zone(az4) == ("use1-az4", ["use1-az4"])
    assert pinned.enforce([*az4, Transfer("s3://corpus/c", 10**9)]).bytes_by_class == {
        "same_zone": 10**9,
        "regional_gateway": 10**9,
    }
    split = [Transfer("s3://src--use1-az6--x-s3/a", 10**9, label="source web"), az4[1]]
    with pytest.raises(CrossZoneTransferError, match=r"2 zones \(use1-az4, use1-az6\): no pod is local to all of it"):
        pinned.enforce(split)
    # The deployment's own pin is one more constraint, not a default that zonal data may contradict.
    with pytest.raises(CrossZoneTransferError, match=r"use1-az1, use1-az4"):
        CostGuard(pod_region="us-east-1", pod_zone="use1-az1", pinned=True, **PRICES).enforce(az4)
    # Unpinned and in an unknown zone, a pod reads zonal data across an AZ unless luck says otherwise.
    assert CostGuard(pod_region="us-east-1", **PRICES).classify(az4[0]) == "cross_az"
