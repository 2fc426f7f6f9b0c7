"""promptlab's imports as a graph: module to module (function-level imports included) and layer to layer.

The layers are the top-level folders of the package, in the order they may import one another
(:data:`LAYERS`: each imports only layers before it). ``tests/test_architecture.py`` checks the order
and that no modules import one another in a cycle; ``tools/render_docs.py`` draws the layer graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "promptlab"
BASE = "base"  # the modules at the top of the package: errors, files, run_folder, configs, ...
LAYERS = [BASE, "backbone", "data", "toy", "deploy", "methods", "export", "cli", "workspace"]


def module_name(path: Path) -> str:
    """``promptlab/deploy/classifier.py`` -> ``promptlab.deploy.classifier`` (a package is its __init__)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every promptlab module ``path`` imports, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m == "promptlab" or m.startswith("promptlab.")}


def module_graph() -> dict[str, set[str]]:
    """Module -> the promptlab modules it imports (names of modules and packages that exist)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for imported in imported_modules(path):
            while imported and imported not in paths:  # `from pkg.mod import name` -> pkg.mod
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def layer(module: str) -> str:
    """The layer of a module: its top-level folder, or :data:`BASE` for the package's own modules."""
    if module == "promptlab.__main__":  # `python -m promptlab`: the command line
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else BASE


def layer_graph() -> dict[str, set[str]]:
    """Layer -> the layers its modules import."""
    graph: dict[str, set[str]] = {name: set() for name in LAYERS}
    for module, targets in module_graph().items():
        graph[layer(module)] |= {layer(t) for t in targets if layer(t) != layer(module)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), package __init__ files left out."""
    nodes = [n for n in graph if not (PACKAGE.parent / n.replace(".", "/") / "__init__.py").is_file()]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in nodes:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def mermaid() -> str:
    """The layer graph as a Mermaid flowchart, lower layers at the bottom: an arrow where a layer imports
    another directly and no path through other layers already shows it; every layer may use the base."""
    graph = {source: targets - {BASE} for source, targets in layer_graph().items() if source != BASE}

    def reaches(source: str, target: str, skip: str) -> bool:
        pending, seen = [n for n in graph[source] if n != skip], set()
        while pending:
            node = pending.pop()
            if node == target:
                return True
            if node not in seen:
                seen.add(node)
                pending += graph.get(node, set())
        return False

    lines = ["```mermaid", "flowchart BT"]
    lines += [f'    {name}["{name}/"]' for name in graph]
    for source, targets in graph.items():
        for target in sorted(targets, key=LAYERS.index):
            if not reaches(source, target, skip=target):
                lines.append(f"    {source} --> {target}")
    return "\n".join([*lines, "```"])
