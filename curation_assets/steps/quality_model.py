"""quality_model: the asset wrapper of core/quality.py."""

import json

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_assets.steps.common import enforce_transfers, pod, traceable
from curation_assets.core.frames import step_metadata
from resources.classifiers import QualityModel
from resources.cost_guard import CostGuard
from resources.storage import FileSetOutput

from curation_assets.core.quality import *  # FIXME

def build(cfg, params: TrainingParams, version: str) -> dg.AssetsDefinition:
    sources = [*params.reference, *params.background]

    @dg.asset(
        code_version=version,
        op_tags=pod(cfg.thresholds.quality_model.pod),
        group_name="curation",
        ins={"raw": dg.AssetIn(partition_mapping=dg.SpecificPartitionsPartitionMapping(sources))},
        check_specs=[
            dg.AssetCheckSpec(
                "held_out_quality",
                asset="quality_model",
                blocking=True,
                description="held-out ROC AUC of P(hq) reaches min_auc (filtered ranks documents by it)",
            )
        ],
    )
    @traceable
    def quality_model(context: dg.AssetExecutionContext, raw: dict[str, pl.LazyFrame], cost_guard: CostGuard):
        """Files `model.bin` (fastText, labels hq/cc) and `training.json` (recipe, class counts, held-out metrics)."""
        missing = [s for s in sources if s not in raw]
        if missing:
            raise dg.Failure(f"quality_model needs raw of {missing}: materialize them first (job ingest_source)")
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(0)])
        rows = {s: raw[s].select(pl.len()).collect().item() for s in sources}
        docs = pl.concat(
            [presample(raw[s], rows[s], params).with_columns(pl.lit(s).alias("source")).collect() for s in sources]
        )
        train, left_out = training_set(docs, params)
        for label in (HQ, CC):
            if train.filter(~pl.col("held_out") & (pl.col("label") == label)).is_empty():
                raise dg.Failure(f"quality_model: no {label} training documents in {sources}")
        fit = train.filter(~pl.col("held_out"))
        model = QualityModel.train(fasttext_lines(fit), **params.fasttext)
        test = train.filter(pl.col("held_out"))
        metrics = held_out_metrics(test["label"] == HQ, pl.Series(model.score(test["line"].to_list())))
        counts = {
            f"{split}_{label}": train.filter(
                (pl.col("held_out") == (split == "held_out")) & (pl.col("label") == label)
            ).height
            for split in ("train", "held_out")
            for label in (HQ, CC)
        }
        # documents not drawn by the pre-sample (and empty ones) count as not_sampled: the funnel adds up to raw's rows
        drops = {"not_sampled": sum(rows.values()) - docs.height, **left_out}
        report = {"params": params.model_dump(mode="json"), "rows": rows, **counts, **metrics, "left_out": drops}
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
                    **counts,
                    "reference": ", ".join(params.reference),
                    "background": ", ".join(params.background),
                    **transfer,
                },
            ),
        )
        yield dg.AssetCheckResult(
            check_name="held_out_quality",
            passed=metrics["held_out_auc"] >= params.min_auc,
            metadata={
                **{k: metrics[k] for k in ("held_out_auc", "held_out_precision", "held_out_recall")},
                "min_auc": params.min_auc,
            },
        )

    return quality_model
