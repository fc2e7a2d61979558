"""The `filtered` asset through Dagster on a small literal source: URL blocklists (bundled and from a list file the
thresholds name) drop with their reasons, PII is redacted from the kept text and counted in the ledger and the
details. (The cores: tests/core/test_filtering.py, test_urls.py, test_pii.py.)"""

import json

import dagster as dg
import polars as pl
import yaml

from curation_assets.config import DEFAULT_THRESHOLDS, load_config
from curation_assets.defs import build_definitions
from curation_assets.defs.jobs import ANNOTATE_SOURCE, CURATE_SOURCE, INGEST_SOURCE
from resources import locks
from resources.cost_guard import CostGuard
from resources.io_manager import ParquetIOManager
from resources.store import ObjectStore
from resources.tokenizer import TokenizerResource
from tests.helpers import latest, local_settings

PROSE = (
    "The village library opens early on weekdays and closes late on Thursdays. Volunteers sort the donated books "
    "by subject before they reach the shelves. Children come after school to read with their parents and to borrow "
    "the new picture books. The reading room is quiet in the morning, and most of the seats are taken by students. "
    "Every month the library invites a local author to talk about the work of writing. The talks are free and open "
    "to everyone who lives in the valley."
)
DOCS = [
    # (id, url, text)
    ("adult", "https://www.pornhub.com/view_video", PROSE),  # bundled domain list
    ("listed", "https://spam.example.net/buy-now", PROSE),  # our list file
    (
        "contact",
        "https://library.example/contact",
        PROSE + " Write to the librarian at anna.berg@library.example "
        "or reach the catalogue server at 93.184.216.34 (the office uses 192.168.1.20).",
    ),
    ("no-url", None, PROSE.replace("village", "town")),
]


def forum(tmp_path, rows: list[dict], filtered_default: dict) -> dg.Definitions:
    """The definitions of a one-shard source `forum` made of `rows`, with `filtered.default` = `filtered_default`
    (every other threshold bundled), its data root `tmp_path / "data"`."""
    data = tmp_path / "forum"
    data.mkdir()
    (data / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sources.yaml").write_text(
        yaml.safe_dump({"sources": [{"name": "forum", "uris": [f"{data}/*.jsonl"], "licence": "test"}]})
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"forum": 1}}}))
    thresholds = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    thresholds["filtered"]["default"] = filtered_default
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    root = tmp_path / "data"
    settings = local_settings(
        data_root=str(root),
        sources=str(tmp_path / "sources.yaml"),
        recipe=str(tmp_path / "recipe.yaml"),
        thresholds=str(tmp_path / "thresholds.yaml"),
    )
    return build_definitions(load_config(settings.sources, settings.recipe, settings.thresholds), settings)


def run_filtered(tmp_path, rows: list[dict], filtered_default: dict) -> tuple[dict, pl.DataFrame, ParquetIOManager]:
    """`raw` and `filtered` of `forum`: filtered's metadata, its ledger with each document's JSON `id`, the IO
    manager."""
    defs, root = forum(tmp_path, rows, filtered_default), tmp_path / "data"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["forum"])
        for job in (INGEST_SOURCE, ANNOTATE_SOURCE, CURATE_SOURCE):
            assert defs.resolve_job_def(job).execute_in_process(partition_key="forum", instance=instance).success
        md = latest(instance, "filtered", "forum")
    io = ParquetIOManager(base_uri=str(root), store=ObjectStore(), cost_guard=CostGuard())
    raw = io.scan(dg.AssetKey("raw"), "forum").collect()
    by_id = dict(zip(raw["doc_id"], [json.loads(m)["id"] for m in raw["meta"]], strict=True))
    ledger = pl.read_parquet(md["details"]["side_ledger"])
    return md, ledger.with_columns(pl.col("doc_id").replace_strict(by_id).alias("id")).sort("id"), io


def counted(kept: pl.DataFrame) -> bool:
    """Every kept document's `n_tokens` is the tokenizer's count of its text as stored (tokenized checks it)."""
    rows = kept.select("text", "n_tokens").rows()
    return rows == [(t, TokenizerResource().count_tokens([t])[0]) for t, _ in rows]


def test_url_drops_and_pii_redaction_through_the_step(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "urls.txt").write_text("# exact URLs\nhttps://spam.example.net/buy-now\n")
    rows = [{"id": i, "text": t, **({"url": u} if u else {})} for i, u, t in DOCS]
    md, ledger, io = run_filtered(tmp_path, rows, {"url_files": ["lists/urls.txt"]})
    kept = io.scan(dg.AssetKey("filtered"), "forum").collect()
    dropped = io.scan(dg.AssetKey("filtered"), "forum", dropped=True).collect()
    assert ledger.select("id", "drop_reason", "pii_emails", "pii_ips").rows() == [
        ("adult", "url_domain_blocked", None, None),
        ("contact", None, 1, 1),
        ("listed", "url_blocked", None, None),
        ("no-url", None, 0, 0),
    ]
    assert md["details"]["pii_redacted"] == {"documents": 1, "emails": 1, "ips": 1}
    assert md["details"]["drops"] == {"url_blocked": 1, "url_domain_blocked": 1}
    text = kept.filter(pl.col("doc_id") == ledger.filter(pl.col("id") == "contact")["doc_id"][0])["text"][0]
    assert "anna.berg" not in text and "93.184.216.34" not in text and "192.168.1.20" in text
    assert text.startswith(PROSE + " Write to the librarian at ")
    # filtered counts the tokens of the text it keeps, after redaction (tokenized checks the counts); raw counts
    # none, nor does filtered for what it drops: their volume is bytes, their tokens an estimate labelled as one
    assert counted(kept) and "n_tokens" not in io.scan(dg.AssetKey("raw"), "forum").collect_schema()
    assert sorted(dropped["drop_reason"]) == ["url_blocked", "url_domain_blocked"] and "n_tokens" not in dropped.columns
    assert md["details"]["bytes_dropped"] == {r: len(PROSE.encode()) for r in ("url_blocked", "url_domain_blocked")}
    estimated = md["details"]["tokens_estimated"]
    assert estimated["sample_docs"] >= 1 and set(estimated["dropped"]) == {"url_blocked", "url_domain_blocked"}
    assert "| dropped: url_blocked | 1 | ~" in md["funnel"] and md["tokens"] == kept["n_tokens"].sum()
    assert not {"pii_emails", "pii_ips"} & set(kept.columns)
    # annotated (annotate_source: no model) holds every raw document in raw's order with its verdict, dropping none
    annotated = io.scan(dg.AssetKey("annotated"), "forum").collect()
    raw = io.scan(dg.AssetKey("raw"), "forum").collect()
    assert annotated["doc_id"].to_list() == raw["doc_id"].to_list()
    assert annotated.filter(pl.col("drop_reason").is_not_null())["drop_reason"].sort().to_list() == [
        "url_blocked",
        "url_domain_blocked",
    ]
    assert io.scan(dg.AssetKey("annotated"), "forum", dropped=True) is None


def test_a_writer_lock_held_past_the_wait_fails_the_step_before_pass_2_and_publishes_nothing(tmp_path, monkeypatch):
    """Another run holds filtered's writer lock for `forum` past the IO manager's wait (shortened here): pass 2, which
    the IO manager drives, never starts, the run fails naming the lock, and nothing is published."""
    defs = forum(tmp_path, [{"id": i, "text": t} for i, _, t in DOCS], {})
    io = ParquetIOManager(base_uri=str(tmp_path / "data"), store=ObjectStore(), cost_guard=CostGuard())
    _, held = io._lock(dg.AssetKey("filtered"), "forum")
    wait = locks.writer_lock
    monkeypatch.setattr(locks, "writer_lock", lambda lock, name, _timeout_s, log_to=None: wait(lock, name, 0.5, log_to))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source", ["forum"])
        for job in (INGEST_SOURCE, ANNOTATE_SOURCE):
            assert defs.resolve_job_def(job).execute_in_process(partition_key="forum", instance=instance).success
        assert held.try_acquire()
        try:
            run = defs.resolve_job_def(CURATE_SOURCE).execute_in_process(
                partition_key="forum", instance=instance, raise_on_error=False
            )
        finally:
            held.release()
    assert not run.success
    (failure,) = [e for e in run.all_events if e.is_step_failure]
    assert "filtered.forum stayed locked" in failure.step_failure_data.error.to_string()
    assert io.manifest(dg.AssetKey("filtered"), "forum") is None


FOOTER = "This page is mirrored from the village archive; all rights reserved by the library board."


def test_lines_in_many_documents_of_the_source_are_removed_and_a_document_of_nothing_else_is_dropped(tmp_path):
    """25 documents end with the same footer line (>= boilerplate_min_docs 20): it leaves every kept text, the ledger
    counts it per document, the tokens are those of the stripped text, and a document that is the footer alone goes
    as `boilerplate_only`; rules and their decisions are untouched (line removal follows them)."""
    words = PROSE.split()
    rows = [{"id": f"d{i:02d}", "text": " ".join(words[i:] + words[:i]) + "\n" + FOOTER} for i in range(25)]
    rows.append({"id": "only", "text": FOOTER})  # rules for short texts would drop it first: off below
    short_text_rules_off = {"min_doc_words": None, "min_stop_words": None, "top_n_grams": None, "c4_quality": False}
    md, ledger, io = run_filtered(tmp_path, rows, short_text_rules_off)
    kept = io.scan(dg.AssetKey("filtered"), "forum").collect()
    assert kept.height == 25 and not kept["text"].str.contains("village archive").any()
    assert counted(kept)
    by_id = {r["id"]: r for r in ledger.select("id", "kept", "drop_reason", "boilerplate_lines").to_dicts()}
    assert by_id["only"]["drop_reason"] == "boilerplate_only" and not by_id["only"]["kept"]
    assert {by_id[f"d{i:02d}"]["boilerplate_lines"] for i in range(25)} == {1}
    assert md["details"]["drops"].get("boilerplate_only") == 1
