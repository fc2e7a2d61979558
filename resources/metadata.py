"""The one builder of the metadata every step emits (the IO manager for frame outputs, the file-set steps for
theirs): the same keys for every asset."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from curation_assets.core.frames import Added, funnel_markdown


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
) -> dict[str, object]:
    """The metadata every step emits, with the same keys: the only builder of step metadata. `funnel` is a
    Markdown table (see funnel_markdown); `tokens` and `tokens_dropped_<reason>` appear when the rows carry
    `n_tokens`; `rows_added` / `tokens_added` when the step added rows that are no input document kept
    (`core.frames.Added`): the drop rate is over input documents, never negative."""
    md: dict[str, object] = {
        "rows_in": int(rows_in),
        "rows_out": int(rows_out),
        "rows_dropped": int(sum(drops.values())),
        "drop_rate": round(1 - (rows_out - (added.rows if added else 0)) / rows_in, 6) if rows_in else 0.0,
        "bytes_in": int(bytes_in),
        "bytes_out": int(bytes_out),
        "config_version": config_version,
    }
    md.update({f"dropped_{reason}": int(n) for reason, n in sorted(drops.items())})
    if tokens_out is not None:
        md["tokens"] = int(tokens_out)
    md.update({f"tokens_dropped_{reason}": int(n) for reason, n in sorted((tokens_dropped or {}).items())})
    if added and added.rows:
        md["rows_added"], md["tokens_added"] = int(added.rows), int(added.tokens)
    funnel = funnel_markdown(rows_in, rows_out, drops, tokens_out, tokens_dropped or {}, added)
    md["funnel"] = dg.MetadataValue.md(funnel)
    md.update(extra or {})
    return md
