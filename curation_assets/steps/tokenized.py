"""tokenized: the mixture as Megatron-LM indexed shards, `documents.parquet` and `manifest.json` (`core/tokens.py`,
format `core/megatron.py`), in the recipe's tokenizer (a tiktoken encoding or a tokenizer.json: the `tokenizer`
resource, which also counted the mixture's `n_tokens` in `filtered`). Checks (they re-read what was persisted):
`index_matches_tokens`, `ids_in_range`, `sample_decodes`, `no_cross_zone_bytes`."""

import json
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl

from curation_assets.config import version_of
from curation_assets.core import megatron
from curation_assets.core.frames import FileSetOutput, range_frames, read_parquet_bytes, row_ranges
from curation_assets.core.tokens import (
    BATCH,
    FORMAT,
    decode_sample,
    manifest_header,
    sample_positions,
    shard_sizes,
    shard_table,
    token_files,
    verify_shards,
)
from curation_assets.steps.common import (
    enforce_transfers,
    freshness_policy,
    own_materialization,
    run_tasks,
    step,
)
from resources.cost_guard import CostGuard
from resources.engine import Progress, RayEngine
from resources.metadata import step_metadata
from resources.store import ObjectStore
from resources.tokenizer import TokenizerResource, task_tokenizer

# evaluated by the step's body once its files are persisted (it re-reads them); no_cross_zone_bytes by `step`
CHECKS = {
    "index_matches_tokens": ("every .idx agrees with its .bin and the manifest; every sequence ends in EOT", None),
    "ids_in_range": ("every token id is below the vocabulary size", None),
    "sample_decodes": ("a seeded sample of documents decodes back to its text", None),
}


@dataclass(frozen=True)
class EncodeTask:
    """A batch of the mixture's texts: the unit of work of `tokenized` (a Ray task)."""

    texts: list[str]
    encoding: str  # a tiktoken name or a tokenizer.json's absolute path (`TokenizerResource.encoding`)


def encode_task(task: EncodeTask) -> tuple[list[np.ndarray], int]:
    """The ids of one range of documents (no template tokens, special-token text as text), in order; runs in a Ray
    worker."""
    return task_tokenizer(task.encoding).encode_arrays(task.texts), len(task.texts)


# A task's row range: BATCH documents or BATCH_BYTES of text, whichever comes first (`core.frames.row_ranges`), so
# the tasks are of like sizes (1,024 long documents would make one task four times the others) and there are enough
# of them for every worker.
BATCH_BYTES = 2**20
COUNT_CHECK_DOCS = 256


def miscounted(tokenizer: TokenizerResource, mixed: pl.LazyFrame, n_tokens: np.ndarray) -> tuple[int, int]:
    """(documents whose `n_tokens` differ from this tokenizer's count of their text, documents compared), over the
    mixture's first COUNT_CHECK_DOCS documents, in the driver before any task: the shard counts are predicted from
    `n_tokens`, and the mixture was weighted by them: they must be the recipe tokenizer's counts of the text as it is
    (filtered counts them once its edits are done). Another tokenizer miscounts nearly every document, so a few
    hundred tell; every document's count is then checked against the shards (`index_matches_tokens`)."""
    head = mixed.select("text").head(COUNT_CHECK_DOCS).collect()["text"].to_list()
    counts = np.array([a.size for a in tokenizer.encode_arrays(head)], dtype=np.int64)
    return int((counts != n_tokens[: len(head)]).sum()), len(head)


def build(cfg, version: str) -> list:
    """The fan-in `tokenized` asset and its checks."""
    recipe, spec = cfg.recipe, cfg.tokenizer
    shard_tokens = cfg.thresholds.tokenized.default.shard_tokens

    @step(
        version,
        cfg.thresholds.tokenized.pod,
        CHECKS,
        partitioned=False,
        freshness_policy=freshness_policy(cfg.thresholds.freshness),
        metadata={"recipe": recipe.name, "format": FORMAT},
    )
    def tokenized(
        context: dg.AssetExecutionContext,
        mixed: pl.LazyFrame,
        tokenizer: TokenizerResource,
        cost_guard: CostGuard,
        engine: RayEngine,
        store: ObjectStore,
    ):
        """The mixture as training input: Megatron-LM `.bin`/`.idx` token shards, a table of which document lies
        where (documents.parquet) and manifest.json (tokenizer, counts, checksums)."""
        # The mixture's text is streamed batch by batch; only its per-document columns are held (about 100 bytes a
        # document), so memory does not grow with the mixture's text.
        docs = mixed.select("doc_id", "source", "component", "epoch", "n_tokens").collect()
        sizes = mixed.select(pl.col("text").str.len_bytes()).collect().to_series()
        text_bytes = int(sizes.sum() or 0)
        ranges = row_ranges(sizes, BATCH, BATCH_BYTES)
        enforce_transfers(cost_guard, [cost_guard.data_root(text_bytes)])

        if tokenizer.encoding != spec.encoding or tokenizer.sha256 != spec.sha256:
            raise dg.Failure(
                f"the tokenizer resource ({tokenizer.encoding}, sha256 {tokenizer.sha256}) is not the recipe's "
                f"({spec.encoding}, sha256 {spec.sha256}): a tokenizer.json edited after the code location loaded "
                "takes effect when it reloads"
            )
        n_tokens = docs["n_tokens"].to_numpy()
        wrong, compared = miscounted(tokenizer, mixed, n_tokens)
        if wrong:
            raise dg.Failure(
                f"the mixture's n_tokens are not {spec.name}'s counts of its text ({wrong} of the first {compared} "
                "documents differ): filtered counted them with another tokenizer (materialize from filtered again), or "
                "a step changed text after counting"
            )

        def encoded(progress: Progress | None = None) -> Iterator[list[np.ndarray]]:
            texts = range_frames(mixed.select("text").collect_batches(), ranges)
            tasks = (EncodeTask(batch["text"].to_list(), tokenizer.encoding) for batch in texts)
            labels = (f"documents {start}-{start + n - 1}" for start, n in ranges)
            return run_tasks(context, engine, encode_task, tasks, labels, progress)

        # Dagster takes an output's metadata before the IO manager consumes the shard stream, so the counts are
        # predicted from `n_tokens` (counted by the same tokenizer in `filtered`); the check asserts the shards match.
        lengths = n_tokens + 1
        header = manifest_header(
            tokenizer=spec.name,
            tokenizer_sha256=spec.sha256,
            vocab_size=tokenizer.vocab_size,
            eot_id=tokenizer.eot_id,
            sequence_length=recipe.sequence_length,
            shard_tokens=shard_tokens,
            recipe=recipe.name,
            recipe_hash=version_of(recipe),
        )
        predicted = {
            "tokens": int(lengths.sum()),
            "documents": docs.height,
            "shards": len(shard_sizes(lengths, shard_tokens)),
        }
        itemsize = megatron.optimal_dtype(tokenizer.vocab_size).itemsize
        yield dg.Output(
            FileSetOutput(files=token_files(docs, encoded(Progress(total=len(ranges))), header)),
            metadata=step_metadata(
                rows_in=docs.height,
                rows_out=docs.height,
                drops={},
                bytes_in=text_bytes,
                bytes_out=predicted["tokens"] * itemsize,
                config_version=version,
                tokens_out=predicted["tokens"],
                extra={
                    "documents": predicted["documents"],
                    "shards": predicted["shards"],
                    "sequences": predicted["tokens"] // recipe.sequence_length,
                    "dtype": header["dtype"],
                    "eot_id": tokenizer.eot_id,
                    "recipe_hash": header["recipe_hash"],
                },
            ),
        )
        yield from verified(context, mixed, tokenizer, store)

    def verified(
        context: dg.AssetExecutionContext, mixed: pl.LazyFrame, tokenizer: TokenizerResource, store: ObjectStore
    ) -> Iterator[dg.AssetCheckResult]:
        """Re-read this run's persisted shards: checksums, index, EOTs and counts against the manifest and the
        materialization's predicted counts; ids below the vocabulary; a seeded sample decodes to its text."""
        md = own_materialization(context, "tokenized")
        if md is None:
            for name in CHECKS:
                yield dg.AssetCheckResult(
                    asset_key="tokenized", check_name=name, passed=False, metadata={"error": "no materialization"}
                )
            return
        read = lambda name: store.read_bytes(f"{md['uri']}/{name}")  # noqa: E731 - what this run persisted
        manifest = json.loads(read("manifest.json"))
        facts = verify_shards(manifest, read)
        documents = read_parquet_bytes(read("documents.parquet"))
        picks = sample_positions(documents.height, seed=recipe.seed)
        sampled = mixed.with_row_index("_pos").filter(pl.col("_pos").is_in(picks)).select("_pos", "text").collect()
        bad = decode_sample(manifest, documents, dict(sampled.iter_rows()), read, tokenizer.decode, seed=recipe.seed)
        as_predicted = (
            manifest["tokens"] == md["tokens"]
            and manifest["documents"] == md["details"]["documents"]
            and len(manifest["shards"]) == md["details"]["shards"]
        )
        results = {
            "index_matches_tokens": (
                bool(facts["index_ok"]) and as_predicted,
                {
                    "tokens_in_data": facts["tokens_in_data"],
                    "sequences_in_data": facts["sequences_in_data"],
                    "tokens_in_metadata": md["tokens"],
                    "problems": facts["problems"],
                    "manifest": dg.MetadataValue.json({k: v for k, v in manifest.items() if k != "shards"}),
                    "shards": dg.MetadataValue.md(shard_table(manifest)),
                },
            ),
            "ids_in_range": (
                bool(facts["ids_in_range"]),
                {"max_id": facts["max_id"], "vocab_size": manifest["vocab_size"]},
            ),
            "sample_decodes": (not bad, {"sampled": len(picks), "mismatched_positions": str(bad)}),
        }
        for name, (passed, meta) in results.items():
            yield dg.AssetCheckResult(asset_key="tokenized", check_name=name, passed=passed, metadata=meta)

    return [tokenized]
