"""The folder tree is the architecture: the pure core and the config import no orchestration, no cloud SDK and no
store, statically (any import statement, even inside a function) and at run time (what importing them loads)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "curation_assets"
# What a pure module must not reach: Dagster and its integrations, the S3 SDK, the resources (store, IO manager,
# cost guard), and the layers above the core.
FORBIDDEN = ("dagster", "dagster_aws", "dagster_k8s", "boto3", "botocore", "resources")
FORBIDDEN_LOCAL = ("curation_assets.steps", "curation_assets.defs", "curation_assets.cli")
PURE = ("core", "config")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def offending(names: set[str]) -> list[str]:
    return sorted(
        n
        for n in names
        if n.split(".")[0] in FORBIDDEN or any(n == f or n.startswith(f + ".") for f in FORBIDDEN_LOCAL)
    )


def test_the_pure_modules_import_neither_dagster_nor_boto3_nor_the_store():
    modules = [p for layer in PURE for p in sorted((PACKAGE / layer).rglob("*.py"))]
    assert len(modules) > 10
    bad = {str(p.relative_to(PACKAGE)): o for p in modules if (o := offending(imported_modules(p)))}
    assert bad == {}


def test_the_walk_catches_a_forbidden_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import polars\n\ndef f():\n    from resources.store import ObjectStore\n    import dagster as dg\n"
    )
    assert offending(imported_modules(module)) == ["dagster", "resources.store"]


def test_importing_every_pure_module_loads_no_orchestration_or_cloud_sdk():
    modules = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for layer in PURE
        for p in sorted((PACKAGE / layer).rglob("*.py"))
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
