"""The layout's rules that import-linter's contracts (``make lint``) do not state.

* No import cycle between the project's modules, inside a layer included.
* No function-level import of the project's own modules outside ``plugin/cli`` (where it
  keeps ``explore --help`` fast), unless the line says why in a ``# lazy:`` comment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
OWN = ("plugin", "streams")


def _cycles(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(adjacency):
        if root in index:
            continue
        work = [(root, iter(sorted(adjacency[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adjacency.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    # The checker itself: a -> b -> c -> a is one cycle, d is outside it.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    graph = grimp.build_graph(*OWN)
    adjacency = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(adjacency) == []


def _function_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    found: list[str] = []
    for scope in ast.walk(tree):
        if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(scope):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if not any(name.split(".")[0] in OWN for name in names):
                continue
            statement = "\n".join(lines[node.lineno - 1 : (node.end_lineno or node.lineno)])
            if "# lazy:" not in statement:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {names[0]}")
    return found


def test_function_level_imports_only_at_the_cli_boundary() -> None:
    offenders: list[str] = []
    for package in OWN:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "plugin" / "cli"):
                continue
            offenders += _function_level_imports(path)
    assert sorted(set(offenders)) == []
