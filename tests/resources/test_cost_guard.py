import pytest

from resources.cost_guard import CostGuard, CrossZoneTransferError, Transfer


def test_regional_s3_in_the_same_region_is_free_from_any_zone():
    guard = CostGuard(pod_region="us-east-1", pod_zone="use1-az1")
    plan = guard.enforce([Transfer("s3://corpus/web/part-0.jsonl.zst", 5 * 10**9, region="us-east-1")])
    assert plan.cross_az_bytes == 0 and plan.usd == 0


def test_zonal_bucket_in_another_zone_is_refused_before_any_byte_moves():
    guard = CostGuard(pod_region="us-east-1", pod_zone="use1-az1")
    t = guard.locate("s3://shards--use1-az4--x-s3/web/part-0.parquet")
    assert t.zone == "use1-az4"  # read off the S3 Express directory bucket name
    big = Transfer(t.uri, 10**10, zone=t.zone)
    with pytest.raises(CrossZoneTransferError, match="use1-az4 -> use1-az1"):
        guard.enforce([big])
    assert guard.plan([big]).usd == pytest.approx(0.2)  # $0.01/GB each way, both billed
    assert CostGuard(pod_zone="use1-az4").enforce([big]).cross_az_bytes == 0


def test_cross_region_counts_separately_and_an_allowance_lets_small_moves_through():
    guard = CostGuard(pod_region="us-east-1", max_cross_region_bytes=10**6)
    assert guard.enforce([Transfer("s3://eu/x", 10**5, region="eu-west-1")]).cross_region_bytes == 10**5
    with pytest.raises(CrossZoneTransferError):
        guard.enforce([Transfer("s3://eu/x", 10**7, region="eu-west-1")])


def test_local_guard_sees_no_zones():
    assert CostGuard().enforce([Transfer("/data/x", 10**12, zone="use1-az4")]).cross_az_bytes == 0
