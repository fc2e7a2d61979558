"""The one builder of the metadata every step emits (the IO manager for frame outputs, the file-set steps for
theirs): the same few keys for every asset, everything else in one `details` value.

A step page shows MAX_KEYS keys at most: `rows_in`, `rows_out`, `drop_rate`, `tokens` (when the rows carry
`n_tokens`; `tokens_est` instead when the step estimated them: raw), `bytes_out`, `config_version`, `funnel`
(documents and tokens kept and dropped per reason, one table), `uri` (the version's folder), `cost` (bytes moved per
network path and their price, one table), `details` (JSON: every other number, for the checks and for `curation
table`), and at most MAX_SHOWN step-specific keys (a table or a number worth plotting, e.g. filtered's rule value
quantiles). Dagster plots every numeric key across materializations, so only series that say something are
top-level numbers. A traced run adds its `trace` links.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg

from curation_assets.core.frames import Added, TokenEstimate, funnel_markdown

if TYPE_CHECKING:
    from resources.cost_guard import TransferPlan

MAX_KEYS = 12
MAX_SHOWN = 1
# `extra` key of the Transfers a step made besides reading and writing the data root (raw's source reads): the IO
# manager prices them with the data root's in the one `cost` table
MOVED = "moved"


def value(v: object) -> object:
    """A metadata entry's plain value (a MetadataValue's `.value`)."""
    return getattr(v, "value", v)


def step_metadata(
    *,
    rows_in: int,
    rows_out: int,
    drops: Mapping[str, int],
    bytes_in: int,
    bytes_out: int,
    config_version: str,
    tokens_out: int | None = None,
    tokens_dropped: Mapping[str, int] | None = None,
    extra: Mapping[str, object] | None = None,
    added: Added | None = None,
    bytes_dropped: Mapping[str, int] | None = None,
    estimate: TokenEstimate | None = None,
) -> dict[str, object]:
    """The metadata every step emits (see the module docstring). `extra` entries that are a `dg.MetadataValue` are
    shown (at most MAX_SHOWN: a ValueError otherwise); plain ones go into `details`, with `rows_dropped`,
    `bytes_in`, `drops`, `bytes_dropped` (`core.frames.drop_bytes`) and `tokens_dropped` (reason -> count) and
    `rows_added` / `tokens_added` when the step added rows that are no input document kept (`core.frames.Added`):
    the drop rate is over input documents, never negative. Tokens the step did not count but estimated
    (`core.frames.TokenEstimate`) are never `tokens` or `tokens_dropped`: they are `tokens_est` (the kept rows'),
    `details["tokens_estimated"]` (with the sample they scale) and the funnel's `~1.2M (est.)` cells."""
    shown = {k: v for k, v in (extra or {}).items() if isinstance(v, dg.MetadataValue)}
    if len(shown) > MAX_SHOWN:
        raise ValueError(f"a step shows at most {MAX_SHOWN} keys of its own, not {sorted(shown)}")
    details: dict[str, object] = {
        "rows_dropped": int(sum(drops.values())),
        "bytes_in": int(bytes_in),
        "drops": {reason: int(n) for reason, n in sorted(drops.items())},
    }
    if bytes_dropped:
        details["bytes_dropped"] = {reason: int(n) for reason, n in sorted(bytes_dropped.items())}
    if tokens_dropped:
        details["tokens_dropped"] = {reason: int(n) for reason, n in sorted(tokens_dropped.items())}
    if estimate is not None:
        details["tokens_estimated"] = estimate.details()
    if added and added.rows:
        details["rows_added"], details["tokens_added"] = int(added.rows), int(added.tokens)
    details |= {k: v for k, v in (extra or {}).items() if k not in shown}
    md: dict[str, object] = {
        "rows_in": int(rows_in),
        "rows_out": int(rows_out),
        "drop_rate": round(1 - (rows_out - (added.rows if added else 0)) / rows_in, 6) if rows_in else 0.0,
    }
    if tokens_out is not None:
        md["tokens"] = int(tokens_out)
    elif estimate is not None and estimate.kept is not None:
        md["tokens_est"] = int(estimate.kept)
    return {
        **md,
        "bytes_out": int(bytes_out),
        "config_version": config_version,
        "funnel": dg.MetadataValue.md(
            funnel_markdown(rows_in, rows_out, drops, tokens_out, tokens_dropped or {}, added, estimate)
        ),
        **shown,
        "details": dg.MetadataValue.json(details),
    }


def published(
    md: Mapping[str, object], *, uri: str, cost: TransferPlan, override: str, details: Mapping[str, object]
) -> dict[str, object]:
    """`md` (a step's metadata) as the IO manager publishes it: + `uri`, `cost` (the one table of what the step
    moved, measured) and `details` merged with `details` and the cost's numbers (`details["cost"]`: bytes per
    path class, cross-zone bytes, estimated USD, the run's transfer override)."""
    merged = {**(value(md.get("details")) or {}), **details, "cost": {**cost.metadata(), "transfer_override": override}}
    return {
        **md,
        "uri": dg.MetadataValue.path(uri),
        "cost": dg.MetadataValue.md(cost.markdown()),
        "details": dg.MetadataValue.json(merged),
    }
