"""The package's layout: no import circles between its modules (lazy imports count;
imports only for type checking do not run, so they do not), the writer side never
imports the client side, and the job queue's parts (``api``, ``sqlite``, ``postgres``,
``http``, ``worker``) do not import each other in a circle, type-checking imports
included."""

from __future__ import annotations

import ast
from pathlib import Path

import onewriter

ROOT = Path(onewriter.__file__).parent
JOBS = "onewriter.jobs"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for statement in node.body:
                skip.update(id(sub) for sub in ast.walk(statement))
    return skip


def _imports(name: str, *, type_checking: bool) -> set[str]:
    """The package's modules that module ``name`` imports, wherever the statement is."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = set() if type_checking else _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from pkg import module`` imports that module; ``from mod import x`` mod
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
    return {m for m in found if m in MODULES and m != name}


def _graph(*, type_checking: bool) -> dict[str, set[str]]:
    graph = {name: _imports(name, type_checking=type_checking) for name in MODULES}
    # A package's __init__ importing its own modules is how packages work, not a circle.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


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


def test_no_import_circle_between_modules() -> None:
    assert _cycle(_graph(type_checking=False)) is None


def test_the_checker_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_writer_side_never_imports_the_client_side() -> None:
    graph = _graph(type_checking=True)
    offending = {
        (name, dep)
        for name, deps in graph.items()
        if name.startswith("onewriter.writer")
        for dep in deps
        if dep.startswith("onewriter.client") or dep == "onewriter.database"
    }
    assert offending == set()


def _part(module: str) -> str:
    rest = module[len(JOBS) + 1 :]
    return rest.partition(".")[0] if "." in rest else rest


def test_no_import_circle_between_the_job_queues_parts() -> None:
    parts: dict[str, set[str]] = {}
    for name, deps in _graph(type_checking=True).items():
        if not name.startswith(JOBS + ".") or name == JOBS:
            continue  # the public API imports every part
        here = _part(name)
        parts.setdefault(here, set()).update(
            _part(d) for d in deps if d.startswith(JOBS + ".") and _part(d) != here
        )
    assert _cycle(parts) is None
