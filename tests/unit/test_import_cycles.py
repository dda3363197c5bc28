"""Homeport's modules import one another without cycles: every import counts, at module level, inside a
function or under `TYPE_CHECKING`, so a cycle cannot hide behind a local import.

A cycle that cannot go yet is listed in `ALLOWED` with why; the test fails when one appears that is
not listed, and when a listed one is gone (so the list only shrinks).
"""

from __future__ import annotations

import grimp

# A strongly connected set of modules -> why it is still one. Empty: none is left.
ALLOWED: dict[frozenset[str], str] = {}


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def _describe(graph: grimp.ImportGraph, component: set[str]) -> str:
    lines = []
    for importer in sorted(component):
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & component):
            where = graph.get_import_details(importer=importer, imported=imported)
            at = ", ".join(str(d["line_number"]) for d in where)
            lines.append(f"    {importer} -> {imported} (line {at})")
    return "\n".join(lines)


def test_homeports_modules_import_one_another_without_cycles():
    graph = grimp.build_graph("homeport", cache_dir=None)
    cycles = [frozenset(c) for c in _cycles(graph)]
    new = [c for c in cycles if c not in ALLOWED]
    assert not new, "import cycles among homeport's modules:\n" + "\n".join(_describe(graph, set(c)) for c in new)
    gone = [sorted(c) for c in ALLOWED if c not in cycles]
    assert not gone, f"these allowed cycles are gone: remove them from ALLOWED: {gone}"


def test_the_cycle_check_sees_local_and_type_checking_imports():
    """The check is only as good as the graph: a function-local import must count as an import."""
    graph = grimp.build_graph("homeport", cache_dir=None)
    # `_template` imports the runtime inside the functions that run a container (it starts lean).
    assert "homeport.runtime._runtime" in graph.find_modules_directly_imported_by("homeport.runtime._template")
