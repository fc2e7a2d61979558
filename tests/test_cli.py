"""The `curation` command as a user runs it: a subprocess, its exit code and every line it prints."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from curation_assets.config import DEFAULT_SOURCES, DEFAULT_THRESHOLDS
from tests.helpers import instance_home

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("run", "table", "versions", "remove-version", "validate", "sql", "sources")


def curation(*args: str, cwd: Path, **env: str) -> tuple[int, list[str]]:
    """`curation ARGS` (as `python -m curation_assets.cli`) with only `env` of the CURATION_* variables set: (exit
    code, the non-empty lines of stdout and stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    res = subprocess.run(
        [sys.executable, "-m", "curation_assets.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return res.returncode, [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]


def one_problem(cwd: Path, **env: str) -> str:
    code, lines = curation("validate", cwd=cwd, **env)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def sources_file(tmp_path: Path, edit=None) -> Path:
    """The bundled sources with absolute paths (so the file works from tmp_path), edited by `edit(doc)`."""
    doc = yaml.safe_load(DEFAULT_SOURCES.read_text())
    for s in doc["sources"]:
        s["uris"] = [str((DEFAULT_SOURCES.parent / u).resolve()) for u in s["uris"]]
    doc.pop("landing_zones")
    if edit:
        edit(doc)
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_bundled_config_validates(tmp_path):
    code, lines = curation("validate", cwd=tmp_path)
    assert code == 0, lines
    assert all(line.startswith("ok: ") for line in lines)
    assert "4 (web, code, books, multilingual)" in lines[0] and "'default', unimax" in lines[1]
    assert lines[-1].startswith("ok: config versions: raw=") and "tokenized=" in lines[-1]
    code, lines = curation("validate", cwd=tmp_path, CURATION_SOURCES=str(sources_file(tmp_path)))
    assert code == 0 and str(tmp_path / "sources.yaml") in lines[0], lines


def test_a_misspelled_threshold_is_one_line_with_file_key_path_and_closest_key(tmp_path):
    doc = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    doc["filtered"]["per_source"]["web"]["min_stop_word"] = doc["filtered"]["per_source"]["web"].pop("min_stop_words")
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(doc))
    line = one_problem(tmp_path, CURATION_THRESHOLDS=str(path))
    assert line == f"{path}: filtered.per_source.web.min_stop_word: unknown key (did you mean 'min_stop_words'?)"


def test_a_misspelled_source_key_names_the_source(tmp_path):
    path = sources_file(tmp_path, lambda d: d["sources"][1].update(text_feild="content"))
    line = one_problem(tmp_path, CURATION_SOURCES=str(path))
    assert line == f"{path}: sources[code].text_feild: unknown key (did you mean 'text_field'?)"


def test_a_misspelled_recipe_key(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("recipe:\n  name: r\n  weights: {web: 1}\n  max_epoch: 2\n")
    line = one_problem(tmp_path, CURATION_RECIPE=str(path))
    assert line == f"{path}: recipe.max_epoch: unknown key (did you mean 'max_epochs'?)"


def test_a_missing_file_names_the_variable_that_named_it(tmp_path):
    line = one_problem(tmp_path, CURATION_COSTS=str(tmp_path / "costs.yml"))
    assert line == f"{tmp_path / 'costs.yml'}: file not found (set by CURATION_COSTS)"


def test_a_recipe_naming_an_unknown_source_names_both_files(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("recipe:\n  name: r\n  sampling: temperature\n  components: [web, books, bokos.synthetic]\n")
    line = one_problem(tmp_path, CURATION_RECIPE=str(path))
    assert line == (
        f"{path}: recipe.components[2]: source 'bokos' is not defined in {DEFAULT_SOURCES} (did you mean 'books'?)"
    )


def test_a_glob_that_matches_no_file(tmp_path):
    path = sources_file(tmp_path, lambda d: d["sources"][2]["uris"].append("books-2026/*.jsonl.zst"))
    line = one_problem(tmp_path, CURATION_SOURCES=str(path))
    assert line.startswith(f"{path}: sources[books].uris[1]: 'books-2026/*.jsonl.zst' matches no file (resolved: ")
    assert str(tmp_path / "books-2026") in line


def test_environment_variables_are_checked(tmp_path):
    line = one_problem(tmp_path, CURATION_ENV="prod")
    assert line == "environment: CURATION_ENV: must be 'local' or 'k8s', got 'prod'"
    line = one_problem(tmp_path, CURATION_DATA_ROOT="/srv/../")
    assert line == "environment: CURATION_DATA_ROOT: must not contain '..' segments, got '/srv/../'"
    line = one_problem(tmp_path, CURATION_THRESHOLD=str(DEFAULT_THRESHOLDS))  # silently ignored otherwise
    assert (
        line == "environment: CURATION_THRESHOLD: not a variable curation reads (did you mean 'CURATION_THRESHOLDS'?)"
    )


def test_a_data_root_that_cannot_be_written_is_one_line_before_any_run(tmp_path, s3_endpoint):
    """A local root through a file (the tests run as root, so permission bits would not stop them) and a bucket that
    does not exist on the loopback S3 server: one line naming the variable, exit code 2, no run in the instance."""
    (tmp_path / "a-file").write_text("")
    home = instance_home(tmp_path / "home")
    for root, reason in (
        (str(tmp_path / "a-file" / "data"), "Not a directory"),
        ("s3://no-such-bucket/data", "NoSuchBucket"),
    ):
        code, lines = curation(
            "run", cwd=tmp_path, CURATION_DATA_ROOT=root, CURATION_S3_ENDPOINT=s3_endpoint, DAGSTER_HOME=str(home)
        )
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"environment: CURATION_DATA_ROOT: '{root}' cannot be written (")
        assert reason in lines[0]
    assert not (home / "history").exists()  # no run was recorded: Dagster's instance was never opened for a run


def test_every_problem_is_reported_at_once_and_run_reports_them_the_same_way(tmp_path):
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("filtered:\n  default: {min_doc_word: 3}\nfreshness: {warn_hours: x}\n")
    env = {"CURATION_THRESHOLDS": str(thresholds), "CURATION_ENV": "cloud"}
    code, lines = curation("validate", cwd=tmp_path, **env)
    assert code == 2 and len(lines) == 3, lines
    assert lines[0].startswith("environment: CURATION_ENV:")
    assert lines[1] == f"{thresholds}: filtered.default.min_doc_word: unknown key (did you mean 'min_doc_words'?)"
    assert lines[2].startswith(f"{thresholds}: freshness.warn_hours: Input should be a valid number")
    code, lines = curation("run", cwd=tmp_path, CURATION_THRESHOLDS=str(thresholds))  # stops before Dagster starts
    assert code == 2 and lines == [
        f"{thresholds}: filtered.default.min_doc_word: unknown key (did you mean 'min_doc_words'?)",
        lines[1],
    ], lines


def imported_after(argv: list[str], cwd: Path) -> dict[str, bool]:
    code = (
        "import sys\n"
        "from curation_assets import cli\n"
        "try:\n"
        f"    rc = cli.main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "print(rc, *(m in sys.modules for m in ('dagster', 'polars', 'pydantic', 'resources')))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120)
    rc, *flags = res.stdout.split()[-5:]
    return {"rc": rc, **dict(zip(("dagster", "polars", "pydantic", "resources"), (f == "True" for f in flags)))}


def test_help_imports_nothing_heavy(tmp_path):
    """`curation --help` and `curation <cmd> --help` import neither Dagster nor polars (nor the config models or
    `resources`): the deterministic stand-in for "answers at once"."""
    for argv in (["--help"], *([cmd, "--help"] for cmd in SUBCOMMANDS)):
        assert imported_after(argv, tmp_path) == {
            "rc": "0",
            "dagster": False,
            "polars": False,
            "pydantic": False,
            "resources": False,
        }, argv


def test_validate_does_not_import_dagster(tmp_path):
    assert imported_after(["validate"], tmp_path) == {
        "rc": "0",
        "dagster": False,
        "polars": True,  # through the core's params models
        "pydantic": True,
        "resources": False,
    }


def test_the_console_script_is_declared_and_installed(tmp_path):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"curation": "curation_assets.cli:main"}
    script = Path(sys.executable).parent / "curation"
    res = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: curation ")
    assert all(cmd in res.stdout for cmd in SUBCOMMANDS)


def test_remove_version_refuses_crafted_asset_and_partition_arguments(tmp_path, monkeypatch, capsys):
    """`remove-version mixed ../tokenized/_all V` and `remove-version ./synthetic web V` name protected versions by
    their spelling: every argument is checked against the asset names and the partition pattern before a path is
    built (exit 2, one `refused:` line), and the protected versions are untouched."""
    from curation_assets.cli import main

    root = tmp_path / "data"
    for folder in ("tokenized/_all/aaaaaaaa-00000001", "synthetic/web/aaaaaaaa-00000002", "mixed/_all/m1"):
        (root / folder).mkdir(parents=True)
        (root / folder / "data.bin").write_bytes(b"x")
    monkeypatch.setenv("CURATION_DATA_ROOT", str(root))
    crafted = [
        ("mixed", "../tokenized/_all", "aaaaaaaa-00000001", "is not a valid source name|is not partitioned"),
        ("./synthetic", "web", "aaaaaaaa-00000002", "is not an asset"),
        ("../tokenized", "_all", "aaaaaaaa-00000001", "is not an asset"),
        ("mixed", "_all", "../../tokenized/_all/aaaaaaaa-00000001", "is not a version name"),
        ("filtered", "..", "m1", "is not a valid source name"),
        ("filtered", "_all", "m1", "is not a valid source name"),
    ]
    for asset, partition, version, why in crafted:
        code = main(["remove-version", asset, partition, version, "--reason", "crafted"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("refused: "), (asset, partition, err)
        assert re.search(why, err[0]), err
    assert sorted(str(p.relative_to(root)) for p in root.rglob("data.bin")) == [
        "mixed/_all/m1/data.bin",
        "synthetic/web/aaaaaaaa-00000002/data.bin",
        "tokenized/_all/aaaaaaaa-00000001/data.bin",
    ]
    # a well-formed argument list still works
    assert main(["remove-version", "mixed", "_all", "m1", "--reason", "old mixture"]) == 0
    assert not (root / "mixed/_all/m1").exists() and (root / "mixed/_all/_removed/m1.json").is_file()


def test_run_prints_one_line_per_run_with_its_seconds_and_a_failure_names_its_cause(tmp_path, capsys):
    """`curation run` is quiet (no Dagster DEBUG or INFO lines: they stay in the instance's event log) and says,
    under a failed run, which step failed and why, on one line, without Dagster's stack."""
    import dagster as dg

    from curation_assets.cli import run
    from tests.helpers import local_settings

    books = tmp_path / "books"
    books.mkdir()
    (books / "part-00000.jsonl").write_text('{"id": "a", "text": "a fine sentence of text"}\n{broken\n{broken\n')
    sources, recipe, thresholds = tmp_path / "s.yaml", tmp_path / "r.yaml", tmp_path / "t.yaml"
    sources.write_text(yaml.safe_dump({"sources": [{"name": "books", "uris": [f"{books}/*"], "licence": "t"}]}))
    recipe.write_text(yaml.safe_dump({"recipe": {"name": "r", "weights": {"books": 1}}}))
    t = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    t["raw"]["max_drop_rate"] = 0.5  # 2 of 3 records are broken
    thresholds.write_text(yaml.safe_dump(t))
    settings = local_settings(
        data_root=str(tmp_path / "data"), sources=str(sources), recipe=str(recipe), thresholds=str(thresholds)
    )
    with dg.instance_for_test() as instance:
        assert not run(instance, settings, force=False)
        out, err = capsys.readouterr()
        # raw's manifest is current (same config, same files), but its blocking check failed: run again, not skipped
        assert not run(instance, settings, force=False)
        assert re.search(r"^ingest_source\[books\]: FAILED in ", capsys.readouterr().out, re.M)
    lines = (out + err).splitlines()
    assert not [line for line in lines if " - DEBUG - " in line or " - INFO - " in line], lines[:5]
    (failed,) = [
        i for i, line in enumerate(lines) if re.match(r"ingest_source\[books\]: FAILED in [\d.]+ s \(run ", line)
    ]
    assert "drop_rate" in lines[failed + 1] and lines[failed + 1].startswith("  raw"), lines[failed : failed + 3]
    assert "Traceback" not in out + err


def test_two_instances_sharing_a_data_root_never_skip_on_each_others_outputs(tmp_path, capsys):
    """Instance A runs the graph; instance B (another DAGSTER_HOME, the same data root) runs it with another
    `filtered` quality cut. B skips what A made with B's config from B's inputs (raw, the quality model: the data root
    is the record, B never ran them), and reruns the rest. A's next `curation run` then reruns every job B changed
    and skips the others, and every output is again byte for byte what A's config produces (the content hash of
    each current version as after A's first run)."""
    import dagster as dg

    from curation_assets.cli import ALL_ASSETS, SOURCE_ASSETS, run
    from tests.helpers import local_settings, mini_config

    env = mini_config(tmp_path / "config")
    doc = yaml.safe_load(DEFAULT_THRESHOLDS.read_text())
    doc["filtered"]["per_source"]["web"]["quality_keep_fraction"] = 0.9  # the bundled file says 0.8: not annotated's
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(doc))
    root = tmp_path / "data"
    common = {"data_root": str(root), "sources": env["CURATION_SOURCES"], "recipe": env["CURATION_RECIPE"]}
    a, b = local_settings(**common), local_settings(**common, thresholds=str(tmp_path / "thresholds.yaml"))

    def contents() -> dict[str, str]:
        out = {}
        for asset in ALL_ASSETS:
            for part in ("web", "books") if asset in SOURCE_ASSETS else ("_all",):
                out[f"{asset}[{part}]"] = json.loads((root / asset / part / "_latest.json").read_bytes())["content"]
        return out

    def ran(settings, instance) -> dict[str, str]:
        """`curation run`: job[partition] -> ok | skipped."""
        assert run(instance, settings, force=False)
        lines = capsys.readouterr().out.splitlines()
        return {
            m[1]: "skipped" if m[2] == "unchanged" else "ok"
            for m in (re.match(r"^(\w+(?:\[\w+\])?): (ok|unchanged)\b", line) for line in lines)
            if m
        }

    for home in ("home-a", "home-b"):
        (tmp_path / home).mkdir()
    with (
        dg.instance_for_test(temp_dir=str(tmp_path / "home-a")) as instance_a,
        dg.instance_for_test(temp_dir=str(tmp_path / "home-b")) as instance_b,
    ):
        assert set(ran(a, instance_a).values()) == {"ok"}
        mine = contents()
        assert ran(b, instance_b) == {
            "ingest_source[web]": "skipped",
            "ingest_source[books]": "skipped",
            "annotate_source[web]": "skipped",  # a quality cut is not annotated's config
            "annotate_source[books]": "skipped",
            "train_quality_model": "skipped",
            "curate_source[web]": "ok",  # filtered's config version covers every source's thresholds
            "curate_source[books]": "ok",
            "dedupe_corpus": "ok",
            "finish_source[web]": "ok",
            "finish_source[books]": "ok",
            "build_mixture": "ok",
        }
        theirs = contents()
        assert theirs["filtered[web]"] != mine["filtered[web]"] and theirs["tokenized[_all]"] != mine["tokenized[_all]"]
        again = ran(a, instance_a)
        assert {job for job, how in again.items() if how == "skipped"} == {
            "ingest_source[web]",
            "ingest_source[books]",
            "annotate_source[web]",
            "annotate_source[books]",
            "train_quality_model",
        }, again
        assert contents() == mine
        assert ran(a, instance_a) == dict.fromkeys(again, "skipped")  # and now nothing is left to do


def test_a_source_never_read_on_a_local_root_starts_the_cluster_at_once(tmp_path):
    """`curation run` starts the embedded cluster beside Dagster's import when a source was never read (its ingest
    will run), not in the first step; a root where every source has raw waits for a job that runs, and an S3 root
    is not asked."""
    from curation_assets.cli import _unread_source
    from curation_assets.config.settings import Settings

    local = Settings(data_root=str(tmp_path))
    assert _unread_source(local, ["web", "books"])
    for source in ("web", "books"):
        (tmp_path / "raw" / source).mkdir(parents=True)
        (tmp_path / "raw" / source / "_latest.json").write_text("{}")
    assert not _unread_source(local, ["web", "books"])
    assert _unread_source(local, ["web", "books", "code"])
    assert not _unread_source(Settings(data_root="s3://bucket/root"), ["web"])
