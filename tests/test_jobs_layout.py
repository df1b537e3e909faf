"""The queue's package has no import cycles, lazy and type-checking imports included:
neither between modules nor between its parts (``api``, ``sqlite``, ``postgres``,
``http``, ``worker``)."""

from __future__ import annotations

import ast
from pathlib import Path

import onewriter.jobs

ROOT = Path(onewriter.jobs.__file__).parent
PACKAGE = "onewriter.jobs"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module of the package ``path`` imports, wherever the import statement is."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    modules = {_module_name(p) for p in ROOT.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _part(module: str) -> str:
    rest = module[len(PACKAGE) + 1 :]
    return rest.partition(".")[0] if "." in rest else rest


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    # a package's __init__ importing its own modules is how packages work, not a cycle
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not (name.startswith(d + ".") and d != PACKAGE)}
    graph.pop(PACKAGE)
    assert _cycle(graph) is None


def test_no_import_cycle_between_parts() -> None:
    parts: dict[str, set[str]] = {}
    for name, deps in _graph().items():
        if name == PACKAGE:
            continue  # the public API imports every part
        here = _part(name)
        parts.setdefault(here, set()).update(
            _part(d) for d in deps if d != PACKAGE and _part(d) != here
        )
    assert _cycle(parts) is None
