"""The settings' ranges and the device list the plug-in shows come from the engine: the
generated table gimp_plugin/nst-style-transfer/nst_settings.py is what
gimp_plugin/make_settings.py makes from nst_engine/params.py and nst_engine/cli.py today, so a
changed range or a new device cannot leave the dialog behind."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
MAKER = ROOT / "gimp_plugin" / "make_settings.py"


def maker():
    spec = importlib.util.spec_from_file_location("make_settings", MAKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_what_the_engine_defines_now():
    make = maker()
    assert make.TARGET.read_text(encoding="utf-8") == make.render(), \
        "nst_settings.py is out of date: run `python gimp_plugin/make_settings.py`"


def test_the_table_follows_a_changed_range(monkeypatch):
    # The check above can fail: a field's new range shows in the rendered table.
    from nst_engine import params

    make = maker()
    before = make.render()
    field = params.PARAM_FIELDS["iterations"]
    monkeypatch.setitem(params.PARAM_FIELDS, "iterations", SimpleNamespace(
        default=field.default, metadata={**field.metadata, "max": 50000}))
    assert make.render() != before and "'iterations': (1, 50000, 300)" in make.render()


def test_the_table_is_standard_library_only_and_holds_data_only():
    tree = ast.parse(make_text := maker().TARGET.read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom,
                                                            ast.FunctionDef, ast.Call))]
    namespace: dict = {}
    exec(compile(make_text, "nst_settings.py", "exec"), namespace)  # noqa: S102
    from nst_engine.cli import DEVICES
    assert namespace["DEVICES"] == tuple(DEVICES)
    assert set(namespace["RANGES"]) == set(maker().FIELDS)
