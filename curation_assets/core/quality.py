"""`quality_model`: a DCLM-style fastText quality classifier, trained on labels the pipeline derives from its own data.

Recipe (DCLM, Li et al. 2024, §4.4: a fastText bigram classifier with high-quality reference text as positives and
random web documents as negatives): the documents of the `reference` sources (default: books) are labelled `hq`, a
seeded random sample of the `background` sources (default: web) `cc`. Each class is capped at `max_per_class` and the
sample is drawn lazily, so training reads a bounded share of a large source. Texts that occur more than once are left
out (a copy on both sides of the split would inflate the held-out score), and the classes are balanced to the smaller
one (as DCLM trains: an imbalanced set moves fastText's prior, and P(hq) >= 0.5 with it). A seeded hash split holds
out `held_out` of each class; the held-out precision, recall and F1 of `hq` at P(hq) >= 0.5, the ROC AUC and the median
P(hq) of each class are the asset's metadata. `filtered` cuts by rank (a percentile) or by P(hq), so the blocking
check `held_out_quality` asks, before `filtered` may use the model, for the ranking quality (AUC >= `min_auc`) and for
scores that separate the classes (median P(hq) of held-out hq >= `min_hq_median`, of held-out cc <= `max_cc_median`):
a model whose every score is 0.50 +- 0.003 can still rank with a high AUC, and a cut by it would be a cut by noise.
`filtered` scores every document (`quality_score` = P(hq)) and cuts where thresholds.yaml says.

Pure polars core on top (no Dagster, no I/O); fastText itself is behind `resources.classifiers.QualityModel`.
"""

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_assets.core.frames import seeded_hash_expr

HQ, CC = "hq", "cc"
# The classifier reads a document's first 10,000 characters (~1,500 words), in training and in filtered alike.
# fastText averages word vectors, so each word of a book-length text gets a sliver of the gradient and learns little,
# and scoring cost grows with length; the opening of a document shows its register (as lid.176 needs only its
# first characters).
MAX_CHARS = 10_000
OVERSAMPLE = 2  # the lazy Bernoulli pre-sample draws twice the cap, so dropping repeated texts rarely leaves it short


class TrainingParams(BaseModel):
    """`quality_model` params (thresholds.yaml `quality_model.default`). fastText settings: DCLM's classifier is a
    bigram fastText model; dim and bucket are smaller than fastText's defaults (100, 2M) because two labels need
    little capacity and the model is loaded by every `filtered` step (dim 16 x (2^17 buckets + vocabulary) x 4 B:
    ~10-20 MB instead of ~0.8 GB)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    reference: tuple[str, ...] = ("books",)
    background: tuple[str, ...] = ("web",)
    max_per_class: int = Field(default=20_000, gt=0)
    held_out: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    min_auc: float = Field(default=0.8, ge=0, le=1)
    min_hq_median: float = Field(default=0.8, ge=0, le=1)
    max_cc_median: float = Field(default=0.2, ge=0, le=1)
    dim: int = Field(default=16, gt=0)
    epoch: int = Field(default=10, gt=0)
    lr: float = Field(default=0.1, gt=0)
    word_ngrams: int = Field(default=2, ge=1)
    bucket: int = Field(default=1 << 17, gt=0)
    min_count: int = Field(default=2, ge=1)
    # fastText's SGD decays its learning rate linearly to 0 over epoch x examples updates: at DCLM's settings a
    # sample of ~120 documents (the bundled one) stops after ~1,200 updates with every score at 0.50 +- 0.003. A
    # small training set gets more epochs, so that the classifier sees at least `min_updates` examples; a large one
    # (>= min_updates / epoch documents: 2,500 here) trains exactly at `epoch`.
    min_updates: int = Field(default=25_000, ge=0)

    @model_validator(mode="after")
    def _classes(self) -> "TrainingParams":
        if not self.reference or not self.background:
            raise ValueError("quality_model: reference and background sources must both be named")
        both = set(self.reference) & set(self.background)
        if both:
            raise ValueError(f"quality_model: sources {sorted(both)} are both reference and background")
        return self

    def fasttext(self, examples: int) -> dict[str, object]:
        """fastText's supervised arguments for a training set of `examples` documents (epochs raised to reach
        `min_updates`)."""
        args = self.model_dump(include={"dim", "epoch", "lr", "word_ngrams", "bucket", "min_count", "seed"})
        return {**args, "epoch": max(self.epoch, -(-self.min_updates // max(examples, 1)))}


def one_line(text: pl.Expr) -> pl.Expr:
    """DCLM's input normalisation, `" ".join(text.strip().splitlines())`, as an expression, of the first MAX_CHARS
    characters: every line break Python's splitlines knows becomes a space (fastText reads one example per line and
    splits words on whitespace)."""
    breaks = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"
    return text.fill_null("").str.strip_chars().str.slice(0, MAX_CHARS).str.replace_all(breaks, " ")


def sample_key(seed: int) -> pl.Expr:
    """A per-document pseudo-random UInt64 that depends only on `doc_id` and `seed` (order of the input is
    irrelevant, so the same documents are drawn on every run)."""
    return seeded_hash_expr(pl.concat_str([pl.lit(str(seed)), pl.col("doc_id")], separator="\x1f"))


def presample(docs: pl.LazyFrame, rows: int, params: TrainingParams) -> pl.LazyFrame:
    """`doc_id`, `text` (its first MAX_CHARS characters: all the classifier reads, so memory is bounded by
    OVERSAMPLE x max_per_class x MAX_CHARS) of a Bernoulli sample of about OVERSAMPLE x max_per_class non-empty
    documents, lazily."""
    text = pl.col("text").str.strip_chars().str.slice(0, MAX_CHARS)
    lf = docs.select("doc_id", text).filter(pl.col("text").str.len_bytes() > 0)
    rate = OVERSAMPLE * params.max_per_class / rows if rows else 1.0
    if rate < 1:
        lf = lf.filter(sample_key(params.seed) < pl.lit(int(rate * 2**64), pl.UInt64))
    return lf


def training_set(docs: pl.DataFrame, params: TrainingParams) -> tuple[pl.DataFrame, dict[str, int]]:
    """`docs` (doc_id, source, text) -> (doc_id, source, label, held_out, line) and the documents left out per
    reason (`text_in_both_classes`, `repeated_text`, `over_class_cap`). Labels come from the source: reference ->
    hq, background -> cc."""
    labelled = docs.with_columns(
        pl.when(pl.col("source").is_in(params.reference)).then(pl.lit(HQ)).otherwise(pl.lit(CC)).alias("label"),
        one_line(pl.col("text")).alias("line"),
        sample_key(params.seed).alias("_key"),
    ).sort("_key", "doc_id")
    # A text under both labels teaches nothing: every copy is left out. Copies of a text under one label count once
    # (the first by the seeded key), as in a deduplicated training set: a corpus of repeated shards still trains.
    both = pl.col("label").n_unique().over("line") > 1
    unique = labelled.filter(~both).unique(subset="line", keep="first", maintain_order=True)
    ambiguous = labelled.filter(both).height
    cap = min(params.max_per_class, *(unique.filter(pl.col("label") == x).height for x in (HQ, CC)))
    capped = unique.filter(pl.int_range(pl.len()).over("label") < cap)
    split = sample_key(params.seed + 1) % 1_000_000 < int(params.held_out * 1_000_000)
    out = capped.sort("label", "doc_id").select("doc_id", "source", "label", split.alias("held_out"), "line")
    left_out = {
        "text_in_both_classes": ambiguous,
        "repeated_text": docs.height - ambiguous - unique.height,
        "over_class_cap": unique.height - capped.height,
    }
    return out, {k: v for k, v in left_out.items() if v}


def fasttext_lines(train: pl.DataFrame) -> str:
    """fastText's supervised input: `__label__<label> <line>` per document."""
    return "".join(train.select(pl.format("__label__{} {}\n", "label", "line")).to_series().to_list())


def held_out_metrics(is_hq: pl.Series, score: pl.Series) -> dict[str, float | int]:
    """Precision, recall and F1 of `hq` at P(hq) >= 0.5, the ROC AUC (Mann-Whitney U over average ranks) and the
    median score of each class."""
    df = pl.DataFrame({"y": is_hq, "s": score})
    pred = pl.col("s") >= 0.5
    n_pos, n_neg = int(df["y"].sum()), int((~df["y"]).sum())
    tp = df.filter(pred & pl.col("y")).height
    fp = df.filter(pred & ~pl.col("y")).height
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ranks = df.select(pl.col("s").rank("average"), "y").filter(pl.col("y"))["s"].sum()
    auc = (ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) if n_pos and n_neg else 0.0
    return {
        "held_out_precision": round(precision, 4),
        "held_out_recall": round(recall, 4),
        "held_out_f1": round(f1, 4),
        "held_out_auc": round(float(auc), 4),
        "held_out_hq_median": round(float(df.filter("y")["s"].median() or 0.0), 4),
        "held_out_cc_median": round(float(df.filter(~pl.col("y"))["s"].median() or 0.0), 4),
        "held_out_hq": n_pos,
        "held_out_cc": n_neg,
    }


def class_counts(train: pl.DataFrame) -> dict[str, int]:
    """Documents per split and label of a `training_set`: train_hq, train_cc, held_out_hq, held_out_cc."""
    return {
        f"{split}_{label}": train.filter(
            (pl.col("held_out") == (split == "held_out")) & (pl.col("label") == label)
        ).height
        for split in ("train", "held_out")
        for label in (HQ, CC)
    }
