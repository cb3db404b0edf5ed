"""The code's shape, checked: small modules, thin jobs that import no other job, a lab/ that knows nothing above it."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGES = ("lab", "jobs", "training", "analysis", "cluster")


def _modules(pkg: str):
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_modules_stay_small():
    big = {
        str(p.relative_to(ROOT)): n
        for pkg in PACKAGES
        for p in _modules(pkg)
        if (n := len(p.read_text().splitlines())) > 300
    }
    assert big == {}


def test_jobs_are_thin_and_import_no_other_job():
    for p in _modules("jobs"):
        assert len(p.read_text().splitlines()) <= 150, p.name
        others = {m for m in _imports(p) if m.startswith("jobs.") and m != "jobs.cli"}
        assert others == set(), f"{p.name} imports {others}"


def test_lab_imports_nothing_above_it():
    for p in _modules("lab"):
        bad = {m for m in _imports(p) if m.split(".")[0] in ("jobs", "training", "analysis")}
        assert bad == set(), f"{p.relative_to(ROOT)} imports {bad}"


def test_analysis_is_pure():
    for p in _modules("analysis"):
        bad = {m for m in _imports(p) if m.split(".")[0] in ("ray", "mlflow", "jobs")}
        assert bad == set(), f"{p.relative_to(ROOT)} imports {bad}"
