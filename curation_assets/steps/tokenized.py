"""tokenized: the asset wrapper of core/tokens.py."""

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_assets.core import megatron
from curation_assets.steps.common import enforce_transfers, freshness_policy, pod, traceable
from curation_assets.config import version_of
from curation_assets.core.frames import step_metadata
from resources.cost_guard import CostGuard
from resources.storage import FileSetOutput
from resources.tokenizer import TokenizerResource

from curation_assets.core.tokens import *  # FIXME

def build(cfg, version: str) -> dg.AssetsDefinition:

    recipe = cfg.recipe
    shard_tokens = TokenizeParams(**cfg.thresholds.tokenized.default).shard_tokens

    @dg.asset(
        code_version=version,
        op_tags=pod(cfg.thresholds.tokenized.pod),
        group_name="curation",
        freshness_policy=freshness_policy(cfg.thresholds.freshness),
        check_specs=[
            dg.AssetCheckSpec(
                "index_matches_tokens",
                asset="tokenized",
                blocking=True,
                description="every .idx agrees with its .bin and the manifest; every sequence ends in EOT",
            ),
            dg.AssetCheckSpec(
                "ids_in_range",
                asset="tokenized",
                blocking=True,
                description="every token id is below the vocabulary size",
            ),
            dg.AssetCheckSpec(
                "sample_decodes",
                asset="tokenized",
                blocking=True,
                description="a seeded sample of documents decodes back to its text",
            ),
        ],
        metadata={"recipe": recipe.name, "format": FORMAT},
    )
    @traceable
    def tokenized(
        context: dg.AssetExecutionContext, mixed: pl.LazyFrame, tokenizer: TokenizerResource, cost_guard: CostGuard
    ):
        """Megatron `.bin`/`.idx` shards of the mixture + documents.parquet + manifest.json (see the module)."""
        # The mixture's text is streamed batch by batch; only its per-document columns are held (about 100 bytes a
        # document), so memory does not grow with the mixture's text.
        docs = mixed.select("doc_id", "source", "component", "epoch", "n_tokens").collect()
        text_bytes = mixed.select(pl.col("text").str.len_bytes().sum()).collect().item() or 0
        transfer = enforce_transfers(cost_guard, [cost_guard.data_root(text_bytes)])

        def texts() -> Iterator[list[str]]:
            for frame in mixed.select("text").collect_batches(chunk_size=BATCH, maintain_order=True):
                yield frame["text"].to_list()

        tok = (
            tokenizer
            if tokenizer.encoding == recipe.tokenizer
            else TokenizerResource(encoding=recipe.tokenizer, num_threads=tokenizer.num_threads)
        )
        # Dagster takes an output's metadata before the IO manager consumes the shard stream, so the counts are
        # predicted from `n_tokens` (counted by the same encoding in `raw`); the check asserts the shards match.
        lengths = (
            docs["n_tokens"].to_numpy()
            if tok is tokenizer
            else np.array([n for batch in texts() for n in tok.count_tokens(batch)], dtype=np.int64)
        ) + 1
        dtype = megatron.optimal_dtype(tok.vocab_size)
        manifest = {
            "format": FORMAT,
            "tokenizer": recipe.tokenizer,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.str,
            "megatron_dtype_code": megatron.DTYPE_CODES[dtype.newbyteorder("=")],
            "eot_id": tok.eot_id,
            "sequence_length": recipe.sequence_length,
            "shard_tokens": shard_tokens,
            "recipe": recipe.name,
            "recipe_hash": version_of(recipe),
            "shards": [],
        }
        written_lengths: list[np.ndarray] = []

        def files():
            for shard in tokenize_docs(texts(), tok.encode_arrays, tok.eot_id, tok.vocab_size, shard_tokens):
                manifest["shards"].append(
                    {
                        "name": shard.name,
                        "bin": f"{shard.name}.bin",
                        "idx": f"{shard.name}.idx",
                        "documents": len(shard.lengths),
                        "tokens": int(shard.lengths.sum()),
                        "bin_sha256": sha256(shard.data),
                        "idx_sha256": sha256(shard.index),
                    }
                )
                written_lengths.append(shard.lengths)
                yield f"{shard.name}.bin", shard.data
                yield f"{shard.name}.idx", shard.index
            documents = documents_frame(docs, manifest["shards"], written_lengths)
            buf = io.BytesIO()
            documents.write_parquet(buf, compression="zstd")
            per = documents.group_by("component").agg(
                pl.len().alias("documents"), (pl.col("n_tokens").sum() + pl.len()).alias("tokens")
            )
            manifest.update(
                documents=documents.height,
                tokens=int(sum(int(x.sum()) for x in written_lengths)),
                documents_sha256=sha256(buf.getvalue()),
                components={c: {"documents": d, "tokens": t} for c, d, t in per.sort("component").iter_rows()},
            )
            yield "documents.parquet", buf.getvalue()
            yield "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode()

        predicted = {
            "tokens": int(lengths.sum()),
            "documents": docs.height,
            "shards": len(shard_sizes(lengths, shard_tokens)),
        }
        out = FileSetOutput(files=files())
        yield dg.Output(
            out,
            metadata=step_metadata(
                rows_in=docs.height,
                rows_out=docs.height,
                drops={},
                bytes_in=text_bytes,
                bytes_out=predicted["tokens"] * dtype.itemsize,
                config_version=version,
                tokens_out=predicted["tokens"],
                extra={
                    **predicted,
                    **transfer,
                    "sequences": predicted["tokens"] // recipe.sequence_length,
                    "dtype": dtype.str,
                    "eot_id": tok.eot_id,
                    "recipe_hash": manifest["recipe_hash"],
                },
            ),
        )
        written, store = out.written["files"], context.resources.io_manager.store
        read = lambda name: store.read_bytes(written[name])  # noqa: E731 - re-read what was persisted
        facts = verify_shards(json.loads(read("manifest.json")), read)
        documents = pl.read_parquet(io.BytesIO(read("documents.parquet")))
        picks = sample_positions(docs.height, seed=recipe.seed)
        sampled = mixed.with_row_index("_pos").filter(pl.col("_pos").is_in(picks)).select("_pos", "text").collect()
        bad = decode_sample(manifest, documents, dict(sampled.iter_rows()), read, tok.decode, seed=recipe.seed)
        as_predicted = (
            all(manifest[k] == v for k, v in predicted.items() if k != "shards")
            and len(manifest["shards"]) == predicted["shards"]
        )
        yield dg.AssetCheckResult(
            check_name="index_matches_tokens",
            passed=bool(facts["index_ok"]) and as_predicted,
            metadata={
                "tokens_in_data": facts["tokens_in_data"],
                "sequences_in_data": facts["sequences_in_data"],
                "tokens_in_metadata": predicted["tokens"],
                "problems": facts["problems"],
                "bytes_written": out.written["bytes_out"],
                "manifest": dg.MetadataValue.json({k: v for k, v in manifest.items() if k != "shards"}),
                "shards": dg.MetadataValue.md(shard_table(manifest)),
            },
        )
        yield dg.AssetCheckResult(
            check_name="ids_in_range",
            passed=bool(facts["ids_in_range"]),
            metadata={"max_id": facts["max_id"], "vocab_size": tok.vocab_size},
        )
        yield dg.AssetCheckResult(
            check_name="sample_decodes",
            passed=not bad,
            metadata={"sampled": min(16, docs.height), "mismatched_positions": str(bad)},
        )

    return tokenized
