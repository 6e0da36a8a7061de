"""The packages depend on each other one way: no import cycle between them, and ``protocol`` stays sans-I/O.

The imports are read from the source (``ast``), nothing is executed: every ``import`` counts,
also one inside a function or under ``TYPE_CHECKING`` (a cycle hidden from the interpreter is
still a cycle for a reader). A unit is a subpackage of ``server`` (``server.edge``,
``server.rounds`` …) or a top-level module (``server.node``, ``server.app`` …); imports
inside a unit are its own business.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "protocol")
IO_MODULES = frozenset({"asyncio", "socket", "selectors", "ssl", "subprocess", "threading", "asyncpg", "redis"})
"""What ``protocol`` may not import: event loops, sockets, processes, threads, database clients."""


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, where the import is written."""

    source: str  # the importing module, dotted
    target: str  # the imported module, dotted (a name imported from a package counts as the package's submodule
    # when such a module exists)
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """Every module ``name`` imports, absolute, with relative imports resolved."""
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(name, alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.append(Import(name, submodule if submodule in known else module, path, node.lineno))
    return found


def unit_of(module: str) -> str | None:
    """The layering unit of a module of ours: ``server.<subpackage>``, ``server.<module>``, ``protocol``."""
    parts = module.split(".")
    if parts[0] == "protocol":
        return "protocol"
    if parts[0] != "server":
        return None
    return ".".join(parts[:2])


def unit_graph() -> dict[str, dict[str, list[Import]]]:
    """unit -> unit it imports -> the imports that make the edge."""
    known = all_modules()
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for name, path in known.items():
        source = unit_of(name)
        assert source is not None
        graph[source]  # every unit is a node, also one that imports nothing of ours
        for imported in imports_of(name, path, known):
            target = unit_of(imported.target)
            if target is not None and target != source and target != "server":
                graph[source][target].append(imported)
    return graph


def cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each as one cycle through it
    (a component's other cycles show in :func:`describe`)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for target in sorted(graph[unit]):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in on_stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return [cycle_through(graph, component) for component in components]


def cycle_through(graph: dict[str, dict[str, list[Import]]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first unit back to itself, inside the component."""
    start = component[0]
    members = set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for unit in frontier:
            for target in sorted(graph[unit]):
                if target == start:
                    return [*paths[unit], start]
                if target in members and target not in paths:
                    paths[target] = [*paths[unit], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def describe(graph: dict[str, dict[str, list[Import]]], cycle: list[str]) -> str:
    """The cycle, then every import between the units on it (any of them may be the one to remove)."""
    members = set(cycle)
    lines = [" -> ".join(cycle)]
    for source in sorted(members):
        for target in sorted(set(graph[source]) & members):
            sites = ", ".join(dict.fromkeys(f"{i.where()} ({i.target})" for i in graph[source][target]))
            lines.append(f"    {source} -> {target}: {sites}")
    return "\n".join(lines)


def test_no_import_cycle_between_packages() -> None:
    graph = unit_graph()
    assert {"server.edge", "server.rounds", "server.ledger", "server.node", "protocol"} <= set(graph)
    found = cycles(graph)
    assert not found, "import cycles between packages:\n" + "\n".join(describe(graph, c) for c in found)


def test_protocol_imports_no_server_code_and_no_io() -> None:
    known = all_modules()
    offending = [
        f"{i.where()} imports {i.target}"
        for name, path in known.items()
        if name.split(".")[0] == "protocol"
        for i in imports_of(name, path, known)
        if i.target.split(".")[0] == "server" or i.target.split(".")[0] in IO_MODULES
    ]
    assert not offending, "protocol/ must stay sans-I/O and free of server code:\n" + "\n".join(offending)


def test_the_cycle_finder_names_a_cycle_and_its_import_sites() -> None:
    """The checker itself: a made-up graph with one cycle of three units and a unit outside it."""
    site = Import("a", "b", ROOT / "server" / "a.py", 3)
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    graph["server.a"]["server.b"].append(site)
    graph["server.b"]["server.c"].append(site)
    graph["server.c"]["server.a"].append(site)
    graph["server.c"]["server.d"].append(site)
    graph["server.d"]
    found = cycles(graph)
    assert found == [["server.a", "server.b", "server.c", "server.a"]]
    assert "server/a.py:3" in describe(graph, found[0])


def test_relative_imports_resolve_to_the_modules_they_name() -> None:
    known = all_modules()
    targets = {i.target for i in imports_of("server.edge.session", known["server.edge.session"], known)}
    assert "protocol.messages" in targets  # `from protocol import messages as m`: the submodule
    assert "server.edge.ratelimit" in targets  # `from .ratelimit import RateLimiter`
