"""The seams a newcomer relies on, read from the source: store/ owns the SQL, no import circles, small modules.

Each check parses the product's code (edge, store, feedback, flows) with `ast`; none imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "store", "feedback", "flows")
SQL_CALLS = {"execute", "executemany", "sql"}
MAX_LINES = 400
MAX_INNER_IMPORTS = 30  # imports inside functions, of the project's own modules: each keeps a heavy dependency away


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(tree: ast.Module, name: str, known: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """(imported project module, whether the import sits inside a function) for every import in a module."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from a.b import c`: c is a module where one exists, else a name in a.b
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):  # one import statement naming three things is one import
            if target.split(".")[0] in PACKAGES and target in known:
                yield target, id(node) in inner


def parsed() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in modules().items()}


def sql_calls_outside_store() -> list[str]:
    """`<x>.execute(`, `.executemany(` and `.sql(` calls anywhere but store/: each one is SQL written elsewhere."""
    found = []
    for name, tree in parsed().items():
        if name.startswith("store"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                found.append(f"{name}:{node.lineno}")
    return found


def import_cycles() -> list[list[str]]:
    """The strongly connected groups of the import graph, imports inside functions included."""
    known = modules()
    names = sorted(known)
    index = {n: i for i, n in enumerate(names)}
    edges = {(index[name], index[target]) for name, tree in parsed().items()
             for target, _ in imports(tree, name, known) if target != name and not name.startswith(target + ".")}
    rows, cols = zip(*edges) if edges else ((), ())
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(graph, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels):
        groups.setdefault(int(label), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def inner_imports() -> list[str]:
    known = modules()
    return [f"{name} -> {target}" for name, tree in parsed().items()
            for target, inner in imports(tree, name, known) if inner]


def long_modules() -> list[str]:
    return [f"{name}: {n}" for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES]


def test_no_sql_outside_store() -> None:
    assert sql_calls_outside_store() == []


def test_no_import_cycles_even_through_imports_inside_functions() -> None:
    assert import_cycles() == []


def test_imports_inside_functions_are_few() -> None:
    found = inner_imports()
    assert len(found) <= MAX_INNER_IMPORTS, "\n".join(found)


def test_no_module_over_400_lines() -> None:
    assert long_modules() == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The scanners find a planted call, circle and inner import (else a pass above would mean nothing)."""
    a = ast.parse("import duckdb\ndef f(con):\n    from feedback import b\n    con.execute('SELECT 1')\n")
    known = {"feedback.a": tmp_path / "a.py", "feedback.b": tmp_path / "b.py", "feedback": tmp_path / "__init__.py"}
    assert list(imports(a, "feedback.a", known)) == [("feedback.b", True)]
    assert any(isinstance(n, ast.Call) and n.func.attr == "execute" for n in ast.walk(a)
               if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute))
