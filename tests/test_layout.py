"""The code's shape, checked: no import cycles, no public name defined twice, folders and modules of a readable size,
thin jobs that import no other job, a lab/ that knows nothing above it, an analysis/ that is pure.

Conventions the tests enforce (the packages are `PACKAGES`):

- **Import graph.** Every `import` / `from … import` in a module counts, wherever it is: at the top, inside a
  function or class, under `if TYPE_CHECKING:` or in an `if __name__ == "__main__":` block. A deferred import still
  needs the other module to make sense of this one, and a TYPE_CHECKING-only import still ties the two together
  (and `lab.config.from_dict` evaluates annotations at run time through `typing.get_type_hints`). `import a.b.c`
  is an edge to the longest prefix that is one of our modules; `from a.b import n` is an edge to `a.b.n` when that
  is a module, else to `a.b`; relative imports are resolved first. The implicit import of parent packages
  (`a/__init__.py` runs before `a.b`) is not an edge: a package `__init__` that imports its own submodules is
  Python's ordinary package start-up, not a knot. A cycle is a strongly connected component of more than one module.
- **Public names.** Top-level classes, functions and assignments not starting with `_`, in any module of the
  packages, are defined once; a re-export (`from x import name`) is not a definition. `EXEMPT_NAMES` lists the
  few conventions every module of a kind follows (`main`; an analysis module's `rerun`; an experiment module's
  `plan`/`prepare`/`work`/`run`); `TypeVar`s are local typing helpers and do not count. Constants
  count like any other name (`VERSION`, `RESULT`): two of them are one value to share or two meanings under one name.
- **Folders** hold at most `MAX_MODULES` modules (`__init__.py` not counted), except `jobs/`, whose flat list of
  entry points is the command line (`python -m jobs.<name>`).
- **Modules** of more than `LONG_MODULE` lines say why they are one piece: their module docstring contains the
  phrase "one piece" (e.g. "Kept as one piece: the hooks and the state they share ..."). There is no line cap.
- **jobs/**: at most `JOB_LINES` lines each, and no job imports another (only `jobs.cli`).
- **lab/** imports nothing from jobs/, training/ or analysis/.
- **analysis/** never imports ray, mlflow or jobs, and imports argparse or `lab.run.tracking` only inside its
  `if __name__ == "__main__":` blocks (a fit is importable and testable without a command line or a tracker).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("lab", "training", "analysis", "cluster", "jobs")
MAX_MODULES = 13
LONG_MODULE = 500
JOB_LINES = 150
ONE_PIECE = "one piece"
# name -> (where it may repeat: a module-name prefix, "" = anywhere; why): conventions every module of a kind follows,
# always reached through the module (`gates.plan`, `geometry.rerun`), never imported bare
EXEMPT_NAMES = {
    "main": ("", "the entry point of a `python -m` module"),
    "rerun": ("analysis.", "an analysis module's model-free entry: its step redone from a stored run"),
    **{
        hook: ("lab.experiments.", "a step of the skeleton (lab.run.experiment) that every experiment module provides")
        for hook in ("plan", "prepare", "work", "run")
    },
}


def _files(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


@cache
def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of `PACKAGES` (a package under its own name)."""
    out = {}
    for pkg in PACKAGES:
        for p in _files(pkg):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    t = node.test
    sides = [t.left, *t.comparators]
    return (
        len(t.ops) == 1
        and isinstance(t.ops[0], ast.Eq)
        and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
        and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    )


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, anywhere in it, with whether it sits in an `if __name__ == "__main__":`."""
    out: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_main: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append((node, in_main))
        guarded = node.body if _is_main_guard(node) else []  # its `else:` is not the script's part
        for child in ast.iter_child_nodes(node):
            visit(child, in_main or any(child is b for b in guarded))

    visit(tree, False)
    return out


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement in module `name` reaches: `import a.b` → a.b; `from a import b, c` →
    a.b, a.c (`a` itself is added by `_edges` where `a.b` is no module); relative imports resolved."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        is_pkg = _modules().get(name, Path()).name == "__init__.py"
        anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [f"{base}.{a.name}" for a in node.names]


def _ours(dotted: str) -> str | None:
    """The longest prefix of `dotted` that is one of our modules (None for a third-party or stdlib import)."""
    mods = _modules()
    while dotted and dotted not in mods:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _edges(name: str) -> set[str]:
    """The modules of ours that module `name` imports (self-imports dropped)."""
    out = set()
    for node, _ in _import_nodes(_tree(_modules()[name])):
        for dotted in _imported(name, node):
            target = _ours(dotted)
            if target and target != name:
                out.add(target)
    return out


def _import_names(path: Path, *, outside_main: bool = False) -> set[str]:
    """Dotted names a file imports (each `from a import b` as both `a` and `a.b`), optionally only those outside its
    `if __name__ == "__main__":` blocks."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out = set()
    for node, in_main in _import_nodes(_tree(path)):
        if outside_main and in_main:
            continue
        for dotted in _imported(name, node):
            out.add(dotted)
            if isinstance(node, ast.ImportFrom):
                out.add(dotted.rpartition(".")[0])
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_knots_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_import_resolution_counts_deferred_relative_and_type_only_imports():
    src = (
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from lab.config import ModelConfig\ndef f():\n    from . import loading\n    import lab.model.sites\n"
        "    from lab.errors import LabError\n"
    )
    tree = ast.parse(src)
    reached = {d for node, _ in _import_nodes(tree) for d in _imported("lab.model.sharded", node)}
    assert {"lab.config.ModelConfig", "lab.model.loading", "lab.model.sites", "lab.errors.LabError"} <= reached
    assert {_ours(d) for d in reached} - {None} == {"lab.config", "lab.model.loading", "lab.model.sites", "lab.errors"}


def test_no_import_cycles():
    graph = {m: _edges(m) for m in _modules()}
    knots = _cycles(graph)
    report = [
        f"{len(c)} modules: " + "; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in knots
    ]
    assert not knots, "import cycles:\n" + "\n".join(report)


def _exempt(name: str, module: str) -> bool:
    where = EXEMPT_NAMES.get(name, (None, ""))[0]
    return where is not None and module.startswith(where)


def _definitions(path: Path) -> set[str]:
    """Public top-level names a module defines (classes, functions, assignments; not imports, not TypeVars)."""
    out = set()
    for node in _tree(path).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            value = node.value
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, (ast.Name, ast.Attribute))
                and (value.func.id if isinstance(value.func, ast.Name) else value.func.attr) == "TypeVar"
            ):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        else:
            continue
        out |= {n for n in names if not n.startswith("_")}
    return out


def test_no_public_name_is_defined_twice():
    where = defaultdict(list)
    for name, path in _modules().items():
        for defined in _definitions(path):
            if not _exempt(defined, name):
                where[defined].append(name)
    twice = {n: sorted(ms) for n, ms in sorted(where.items()) if len(ms) > 1}
    assert not twice, "defined in more than one module:\n" + "\n".join(f"{n}: {', '.join(m)}" for n, m in twice.items())


def _folders() -> list[Path]:
    return sorted({p.parent for pkg in PACKAGES for p in _files(pkg)})


@pytest.mark.parametrize("folder", _folders(), ids=lambda p: str(p.relative_to(ROOT)))
def test_folders_stay_small(folder):
    if folder == ROOT / "jobs":
        pytest.skip("jobs/ is the command line: one entry point per job, each thin (test_jobs_are_thin...)")
    modules = sorted(p.name for p in folder.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= MAX_MODULES, f"{folder.relative_to(ROOT)} holds {len(modules)} modules: {modules}"


def test_long_modules_say_why_they_are_one_piece():
    unexplained = {
        str(p.relative_to(ROOT)): n
        for pkg in PACKAGES
        for p in _files(pkg)
        if (n := len(p.read_text().splitlines())) > LONG_MODULE
        and ONE_PIECE not in " ".join((ast.get_docstring(_tree(p)) or "").split()).lower()
    }
    assert not unexplained, f'over {LONG_MODULE} lines without "{ONE_PIECE}" in the module docstring: {unexplained}'


def test_jobs_are_thin_and_import_no_other_job():
    for p in _files("jobs"):
        assert len(p.read_text().splitlines()) <= JOB_LINES, p.name
        jobs = {_ours(d) for d in _import_names(p)} & {m for m in _modules() if m.startswith("jobs.")}
        others = jobs - {"jobs.cli", ".".join(p.relative_to(ROOT).with_suffix("").parts)}
        assert others == set(), f"{p.name} imports {others}"


def test_lab_imports_nothing_above_it():
    for p in _files("lab"):
        bad = {m for m in _import_names(p) if m.split(".")[0] in ("jobs", "training", "analysis")}
        assert bad == set(), f"{p.relative_to(ROOT)} imports {bad}"


def test_analysis_is_pure():
    for p in _files("analysis"):
        bad = {m for m in _import_names(p) if m.split(".")[0] in ("ray", "mlflow", "jobs")}
        assert bad == set(), f"{p.relative_to(ROOT)} imports {bad}"


def test_analysis_reads_its_command_line_and_tracker_only_when_run_as_a_script():
    found = {}
    for p in _files("analysis"):
        names = _import_names(p, outside_main=True)
        bad = {m for m in names if m == "argparse" or m == "lab.run.tracking" or m.startswith("lab.run.tracking.")}
        if bad:
            found[str(p.relative_to(ROOT))] = sorted(bad)
    assert not found, f'argparse / lab.run.tracking outside `if __name__ == "__main__":`: {found}'
