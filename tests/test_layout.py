"""The layout's rules (docs/architecture.md), checked on the source: no import cycles, counting
imports inside functions, and no module importing another module's private names."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"lra": REPO / "lra", "lra.models": REPO / "models", "lra.kernels": REPO / "kernels"}


def module_files():
    """{dotted name: path} of every module of the three import roots."""
    found = {}
    for prefix, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((prefix, *parts))] = path
    return found


MODULES = module_files()


def imported_names(name, path):
    """(module, name or None, line) for every import in the file, wherever it stands."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            yield from ((base, alias.name, node.lineno) for alias in node.names)


def edges(name):
    """The modules of ours that `name` imports, and the private names it takes from another."""
    targets, private = set(), []
    for base, item, line in imported_names(name, MODULES[name]):
        if item and f"{base}.{item}" in MODULES:
            targets.add(f"{base}.{item}")
        elif base in MODULES:
            targets.add(base)
            if item and item.startswith("_") and base != name:
                private.append(f"{MODULES[name].relative_to(REPO)}:{line} takes {base}.{item}")
    return targets - {name}, private


GRAPH = {name: edges(name) for name in MODULES}


def find_cycle():
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH[module][0]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_walk_sees_every_room():
    assert {"lra.cli", "lra.train", "lra.models.s4d", "lra.kernels.dispatch"} <= set(MODULES)
    assert "lra.kernels.dispatch" in GRAPH["lra.kernels.selective_scan"][0] | {
        t for m in MODULES if m.startswith("lra.kernels.selective_scan") for t in GRAPH[m][0]}


def test_no_import_cycles():
    assert find_cycle() is None, " -> ".join(find_cycle())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    assert GRAPH[name][1] == []


def test_dependencies_point_one_way():
    """Harness -> models -> kernels: kernels import no model or harness module, models no harness
    module but the registry and config-free helpers."""
    for name, (targets, _) in GRAPH.items():
        if name.startswith("lra.kernels"):
            assert all(t.startswith("lra.kernels") for t in targets), (name, targets)
        if name.startswith("lra.models"):
            assert all(t.startswith(("lra.models", "lra.kernels")) or t in ("lra.registry", "lra")
                       for t in targets), (name, targets)
