"""quality_model: the DCLM-style fastText quality classifier (`core/quality.py`), trained on raw of its reference and
background sources, stored as the file set `model.bin` + `training.json`. Checks: `held_out_quality`,
`no_cross_zone_bytes`."""

import json

import dagster as dg
import polars as pl

from curation_assets.core.frames import FileSetOutput
from curation_assets.core.quality import (
    CC,
    HQ,
    TrainingParams,
    class_counts,
    fasttext_lines,
    held_out_metrics,
    presample,
    training_set,
)
from curation_assets.steps.common import enforce_transfers, step
from resources.classifiers import QualityModel
from resources.cost_guard import CostGuard
from resources.metadata import step_metadata


def build(cfg, params: TrainingParams, version: str) -> list:
    """The unpartitioned `quality_model` asset and its checks."""
    sources = [*params.reference, *params.background]

    def held_out_quality(md: dict[str, object]) -> tuple[bool, dict[str, object]]:
        d = md["details"]
        shown = {
            "held_out_auc": md["held_out_auc"],
            **{k: d[k] for k in ("held_out_hq_median", "held_out_cc_median", "held_out_precision", "held_out_recall")},
        }
        bars = {"min_auc": params.min_auc, "min_hq_median": params.min_hq_median, "max_cc_median": params.max_cc_median}
        passed = (
            float(md["held_out_auc"]) >= params.min_auc
            and float(d["held_out_hq_median"]) >= params.min_hq_median
            and float(d["held_out_cc_median"]) <= params.max_cc_median
        )
        return passed, {**shown, **bars}

    description = (
        "held-out ROC AUC of P(hq) reaches min_auc and the classes' median scores separate (filtered cuts by them: "
        "never by noise)"
    )

    @step(
        version,
        cfg.thresholds.quality_model.pod,
        {"held_out_quality": (description, held_out_quality)},
        partitioned=False,
        ins={"raw": dg.AssetIn(partition_mapping=dg.SpecificPartitionsPartitionMapping(sources))},
    )
    def quality_model(context: dg.AssetExecutionContext, raw: dict[str, pl.LazyFrame], cost_guard: CostGuard):
        """Files `model.bin` (fastText, labels hq/cc) and `training.json` (recipe, class counts, held-out metrics)."""
        missing = [s for s in sources if s not in raw]
        if missing:
            raise dg.Failure(f"quality_model needs raw of {missing}: materialize them first (job ingest_source)")
        enforce_transfers(cost_guard, [cost_guard.data_root(0)])
        rows = {s: raw[s].select(pl.len()).collect().item() for s in sources}
        docs = pl.concat(
            [presample(raw[s], rows[s], params).with_columns(pl.lit(s).alias("source")).collect() for s in sources]
        )
        train, left_out = training_set(docs, params)
        for label in (HQ, CC):
            if train.filter(~pl.col("held_out") & (pl.col("label") == label)).is_empty():
                raise dg.Failure(f"quality_model: no {label} training documents in {sources}")
        fit = train.filter(~pl.col("held_out"))
        fasttext = params.fasttext(fit.height)
        model = QualityModel.train(fasttext_lines(fit), **fasttext)
        test = train.filter(pl.col("held_out"))
        metrics = held_out_metrics(test["label"] == HQ, pl.Series(model.score(test["line"].to_list())))
        counts = class_counts(train)
        # documents not drawn by the pre-sample (and empty ones) count as not_sampled: the funnel adds up to raw's rows
        drops = {"not_sampled": sum(rows.values()) - docs.height, **left_out}
        report = {
            "params": params.model_dump(mode="json"),
            "epochs": fasttext["epoch"],
            "rows": rows,
            **counts,
            **metrics,
            "left_out": drops,
        }
        blob = model.to_bytes()
        yield dg.Output(
            FileSetOutput(
                files=[("model.bin", blob), ("training.json", json.dumps(report, indent=1, sort_keys=True).encode())]
            ),
            metadata=step_metadata(
                rows_in=sum(rows.values()),
                rows_out=train.height,
                drops=drops,
                bytes_in=int(docs["text"].str.len_bytes().sum()),
                bytes_out=len(blob),
                config_version=version,
                extra={
                    **metrics,
                    # the number the blocking check bounds, worth a plot across trainings
                    "held_out_auc": dg.MetadataValue.float(metrics["held_out_auc"]),
                    **counts,
                    "epochs": fasttext["epoch"],
                    "reference": ", ".join(params.reference),
                    "background": ", ".join(params.background),
                },
            ),
        )

    return [quality_model]
