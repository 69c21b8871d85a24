"""The layers of the code hold: no import cycles between the project's modules (counting the
imports inside functions), the bridge uses only the standard library and itself, and the
torch-free modules never import torch. Read from the source (``ast``), so an import that only
runs on some path counts as much as one that always runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nst_engine"
#: Modules that must never import torch (directly or through the project's modules).
#: What they import when they are imported counts; torch loaded inside a function that
#: needs it (``nst_engine.stylize``, ``weights.load_weights``) is the point of the lazy import.
TORCH_FREE = ("nst_engine", "nst_engine.params", "nst_engine.presets", "nst_engine.errors",
              "nst_engine.progress", "nst_engine.wording", "nst_engine.cli",
              "nst_engine.doctor", "nst_engine.model", "nst_engine.model.layers",
              "nst_engine.model.weights", "nst_engine.server", "nst_engine.server.attach",
              "nst_engine.bridge.client", "nst_engine.bridge.warm", "nst_engine.bridge.config",
              "nst_engine.bridge.wire", "nst_engine.bridge.errors", "nst_engine.bridge.logs",
              "nst_engine.bridge.process", "nst_engine.bridge.retry")
STDLIB = set(sys.stdlib_module_names)
PLUGIN = ROOT / "gimp_plugin" / "nst-style-transfer"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str, level: int, here: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, modules: dict[str, Path], *,
               at_import: bool = False) -> set[str]:
    """Every module ``name`` imports anywhere in its source (functions included; only blocks
    under ``if TYPE_CHECKING:`` are left out, since they never run); ``at_import``: only what
    runs when the module is imported (no function bodies). ``from pkg import x`` where ``x``
    is a module counts as importing ``pkg.x``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and _is_type_checking(node) for b in node.body for n in ast.walk(b)}
    if at_import:
        skip |= {id(n) for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for b in node.body for n in ast.walk(b)}
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return found


def graph(*, at_import: bool = False) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a package's import of its own submodule
    included)."""
    modules = project_modules()
    edges = {name: {m for m in imports_of(name, path, modules, at_import=at_import)
                    if m in modules and m != name}
             for name, path in modules.items()}
    if at_import:  # importing a module runs its packages' __init__ first
        for name in modules:
            parts = name.split(".")
            edges[name] |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for w in edges[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_reads_imports_inside_functions(tmp_path):
    src = tmp_path / "nst_engine" / "x.py"
    src.parent.mkdir()
    src.write_text("def f():\n    from .y import z\n    from . import w\n")
    mods = {"nst_engine.x": src, "nst_engine.y": src, "nst_engine.w": src}
    assert imports_of("nst_engine.x", src, mods) == {"nst_engine.y", "nst_engine.w"}


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_bridge_imports_only_the_standard_library_and_itself():
    modules = project_modules()
    for name, path in modules.items():
        if not name.startswith("nst_engine.bridge"):
            continue
        for imported in imports_of(name, path, modules):
            top = imported.split(".")[0]
            assert imported.startswith("nst_engine.bridge") or \
                (top in STDLIB and top != "nst_engine"), f"{name} imports {imported}"


@pytest.mark.parametrize("name", TORCH_FREE)
def test_torch_free_modules_never_reach_torch(name):
    modules = project_modules()
    edges = graph(at_import=True)
    for module in reachable(name, edges):
        third_party = {m.split(".")[0]
                       for m in imports_of(module, modules[module], modules, at_import=True)
                       if not m.startswith("nst_engine")}
        assert not third_party & {"torch", "torchvision", "numpy", "PIL"}, \
            f"{name} reaches {module}, which imports {sorted(third_party)}"


def test_the_plugin_leaves_the_fresh_engine_retry_to_the_bridge():
    """Which failures mean a dead engine, and the one retry on a fresh engine, are decided in
    ``bridge/retry.py`` only: both procedures' runs and the dialog's preview get their
    ``FreshRetry`` from one place in the plug-in (``nst_gimp.engine_retry``), and no plug-in
    module names a dead-engine code."""
    from nst_engine.bridge.retry import DEAD_ENGINE_CODES
    from nst_engine.bridge.wire import Code

    code_names = {name for name, value in vars(Code).items() if value in DEAD_ENGINE_CODES}
    assert code_names, "the dead-engine codes are wire.Code's"
    made = 0
    for path in sorted(PLUGIN.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant):
                assert node.value not in DEAD_ENGINE_CODES, f"{path.name} names {node.value!r}"
            elif isinstance(node, (ast.Attribute, ast.Name)):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                assert name not in code_names, f"{path.name} names Code.{name}"
                if isinstance(node, ast.Name) and name == "FreshRetry" and \
                        isinstance(node.ctx, ast.Load):
                    made += 1
    assert made == 1, "one place in the plug-in makes the FreshRetry (nst_gimp.engine_retry)"
