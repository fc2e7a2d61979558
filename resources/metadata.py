"""The one builder of the metadata every step emits (the IO manager for frame outputs, the file-set steps for
theirs): the same keys for every asset."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from curation_assets.core.frames import funnel_markdown


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
) -> dict[str, object]:
    """The metadata every step emits, with the same keys: the only builder of step metadata. `funnel` is a
    Markdown table (see funnel_markdown); `tokens` and `tokens_dropped_<reason>` appear when the rows carry
    `n_tokens`."""
    md: dict[str, object] = {
        "rows_in": int(rows_in),
        "rows_out": int(rows_out),
        "rows_dropped": int(sum(drops.values())),
        "drop_rate": round(1 - rows_out / rows_in, 6) if rows_in else 0.0,
        "bytes_in": int(bytes_in),
        "bytes_out": int(bytes_out),
        "config_version": config_version,
    }
    md.update({f"dropped_{reason}": int(n) for reason, n in sorted(drops.items())})
    if tokens_out is not None:
        md["tokens"] = int(tokens_out)
    md.update({f"tokens_dropped_{reason}": int(n) for reason, n in sorted((tokens_dropped or {}).items())})
    md["funnel"] = dg.MetadataValue.md(funnel_markdown(rows_in, rows_out, drops, tokens_out, tokens_dropped or {}))
    md.update(extra or {})
    return md
