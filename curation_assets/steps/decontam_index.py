"""decontam_index: the n-gram hashes of every item of the configured evaluation sets (`core/decontam.py`), one row per
item, built once per eval-set version (its code version hashes the config and the eval files' contents); `deduped`
drops the documents that share an n-gram with it. Without eval sets it is empty. Checks: `eval_sets_indexed`,
`no_cross_zone_bytes`."""

import dagster as dg
import polars as pl

from curation_assets.core.decontam import index_items
from curation_assets.core.frames import DROP_REASON, StepOutput
from curation_assets.core.readers import detect_format, read_shard
from curation_assets.steps.common import enforce_transfers, step
from resources.cost_guard import CostGuard

ITEM_SCHEMA = {"eval_set": pl.String, "file": pl.String, "item": pl.Int64, "text": pl.String}
DROPPED_SCHEMA = {
    "eval_set": pl.String,
    "file": pl.String,
    "item": pl.Int64,
    DROP_REASON: pl.String,
    "detail": pl.String,
}
SHORT, UNREADABLE = "shorter_than_ngram", "unreadable_item"


def read_eval_file(name: str, path: str, text_field: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`eval_set, file, item, text` in file order, its unreadable records as DROPPED_SCHEMA rows) of one eval file,
    read by raw's reader. Eval items carry no id of their own: the text field stands in for the id the reader
    requires (so a record without text is refused as `missing_id`, named in `detail`)."""
    with open(path, "rb") as f:
        shard = read_shard(
            f, fmt=detect_format(path), source=name, shard=path, text_field=text_field, id_field=text_field
        )
    items = shard.docs.select(
        eval_set=pl.lit(name), file=pl.lit(path), item=pl.int_range(pl.len(), dtype=pl.Int64), text="text"
    )
    bad = shard.quarantine.select(
        eval_set=pl.lit(name),
        file=pl.lit(path),
        item=pl.lit(None, pl.Int64),
        drop_reason=pl.lit(UNREADABLE),
        detail=pl.format("{}: {}: {}", "location", "drop_reason", "detail"),
    )
    return items, bad.cast(DROPPED_SCHEMA)


def build(cfg, version: str) -> list:
    """The unpartitioned `decontam_index` asset and its checks."""
    t = cfg.thresholds.decontam_index
    params = t.default
    names = [s.name for s in params.eval_sets]

    def eval_sets_indexed(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        indexed, drops = md["details"]["indexed_items"], md["details"]["drops"]
        short = sorted(s for s in names if indexed.get(s, 0) < params.min_items)
        return not short and not drops.get(UNREADABLE), {
            "sets_below_min_items": ", ".join(short),
            "min_items": params.min_items,
            UNREADABLE: drops.get(UNREADABLE, 0),
        }

    description = "every eval set indexes at least min_items items, and every record of its files is readable"

    @step(version, t.pod, {"eval_sets_indexed": (description, eval_sets_indexed)}, partitioned=False)
    def decontam_index(context: dg.AssetExecutionContext, cost_guard: CostGuard):
        """One row per eval item of at least `ngram` words: eval_set, file, item (its row in the file), ngram,
        n_words, hashes (its distinct n-gram hashes, sorted); shorter and unreadable items are the dropped rows."""
        enforce_transfers(cost_guard, [cost_guard.data_root(0)])  # eval files are local: only the write moves
        files = cfg.eval_files  # the files whose contents the code version hashed
        read = [read_eval_file(s.name, f, s.text_field) for s in params.eval_sets for f in files[s.name]]
        items = pl.concat([pl.DataFrame(schema=ITEM_SCHEMA), *(r[0] for r in read)])
        rows = index_items(items, params.ngram)
        kept = rows.filter(pl.col("n_words") >= params.ngram)
        short = rows.filter(pl.col("n_words") < params.ngram).select(
            "eval_set", "file", "item", drop_reason=pl.lit(SHORT), detail=pl.format("{} words", "n_words")
        )
        dropped = pl.concat([short.cast(DROPPED_SCHEMA), *(r[1] for r in read)])
        indexed = dict(kept.group_by("eval_set").len().iter_rows())
        ngrams = dict(kept.explode("hashes").group_by("eval_set").agg(pl.col("hashes").n_unique()).iter_rows())
        yield dg.Output(
            StepOutput(
                kept=kept,
                dropped=dropped,
                rows_in=items.height + sum(r[1].height for r in read),
                bytes_in=int(items["text"].str.len_bytes().sum() or 0),
                config_version=version,
                extra={
                    "eval_sets": names,
                    "ngram": params.ngram,
                    "indexed_items": {s: indexed.get(s, 0) for s in names},
                    "distinct_ngrams": {s: ngrams.get(s, 0) for s in names},
                    "files": files,
                },
            )
        )

    return [decontam_index]
