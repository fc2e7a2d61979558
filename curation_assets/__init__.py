"""curation: a Dagster code location that curates raw text sources into a tokenized pre-training mixture.

Read in this order: `core/` (pure: polars, numpy, no Dagster, no storage), `steps/` (one thin asset module per step),
`defs/` (jobs, schedules, sensors, executor: the code location `curation_assets.defs`), `config/` (the YAML and its
pydantic models), `cli.py` (the `curation` command). Importing this package loads nothing else, so `curation --help`
stays fast.
"""
