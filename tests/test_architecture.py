"""The package's import graph (parsed, not imported): no cycles, training apart from inference, ``viz``
downstream of the library (issue 20's layering)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package name it installs as (data_prep and viz live in the deepsdf_ad namespace, through
# the links deepsdf_ad/data_prep and deepsdf_ad/viz)
PACKAGES = {"data_prep": "deepsdf_ad.data_prep", "deepsdf_ad": "deepsdf_ad", "viz": "deepsdf_ad.viz"}
VIZ = "deepsdf_ad.viz"
# the command layer: the only modules that may start a training run or draw (the article builder runs
# experiments and draws their figures)
COMMANDS = {"deepsdf_ad.cli", "deepsdf_ad.experiment", "deepsdf_ad.demo", "deepsdf_ad.article"}


def is_command(module: str) -> bool:
    return module in COMMANDS or module.startswith("deepsdf_ad.commands")


def module_name(path: Path) -> str:
    folder, *parts = path.relative_to(ROOT).with_suffix("").parts
    parts = [*PACKAGES[folder].split("."), *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth of the file: lazy imports count)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if not any((ROOT / pkg / q).is_symlink() for q in p.relative_to(ROOT / pkg).parts[:1])}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                # "from pkg import mod" imports a module; "from mod import name" the module itself
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    graph = import_graph()
    # a package's __init__ importing its own modules is the package's face, not a cycle through it
    for m in graph:
        graph[m] = {n for n in graph[m] if not m.startswith(n + ".")}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_only_the_command_layer_imports_the_training_loop():
    graph = import_graph()
    importers = {m for m, deps in graph.items() if "deepsdf_ad.train" in deps}
    assert all(is_command(m) for m in importers), importers


def test_viz_is_downstream_of_the_library():
    graph = import_graph()
    upward = {(m, n) for m, deps in graph.items() if not m.startswith(VIZ) and not is_command(m)
              for n in deps if n.startswith(VIZ)}
    assert not upward, upward


def test_the_graph_sees_lazy_and_relative_imports():
    # the checks above can fail: the parser finds imports inside functions
    graph = import_graph()
    assert "deepsdf_ad.meshing" in graph["deepsdf_ad.commands.mesh"]  # imported inside a function
    assert "deepsdf_ad.train" in graph["deepsdf_ad.commands.train"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
