"""Automation: landing-zone sensors, declarative conditions and the sensor that evaluates them.

- `landing_<zone>` sensors list a landing zone (local directory or `s3://` prefix, via dagster-aws `get_objects`),
  register every new `<zone>/<source>/` subdirectory as a `source` partition and request an `ingest_source` run for
  exactly the sources that received new shards. The cursor is the newest modification time seen, minus an overlap:
  S3 `LastModified` has one-second resolution and `get_objects` compares strictly, so an object written in the same
  second as the cursor but after the listing would otherwise be missed. The cursor also keeps the keys it has already
  requested inside that window, so re-listed objects request nothing; the run key (source + the set of new shards)
  is a second guard, since Dagster drops a run request whose key it has seen.
- Downstream assets follow their upstream (`FOLLOW`: `eager`, on a change of the upstream's data version, not on any
  new materialization: the IO manager reports the content hash of what is current as the data version, so a rerun
  that rewrote the same bytes cascades nowhere); `filtered`, `mixed` and `tokenized` additionally wait until every
  blocking check of their upstream has passed (`GATED_FOLLOW`), so a quality model below its held-out bar is not used
  and a failed drop-rate or cost check holds the mixture back.
- `register_sources` adds a partition per configured source and deletes the partitions that name no source
  (`curation_assets.sources.stale`: a key created in the UI that is neither configured nor landed).
"""

import hashlib
import json
import re
from datetime import datetime, timedelta

import dagster as dg

from curation_assets import sources
from curation_assets.config import SOURCE_NAME, CurationConfig, LandingZone
from curation_assets.steps.common import source_partitions
from resources.io_manager import ParquetIOManager
from resources.store import ObjectStore

OVERLAP = timedelta(seconds=2)
LANDING_TAG = "curation/landing-zone"


def list_landing(zone_uri: str, since: datetime | None, store: ObjectStore) -> list[tuple[str, str, datetime]]:
    """(source, shard key, modified) of every shard under `<zone>/<source>/` modified after `since`. The key names
    the shard and its content (`Store.list_since`'s token: `path@size:mtime_ns` locally, `Key@ETag` on S3), so a
    rewritten shard is new again."""
    out = []
    for obj in store.list_since(zone_uri, since):
        source, _, shard = obj.key.partition("/")
        if shard:  # files directly under the zone belong to no source
            out.append((source, obj.token, obj.modified))
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

# eager(), with "a dependency updated" narrowed to "a dependency's data version changed" (or it will be requested on
# this tick); the parent's run having also materialized this asset still does not count, as in eager().
_DEPS_CHANGED = dg.AutomationCondition.any_deps_match(
    (dg.AutomationCondition.data_version_changed() & ~dg.AutomationCondition.executed_with_root_target()).with_label(
        "data_version_changed_without_root"
    )
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_data_version_changed")
FOLLOW = dg.AutomationCondition.eager().replace("any_deps_updated", _DEPS_CHANGED).with_label("eager_on_new_data")
GATED_FOLLOW = FOLLOW & dg.AutomationCondition.all_deps_blocking_checks_passed()


def with_automation(assets: list[dg.AssetsDefinition], freshness: dg.FreshnessPolicy) -> list[dg.AssetsDefinition]:
    """raw stays manual/sensor-driven; every later step follows its upstream; the fan-in waits for upstream checks.
    Every asset gets the freshness policy (the schedules rebuild daily; thresholds.yaml `freshness`)."""

    def condition(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        spec = spec.replace_attributes(freshness_policy=spec.freshness_policy or freshness)
        if name == "raw":
            return spec
        return spec.replace_attributes(automation_condition=GATED_FOLLOW if name in GATED else FOLLOW)

    return dg.map_asset_specs(condition, assets)


automation_sensor = dg.AutomationConditionSensorDefinition(
    "curation_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="evaluates the assets' automation conditions",
)


def register_sources_sensor(cfg: CurationConfig, job) -> dg.SensorDefinition:
    @dg.sensor(
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="adds a `source` partition for every source in the sources config and ingests new ones; deletes "
        "partitions that name no configured or landed source (and hold no protected output)",
    )
    def register_sources(
        context: dg.SensorEvaluationContext, io_manager: dg.ResourceParam[ParquetIOManager]
    ) -> dg.SensorResult | dg.SkipReason:
        known = context.instance.get_dynamic_partitions(source_partitions.name)
        new = [s for s in cfg.source_names if s not in known]
        # a key created in the UI for no source: its runs fail in raw, and the nightly schedules would try it daily
        bogus = sources.stale(known, cfg, io_manager.store, io_manager.base_uri)
        if bogus:
            context.log.warning(f"deleting source partitions that are neither configured nor landed: {bogus}")
        if not new and not bogus:
            return dg.SkipReason("every configured source is registered, and every partition names a source")
        return dg.SensorResult(
            dynamic_partitions_requests=[
                *([source_partitions.build_add_request(new)] if new else []),
                *([source_partitions.build_delete_request(bogus)] if bogus else []),
            ],
            run_requests=[dg.RunRequest(run_key=f"register:{s}", partition_key=s) for s in new],
        )

    return register_sources
