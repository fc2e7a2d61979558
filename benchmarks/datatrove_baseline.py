"""datatrove 0.10.1 as a baseline: run it in its OWN venv (never the project's), e.g.

    python3.11 -m venv /tmp/dtvenv
    /tmp/dtvenv/bin/pip install datatrove==0.10.1 spacy fasttext-numpy2-wheel polars \
        regex tokenizers fasteners "xxhash<4"
    (datatrove imports regex, tokenizers and fasteners without declaring them; xxhash 4 refuses the str its MinHash
    passes)
    /tmp/dtvenv/bin/python benchmarks/datatrove_baseline.py decisions IN.parquet OUT.parquet
    /tmp/dtvenv/bin/python benchmarks/datatrove_baseline.py chain IN.parquet OUT.json

IN.parquet has `text` (and any id columns, passed through). lid.176 is the project's bundled `lid.176.ftz`
(datatrove would download `lid.176.bin`; nothing may download here), loaded into datatrove's own FT176LID.

- `decisions`: every rule family applied on its own to the ORIGINAL text of every document, with datatrove's
  defaults (C4QualityFilter as FineWeb configures it, filter_no_terminal_punct=False, and with its default True):
  one column per filter holding datatrove's drop reason (null = kept). Used to record tests/fixtures parity data.
- `chain`: datatrove's FineWeb filter chain (LanguageFilter(en) -> GopherRepetition -> GopherQuality ->
  C4Quality(filter_no_terminal_punct=False) -> FineWebQuality), timed on one process; prints JSON with seconds,
  docs, MB of text, peak RSS, and the per-document final reason.
"""

import json
import resource
import sys
import time
from pathlib import Path

import polars as pl
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)

LID = Path(__file__).resolve().parents[1] / "resources" / "models" / "lid.176.ftz"


def language_filter(**kw) -> LanguageFilter:
    import fasttext

    f = LanguageFilter(**kw)
    f.model._model = fasttext.load_model(str(LID))  # FastTextLID.model is lazy: pre-seed it with the local file
    return f


def run(flt, text: str, i: int) -> str | None:
    doc = Document(text=text, id=str(i), metadata={})
    res = flt.filter(doc)
    ok, reason = (res, None) if isinstance(res, bool) else res
    return None if ok else (reason or "dropped")


def decisions(inp: str, out: str) -> None:
    df = pl.read_parquet(inp)
    filters = {
        "dt_lid": language_filter(),  # any language, score > 0.65
        "dt_gopher_repetition": GopherRepetitionFilter(),
        "dt_gopher_quality": GopherQualityFilter(),
        "dt_c4": C4QualityFilter(filter_no_terminal_punct=False),
        "dt_c4_terminal_punct": C4QualityFilter(),
        "dt_fineweb": FineWebQualityFilter(),
    }
    cols = {name: [run(f, t, i) for i, t in enumerate(df["text"])] for name, f in filters.items()}
    lid = filters["dt_lid"].model
    best = [lid.predict(Document(text=t, id="x"))[0] for t in df["text"]]
    df.drop("text").with_columns(
        *(pl.Series(k, v, pl.String) for k, v in cols.items()),
        pl.Series("dt_lang", [b[0] for b in best]),
        pl.Series("dt_lang_score", [float(b[1]) for b in best]),
    ).write_parquet(out)


def chain(inp: str, out: str) -> None:
    df = pl.read_parquet(inp)
    steps = [
        language_filter(languages=["en"]),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]
    for f in steps[1:]:  # warm up spaCy and the model outside the clock, as a long-running worker would be
        run(f, "Warm up the tokenizer. It is loaded lazily.", 0)
    run(steps[0], "warm up", 0)
    texts = df["text"].to_list()
    t0 = time.perf_counter()
    reasons = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i), metadata={})
        reason = None
        for f in steps:
            res = f.filter(doc)
            if res is not True and not (isinstance(res, tuple) and res[0]):
                reason = res[1] if isinstance(res, tuple) else "lang"
                break
        reasons.append(reason)
    seconds = time.perf_counter() - t0
    Path(out).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "docs": len(texts),
                "mb": sum(len(t.encode()) for t in texts) / 1e6,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "reasons": reasons,
            }
        )
    )


if __name__ == "__main__":
    {"decisions": decisions, "chain": chain}[sys.argv[1]](*sys.argv[2:])
