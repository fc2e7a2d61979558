"""PII redaction parity and throughput: `core/pii.py` against datatrove 0.10.1's `PIIFormatter` on the same documents.

Usage: .venv/bin/python benchmarks/bench_pii.py [--input SHARD ...] [--dt-python /tmp/dtvenv/bin/python]
Default input: every data shard of the shared corpus (../shared/corpus/data/*/part-*), read with our readers (HTML
extracted as `raw` does) outside the clock. Both sides redact every text with the same single placeholders (`EMAIL`,
`IP`), so datatrove's cycling through its placeholder list cannot differ from our per-address choice: two outputs
are equal iff the same spans were replaced. Each side runs in its own subprocess pinned to CPU 0; datatrove in its
own venv (see benchmarks/datatrove_baseline.py for how /tmp/dtvenv is built).

Agreement is the share of documents whose redacted text is identical. The last line is ours as configured (e-mails,
IPv4 and IPv6); the line before it restricts ours to datatrove's kinds (e-mails and IPv4: datatrove has no IPv6
rule), so the difference between the two is exactly the public IPv6 addresses only we replace.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLACEHOLDERS = {"email": "EMAIL", "ip": "IP", "ipv6": "IP6"}

OURS = """
import json, resource, sys, time
import polars as pl
from curation_assets.core.pii import redact_texts
texts = pl.read_parquet(sys.argv[1])["text"]
ipv6 = ("IP6",) if sys.argv[3] == "ipv6" else None
t0 = time.perf_counter()
out = redact_texts(texts, ("EMAIL",), ("IP",), ipv6)
seconds = time.perf_counter() - t0
out.select("text").write_parquet(sys.argv[2])
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DATATROVE = """
import json, resource, sys, time
import polars as pl
from datatrove.pipeline.formatters import PIIFormatter
texts = pl.read_parquet(sys.argv[1])["text"].to_list()
pii = PIIFormatter(email_replacement="EMAIL", ip_replacement="IP")
t0 = time.perf_counter()
out = [pii.format(t) for t in texts]
seconds = time.perf_counter() - t0
pl.DataFrame({"text": out}).write_parquet(sys.argv[2])
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def pinned(cmd: list[str]) -> list[str]:
    return (["taskset", "-c", "0"] if os.path.exists("/usr/bin/taskset") else []) + cmd


def run(python: str, code: str, inp: str, out: str, *args: str) -> tuple[dict, list[str]]:
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    proc = subprocess.run(
        pinned([python, "-c", code, inp, out, *args]), cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{python} failed:\n{proc.stderr[-2000:]}")
    import polars as pl

    return json.loads(proc.stdout.strip().splitlines()[-1]), pl.read_parquet(out)["text"].to_list()


def main() -> None:
    import polars as pl

    from curation_assets.core.readers import detect_format, read_shard

    ap = argparse.ArgumentParser()
    ap.add_argument("--input", nargs="+", default=sorted(glob.glob(str(ROOT.parent / "shared/corpus/data/*/part-*"))))
    ap.add_argument("--dt-python", default="/tmp/dtvenv/bin/python")
    args = ap.parse_args()
    if not args.input:
        raise SystemExit("no input: pass --input SHARD ... (the shared corpus is not at ../shared/corpus)")
    if not Path(args.dt_python).exists():
        raise SystemExit(f"{args.dt_python} missing: build the datatrove venv (benchmarks/datatrove_baseline.py)")
    frames = []
    for p in map(Path, args.input):
        with open(p, "rb") as f:
            frames.append(read_shard(f, fmt=detect_format(p.name), source=p.parent.name, shard=p.name).docs)
    texts = pl.concat(frames)["text"]
    mb = texts.str.len_bytes().sum() / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        inp = f"{tmp}/in.parquet"
        pl.DataFrame({"text": texts}).write_parquet(inp)
        dt_time, theirs = run(args.dt_python, DATATROVE, inp, f"{tmp}/dt.parquet")
        v4_time, ours_v4 = run(sys.executable, OURS, inp, f"{tmp}/v4.parquet", "ipv4")
        all_time, ours = run(sys.executable, OURS, inp, f"{tmp}/all.parquet", "ipv6")
    original = texts.to_list()
    n = len(original)
    print(f"{'redaction':<38} {'docs':>6} {'MB':>7} {'s':>7} {'MB/s/core':>9} {'RSS MB':>7}")
    for name, r in [
        ("datatrove 0.10.1 PIIFormatter", dt_time),
        ("ours, e-mail + IPv4", v4_time),
        ("ours, e-mail + IPv4 + IPv6", all_time),
    ]:
        print(f"{name:<38} {n:>6} {mb:>7.2f} {r['seconds']:>7.2f} {mb / r['seconds']:>9.2f} {r['peak_rss_mb']:>7.0f}")
    print(f"speed ratio ours (all kinds) / datatrove: {dt_time['seconds'] / all_time['seconds']:.2f}x")
    for label, mine in [("e-mail + IPv4 (datatrove's kinds)", ours_v4), ("as configured", ours)]:
        differ = [i for i in range(n) if mine[i] != theirs[i]]
        with_pii = sum(mine[i] != original[i] or theirs[i] != original[i] for i in range(n))
        for i in differ[:3]:  # what a disagreement looks like: the first differing span
            k = next((j for j, (a, b) in enumerate(zip(mine[i], theirs[i])) if a != b), len(theirs[i]))
            print(f"  {label}, doc {i}: ours {mine[i][k - 30 : k + 30]!r} datatrove {theirs[i][k - 30 : k + 30]!r}")
        line = f"agreement {1 - len(differ) / n:.4f} over {n} documents ({with_pii} with PII)"
        if label == "as configured":
            ipv6 = sum(t.count("IP6") for t in ours)
            print(f"public IPv6 addresses only ours replaces: {ipv6}")
            print(f"pii parity vs datatrove 0.10.1: {line}")
        else:
            print(f"pii parity vs datatrove 0.10.1, {label}: {line}")


if __name__ == "__main__":
    main()
