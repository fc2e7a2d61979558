"""curation: a Dagster code location that curates raw text sources into a tokenized pre-training mixture."""

from curation_assets.definitions import defs

__all__ = ["defs"]
