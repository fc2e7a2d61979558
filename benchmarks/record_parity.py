"""Record datatrove 0.10.1's per-filter decisions on the parity documents into tests/fixtures/datatrove_parity.parquet.

Usage (once, or after changing the document selection): .venv/bin/python benchmarks/record_parity.py [--dt-python
/tmp/dtvenv/bin/python] [--corpus ../shared/corpus]. The datatrove venv is set up as benchmarks/datatrove_baseline.py
says. The fixture holds ids and decisions only (no text): tests/test_filtered_parity.py re-reads the texts from the
corpus with our own readers (the web shards' HTML extracted exactly as `raw` does) and compares rule by rule.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT / "tests" / "fixtures" / "datatrove_parity.parquet"


def parity_docs(corpus: Path) -> pl.DataFrame:
    """English web (provenance label `en`), every code document of one shard, every 4th books document of one shard:
    about 2,100 documents, 21 MB of text."""
    from curation_assets.core.readers import detect_format, read_shard

    def load(rel: str, source: str) -> pl.DataFrame:
        p = corpus / rel
        with open(p, "rb") as f:
            r = read_shard(f, fmt=detect_format(p.name), source=source, shard=p.name)
        return r.docs.with_columns(pl.col("meta").str.json_path_match("$.id").alias("id"))

    labels = pl.read_csv(corpus / "truth" / "labels.csv.gz").filter(pl.col("lang") == "en").select("id")
    web = pl.concat([load(f"data/web/part-0000{i}.jsonl.zst", "web") for i in range(3)]).join(labels, on="id")
    code = load("data/code/part-00000.jsonl.zst", "code")
    books = load("data/books/part-00000.jsonl.zst", "books").gather_every(4)
    return pl.concat([web, code, books]).select("id", "source", "shard", "text")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dt-python", default="/tmp/dtvenv/bin/python")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.parquet"
        parity_docs(Path(args.corpus)).write_parquet(docs)
        subprocess.run(
            [args.dt_python, str(ROOT / "benchmarks" / "datatrove_baseline.py"), "decisions", str(docs), str(FIXTURE)],
            check=True,
        )
    print(pl.read_parquet(FIXTURE).shape, "->", FIXTURE)


if __name__ == "__main__":
    main()
