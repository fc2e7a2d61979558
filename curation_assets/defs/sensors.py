"""Automation: landing-zone sensors, declarative conditions and the sensor that evaluates them.

- `landing_<zone>` sensors list a landing zone (local directory or `s3://` prefix, via dagster-aws `get_objects`),
  register every new `<zone>/<source>/` subdirectory as a `source` partition and request an `ingest_source` run for
  exactly the sources that received new shards. The cursor is the newest modification time seen, minus an overlap:
  S3 `LastModified` has one-second resolution and `get_objects` compares strictly, so an object written in the same
  second as the cursor but after the listing would otherwise be missed. The cursor also keeps the keys it has already
  requested inside that window, so re-listed objects request nothing; the run key (source + the set of new shards)
  is a second guard, since Dagster drops a run request whose key it has seen.
- Downstream assets follow their upstream (`eager`); `filtered`, `mixed` and `tokenized` additionally wait until every
  blocking check of their upstream has passed, so a quality model below its held-out bar is not used and a failed
  drop-rate or cost check holds the mixture back.
"""

import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster_aws.s3.sensor import get_objects

from curation_assets.steps.common import source_partitions
from curation_assets.config import SOURCE_NAME, CurationConfig, LandingZone
from resources.storage import ObjectStore

OVERLAP = timedelta(seconds=2)
LANDING_TAG = "curation/landing-zone"


def list_landing(zone_uri: str, since: datetime | None, store: ObjectStore) -> list[tuple[str, str, datetime]]:
    """(source, shard key, modified) of every shard under `<zone>/<source>/` modified after `since`."""
    out = []
    if zone_uri.startswith("s3://"):
        bucket, _, prefix = zone_uri.removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        for o in get_objects(bucket, prefix, since_last_modified=since, client=store._s3()):
            source, _, shard = o["Key"][len(prefix) :].partition("/")
            if shard:
                out.append((source, f"{o['Key']}@{o['ETag']}", o["LastModified"]))
        return out
    for root, _, files in os.walk(zone_uri):
        rel = os.path.relpath(root, zone_uri)
        if rel == ".":
            continue
        for f in files:
            path = os.path.join(root, f)
            st = os.stat(path)
            modified = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
            if since is None or modified > since:
                out.append((rel.split(os.sep)[0], f"{path}@{st.st_size}:{st.st_mtime_ns}", modified))
    return out


def landing_sensor(zone: LandingZone, zone_uri: str, job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"landing_{zone.name}",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"ingests the sources that receive new shards under {zone.uri}",
    )
    def _sensor(context: dg.SensorEvaluationContext, store: ObjectStore):
        cursor = json.loads(context.cursor) if context.cursor else {}
        since = datetime.fromisoformat(cursor["since"]) - OVERLAP if "since" in cursor else None
        seen = set(cursor.get("seen", []))  # keys already requested inside the overlap window
        listed = [x for x in list_landing(zone_uri, since, store) if x[0] and not x[0].startswith(".")]
        invalid = sorted({x[0] for x in listed if not re.fullmatch(SOURCE_NAME, x[0])})
        if invalid:  # never registered as partitions: raw would refuse them anyway (config.check_source_name)
            context.log.warning(f"{zone.uri}: ignoring folders that are not source names: {invalid}")
            listed = [x for x in listed if x[0] not in invalid]
        landed = [x for x in listed if x[1] not in seen]
        if not landed:
            return dg.SkipReason(f"nothing new under {zone.uri}")
        by_source: dict[str, list[str]] = {}
        for source, key, _ in landed:
            by_source.setdefault(source, []).append(key)
        known = set(context.instance.get_dynamic_partitions(source_partitions.name))
        new = sorted(set(by_source) - known)
        requests = [
            dg.RunRequest(
                run_key=f"{source}:{hashlib.sha256(json.dumps(sorted(keys)).encode()).hexdigest()[:16]}",
                partition_key=source,
                tags={LANDING_TAG: zone.name},
            )
            for source, keys in sorted(by_source.items())
        ]
        newest = max(m for _, _, m in listed)
        window = [k for _, k, m in listed if m >= newest - OVERLAP]
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[source_partitions.build_add_request(new)] if new else [],
            cursor=json.dumps({"since": newest.isoformat(), "seen": sorted(window)}),
        )

    return _sensor


def landing_sensors(cfg: CurationConfig, job) -> list[dg.SensorDefinition]:
    return [landing_sensor(z, cfg.resolve_uri(z.uri), job) for z in cfg.sources.landing_zones]


# filtered waits for the quality model's held_out_quality check; the fan-in for every source's checks
GATED = ("filtered", "mixed", "tokenized")


def with_automation(assets: list[dg.AssetsDefinition], freshness: dg.FreshnessPolicy) -> list[dg.AssetsDefinition]:
    """raw stays manual/sensor-driven; every later step follows its upstream; the fan-in waits for upstream checks.
    Every asset gets the freshness policy (the schedules rebuild daily; thresholds.yaml `freshness`)."""
    follow = dg.AutomationCondition.eager()
    gated = follow & dg.AutomationCondition.all_deps_blocking_checks_passed()

    def condition(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        spec = spec.replace_attributes(freshness_policy=spec.freshness_policy or freshness)
        if name == "raw":
            return spec
        return spec.replace_attributes(automation_condition=gated if name in GATED else follow)

    return dg.map_asset_specs(condition, assets)


automation_sensor = dg.AutomationConditionSensorDefinition(
    "curation_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="evaluates the assets' automation conditions",
)
