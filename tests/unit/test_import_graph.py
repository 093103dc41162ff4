"""No two parts of `app` import each other.

Each package under app/ (api, background, db, ...) and each top-level module is a
part. A part may import another only if that one does not import it back, directly:
a two-way tie means neither can be read, tested or moved alone. Imports are read
with `ast`, including those inside functions, so a deferred import counts too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def _part(module: str) -> str | None:
    names = module.split(".")
    return names[1] if names[0] == "app" and len(names) > 1 else None


def _imported(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "app":
                found.update(f"app.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    """part -> the other parts it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in APP.rglob("*.py"):
        relative = path.relative_to(APP.parent).with_suffix("")
        if len(relative.parts) < 2 or relative.parts[1] == "__init__":
            continue
        source = relative.parts[1]
        for module in _imported(ast.parse(path.read_text(), str(path))):
            target = _part(module)
            if target is not None and target != source:
                graph[source].add(target)
    return graph


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "store" in graph["services"]
    assert "services" in graph["api"]


def test_no_two_parts_import_each_other() -> None:
    graph = import_graph()
    both_ways = sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if a < b and a in graph.get(b, set())
    )
    assert both_ways == []


def test_the_layers_point_one_way() -> None:
    """Data flows api -> services -> store/db: never back up."""
    graph = import_graph()
    assert not graph["store"] & {"api", "services", "background", "realtime", "db"}
    assert not graph["db"] & {"api", "services", "background", "realtime", "store"}
    assert not graph["services"] & {"api", "background", "realtime"}
