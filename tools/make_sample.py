"""Rebuild the bundled sample corpus (curation_assets/sample/) from the shared development corpus.

Usage: python tools/make_sample.py ../shared/corpus
Deterministic: documents are chosen by a hash of their id; planted near-duplicate pairs whose both halves are
chosen are kept so that `deduped` has real work on the embedded default.
"""

import csv
import hashlib
import io
import json
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import zstandard
from warcio.archiveiterator import ArchiveIterator
from warcio.warcwriter import WARCWriter

OUT = Path(__file__).resolve().parents[1] / "curation_assets" / "sample"
# documents per source; web is HTML (about 30 KB a page), so fewer
TAKE = {"web": 70, "code": 160, "books": 500, "multilingual": 160}


def pick(doc_id: str, rate: float) -> bool:
    return int(hashlib.sha1(f"sample-v1:{doc_id}".encode()).hexdigest()[:8], 16) < rate * 2**32


def read_source(corpus: Path, source: str) -> list[dict]:
    rows: list[dict] = []
    for path in sorted((corpus / "data" / source).iterdir()):
        if path.suffix == ".zst":
            with open(path, "rb") as f:
                text = zstandard.ZstdDecompressor().stream_reader(f).read().decode()
            rows += [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows += [{**r, "meta": json.loads(r["meta"])} for r in pl.read_parquet(path).to_dicts()]
    return rows


def main(corpus: Path) -> None:
    planted = list(csv.DictReader(open(corpus / "truth" / "planted.csv")))
    OUT.mkdir(parents=True, exist_ok=True)
    licences: Counter = Counter()
    for source, n in TAKE.items():
        docs = read_source(corpus, source)
        by_id = {d["id"]: d for d in docs}
        chosen = [d for d in docs if pick(d["id"], 1.3 * n / len(docs))][:n]
        ids = {d["id"] for d in chosen}
        for p in planted:  # add both halves of a few planted pairs
            if p["source"] == source and pick(p["copy_id"], 0.25) and p["original_id"] in by_id:
                for i in (p["original_id"], p["copy_id"]):
                    if i not in ids:
                        chosen.append(by_id[i])
                        ids.add(i)
        for d in chosen:
            licences[(source, d["meta"].get("package"), d["meta"].get("license"))] += 1
        half = len(chosen) // 2
        jsonl = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in chosen[:half]).encode()
        (OUT / source).mkdir(exist_ok=True)
        (OUT / source / "part-00000.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(jsonl))
        rest = chosen[half:]
        if source == "web":  # the second half of web as WARC response records, as the WARC variant stores them
            write_warc(corpus, rest, OUT / source / "part-00001.warc.gz")
        else:
            pl.DataFrame(
                [{**d, "meta": json.dumps(d["meta"], ensure_ascii=False)} for d in rest],
                schema={"id": pl.String, "text": pl.String, "url": pl.String, "source": pl.String, "meta": pl.String},
            ).write_parquet(OUT / source / "part-00001.parquet", compression="zstd")
        print(source, len(chosen))
    lines = ["| source | package | licence | documents |", "|---|---|---|---:|"]
    lines += [f"| {s} | {p} | {lic} | {n} |" for (s, p, lic), n in sorted(licences.items())]
    (OUT / "LICENSES.md").write_text(
        "# Licences of the bundled sample\n\nCopied from the shared development corpus (Debian bookworm packages, "
        "all in Debian main). Each document keeps its package and licence in `meta`.\n\n" + "\n".join(lines) + "\n"
    )


def write_warc(corpus: Path, docs: list[dict], out: Path) -> None:
    wanted = {d["id"] for d in docs}
    with open(out, "wb") as f_out:
        writer = WARCWriter(f_out, gzip=True)
        for src in sorted((corpus / "variants" / "web-warc").glob("*.warc.gz")):
            with open(src, "rb") as f:
                for rec in ArchiveIterator(f):
                    if rec.rec_type == "response" and rec.rec_headers.get_header("X-Corpus-Doc-Id") in wanted:
                        payload = rec.content_stream().read()
                        new = writer.create_warc_record(
                            rec.rec_headers.get_header("WARC-Target-URI"),
                            "response",
                            payload=io.BytesIO(payload),
                            http_headers=rec.http_headers,
                            warc_headers_dict={
                                k: v for k, v in rec.rec_headers.headers if k.startswith("X-Corpus") or k == "WARC-Date"
                            },
                        )
                        writer.write_record(new)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
