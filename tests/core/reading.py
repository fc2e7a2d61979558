"""Helpers of the reader tests (tests/core/test_readers.py, test_warc.py)."""

import json
from pathlib import Path

import polars as pl

from curation_assets.core.frames import DOC_SCHEMA, QUARANTINE_SCHEMA
from curation_assets.core.readers import ShardResult, detect_format, read_shard


def read(path: Path, **kwargs) -> ShardResult:
    with path.open("rb") as fh:
        return read_shard(fh, fmt=detect_format(path.name), source="test", shard=path.name, **kwargs)


def ids(result: ShardResult) -> list[str]:
    return [json.loads(m)["id"] for m in result.docs["meta"]]


def check_contract(result: ShardResult) -> None:
    assert result.docs.schema == pl.Schema(DOC_SCHEMA)
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    lost = result.quarantine["records_lost"]
    assert result.records_seen == result.docs.height + lost.sum()
    assert (lost.drop_nulls() >= 1).all() and (result.quarantine["bytes_lost"] >= 0).all()
    if lost.null_count():  # left for the caller to estimate only when no byte of the shard could be read
        assert result.quarantine["bytes_lost"].sum() == result.bytes_read
    for text in result.docs["text"]:
        text.encode("utf-8")
        assert "\x00" not in text and text.strip()
    for column in ("detail", "record_id", "location", "drop_reason"):
        for value in result.quarantine[column].drop_nulls():
            value.encode("utf-8")
    assert result.quarantine["drop_reason"].null_count() == 0
