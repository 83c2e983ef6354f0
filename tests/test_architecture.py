"""The layout's rules (docs/architecture.md), checked on the source: imports point one way
(down the layers, never in a circle), the losses import nothing else of the project, and no
module grows past 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("objectives", "sweep", "api")
# Lower layers first; a module may import its own layer or those below it.
LAYERS = [
    ("objectives",),
    ("sweep.config",),
    ("sweep.data", "sweep.models", "sweep.storage", "sweep.tracking"),
    ("sweep.engine", "sweep.evaluation"),
    ("sweep.study",),
    ("sweep.service",),
    ("sweep.cli", "sweep.__main__", "api"),
]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules a file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known}


def layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


GRAPH = {name: imports_of(path, modules()) - {name} for name, path in modules().items()}


def test_every_module_has_a_layer_and_imports_only_downwards():
    wrong = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
             for m, deps in GRAPH.items() for d in deps if layer(d) > layer(m)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_losses_import_nothing_else_of_the_project():
    outside = {f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith("objectives")
               for d in deps if not d.startswith("objectives")}
    assert not outside, outside


def test_no_module_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
