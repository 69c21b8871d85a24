"""The plug-in folder's layers hold, read from the source as tests/test_architecture.py reads the
engine's: no import cycle (imports inside functions count), the hyphenated main file imports
the others and nothing imports it, the GIMP-free core imports only the standard library, every
module stays readable (no file over 600 lines, the main file only registering), each procedure
name is written once, every user-visible text goes through ``_()``, and the installer puts
every module and the catalogue folder beside the plug-in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_architecture import STDLIB, cycles, imports_of, reachable

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "gimp_plugin" / "nst-style-transfer"
MAIN = "nst-style-transfer"
#: Modules that need no GIMP: the standard library and each other only (tests import them).
CORE = ("nst_core", "nst_settings")
#: What a plug-in module may import: GIMP's Python has the standard library and GI, and
#: nst_bridge (nst_engine/bridge) is copied beside the plug-in.
ALLOWED = {"gi", "nst_bridge"}


def plugin_modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PLUGIN.glob("*.py"))}


def plugin_graph(*, at_import: bool = False) -> dict[str, set[str]]:
    modules = plugin_modules()
    return {name: {m for m in imports_of(name, path, modules, at_import=at_import)
                   if m in modules and m != name}
            for name, path in modules.items()}


def top_imports(name: str, *, at_import: bool = False) -> set[str]:
    modules = plugin_modules()
    return {m.split(".")[0] for m in imports_of(name, modules[name], modules,
                                                  at_import=at_import)}


def tree(name: str) -> ast.Module:
    return ast.parse(plugin_modules()[name].read_text(encoding="utf-8"))


def test_the_plugin_folder_has_no_import_cycle():
    edges = plugin_graph()
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
    # The checker sees this folder's imports at all: the main file reaches its procedures.
    assert {"nst_still", "nst_animation"} <= edges[MAIN]


def test_the_main_file_reaches_every_module_and_nothing_imports_it():
    edges = plugin_graph()
    assert reachable(MAIN, edges) == set(edges), "modules the plug-in never loads"
    assert not [name for name, imported in edges.items() if MAIN in imported]


@pytest.mark.parametrize("name", sorted(plugin_modules()))
def test_plugin_modules_import_only_the_standard_library_gi_and_the_bridge(name):
    others = top_imports(name) - STDLIB - ALLOWED - set(plugin_modules())
    assert not others, f"{name} imports {sorted(others)}, which GIMP's Python lacks"


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_only_the_standard_library(name):
    others = top_imports(name) - STDLIB - set(CORE)
    assert not others, f"{name} imports {sorted(others)}"


def test_the_preview_worker_loads_without_gimp_or_gtk():
    # GTK is imported when the pane is built; the worker and its tests need the core only.
    assert top_imports("nst_preview", at_import=True) <= STDLIB | set(CORE)


@pytest.mark.parametrize("name", sorted(plugin_modules()))
def test_no_file_is_over_600_lines_and_the_main_file_only_registers(name):
    lines = len(plugin_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= (150 if name == MAIN else 600), f"{name}.py has {lines} lines"


def test_each_procedure_name_is_written_once():
    written: dict[str, list[str]] = {}
    for name in plugin_modules():
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.startswith("plug-in-nst-"):
                written.setdefault(node.value, []).append(name)
    assert written == {"plug-in-nst-style-transfer": ["nst_still"],
                       "plug-in-nst-style-transfer-animation": ["nst_animation"]}


#: Calls whose string arguments a user reads: (function name, positions, keywords).
USER_TEXT = {
    "add_layer_argument": ((1, 2), ()), "add_int_argument": ((1, 2), ()),
    "add_double_argument": ((1, 2), ()), "add_boolean_argument": ((1, 2), ()),
    "add_choice_argument": ((1, 2), ()), "add_image_return_value": ((1, 2), ()),
    "add_number_argument": ((2, 3), ()), "set_menu_label": ((0,), ()),
    "UserError": ((0,), ()), "EngineFailure": ((0,), ()), "message": ((0,), ()),
    "run_dialog": ((2,), ()), "PreviewContent": ((4,), ()), "_say": ((0,), ()),
    "set_tooltip_text": ((0,), ()), "new_with_mnemonic": ((0,), ()),
    "progress_init": ((0,), ()), "progress_set_text": ((0,), ()),
}


def untranslated(node: ast.expr) -> bool:
    """A text literal that did not go through ``_()``: a string, an f-string, or an
    expression made of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.strip() != ""
    if isinstance(node, ast.JoinedStr):
        return any(untranslated(v) for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        return untranslated(node.left) or untranslated(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr == "format":
        return untranslated(node.func.value)
    return False


def user_texts(module: ast.Module):
    for node in ast.walk(module):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in USER_TEXT:
            continue
        positions, keywords = USER_TEXT[name]
        for i in positions:
            if i < len(node.args):
                yield name, node.args[i]
        for kw in node.keywords:
            if kw.arg in keywords:
                yield name, kw.value


@pytest.mark.parametrize("name", sorted(plugin_modules()))
def test_every_user_visible_text_goes_through_gettext(name):
    found = [(call, ast.unparse(arg)[:60]) for call, arg in user_texts(tree(name))
             if untranslated(arg)]
    assert not found, f"{name}: text without _(): {found}"
    # A procedure's menu label, blurb and help are marked where they are defined.
    for node in tree(name).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "TEXTS":
            assert all(isinstance(e, ast.Call) and ast.unparse(e.func) == "N_"
                       for e in node.value.elts), f"{name}: TEXTS without N_()"


def test_the_gettext_check_finds_a_bare_text():
    module = ast.parse("raise UserError('Choose a layer.')\nraise UserError(_('Fine.'))\n"
                       "p.add_int_argument('seed', f'S_eed {x}', _('ok'), 0, 1, 0, rw)\n")
    assert [untranslated(a) for _, a in user_texts(module)] == [True, False, True, False]


def test_the_plugin_names_its_catalogue_folder_and_the_installer_puts_it_beside_it():
    from installer.layout import PLUGIN_LOCALE, PLUGIN_MODULES, PLUGIN_SRC

    i18n = next(n for n in ast.walk(tree(MAIN))
                if isinstance(n, ast.FunctionDef) and n.name == "do_set_i18n")
    returned = next(n for n in ast.walk(i18n) if isinstance(n, ast.Return)).value
    assert ast.unparse(returned) == "(True, nst_core.DOMAIN, 'locale')"
    assert PLUGIN_LOCALE == PLUGIN / "locale" and PLUGIN_LOCALE.is_dir()
    # Every module beside the main file is installed with it; nothing else of the folder.
    assert set(PLUGIN_MODULES) == {p for p in PLUGIN.glob("*.py") if p != PLUGIN_SRC} | \
        {PLUGIN_LOCALE}
