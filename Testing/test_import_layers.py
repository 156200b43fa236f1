"""The core's modules import one another without cycles (issue 23, item 5: session → policies → thresholding used
to import session back, inside functions), so every module can be read, tested and loaded on its own."""
from __future__ import annotations

import ast

from conftest import REPO

CORE = REPO / "IterMaskSlicer" / "itermask"


def _imports(path) -> set[str]:
    """The core modules ``path`` imports, at the top or inside functions (relative imports only: ``from .x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return {name.split(".")[0] for name in found}


def test_no_module_of_the_core_imports_itself_back():
    graph = {p.stem: _imports(p) for p in CORE.glob("*.py") if p.stem != "__init__"}
    cycles = []

    def visit(module, trail):
        for needed in sorted(graph.get(module, ())):
            if needed in trail:
                cycles.append(trail[trail.index(needed):] + [needed])
            elif needed in graph:
                visit(needed, trail + [needed])

    for module in graph:
        visit(module, [module])
    assert not cycles, " ; ".join(" → ".join(c) for c in cycles[:5])
    assert "session" not in graph["thresholding"] | graph["policies"]
