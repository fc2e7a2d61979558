"""A step's scratch folder: intermediate files its Ray tasks exchange during one run (dedup_clusters' shuffle), written
and read by the tasks themselves, so the rows never travel through the step's process. Where it is:
`ParquetIOManager.scratch_uri` (beside a local data root, never under it; `_scratch/` of an S3 root). The step deletes
it when it is done (`clear`), failed or not."""

from __future__ import annotations

import io
from dataclasses import dataclass

import polars as pl
import pyarrow.parquet as pq

from curation_assets.core.frames import read_parquet_bytes
from resources.store import ObjectStore


@dataclass(frozen=True)
class Scratch:
    """A run's scratch folder, readable and writable by every task (picklable: it travels with the tasks)."""

    uri: str
    endpoint_url: str | None
    region: str

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(endpoint_url=self.endpoint_url, region=self.region)

    def get(self, uri: str, columns: list[str] | None = None) -> pl.DataFrame:
        """A stored part (a step's input read by its tasks), every page's CRC verified."""
        return read_parquet_bytes(self.store.read_bytes(uri), columns=columns)

    def write(self, name: str, frame: pl.DataFrame, by: str) -> tuple[str, int]:
        """Write `frame` (sorted by `by`) with one row group per value of `by`, so a reader filtering on it reads only
        its own; returns the file's URI and size."""
        buf = io.BytesIO()
        with pq.ParquetWriter(buf, frame.to_arrow().schema, compression="zstd") as writer:
            for group in frame.partition_by(by, maintain_order=True):
                writer.write_table(group.to_arrow())
        uri = f"{self.uri}/{name}"
        data = buf.getvalue()
        self.store.write_bytes(uri, data)
        return uri, len(data)

    def read(self, uris: list[str], by: str, value: int) -> pl.DataFrame:
        """The rows with `by == value` of scratch files written by `write` (row groups of other values skipped)."""
        opts = self.store.storage_options(uris[0])
        return pl.scan_parquet(uris, storage_options=opts).filter(pl.col(by) == value).collect()

    def clear(self) -> None:
        """Delete the folder and everything in it."""
        self.store.delete_prefix(self.uri)
