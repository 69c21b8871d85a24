"""Writes ``nst-style-transfer/nst_settings.py``: the ranges and defaults of the engine's settings
that the plug-in's dialog shows, and the device names, taken from ``nst_engine/params.py`` and
``nst_engine/cli.py``. GIMP's Python cannot import the engine (no torch, numpy or PyYAML there),
so the plug-in reads this generated table instead of repeating the numbers;
``tests/test_plugin_settings.py`` makes it again and fails when the file differs.

    python gimp_plugin/make_settings.py        (from the repository root, after changing a
                                                field's range or default, or the devices)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "gimp_plugin" / "nst-style-transfer" / "nst_settings.py"
#: The StyleParams fields behind the dialog's numbers (the plug-in's arguments: strength,
#: max-size, iterations, seed, temporal-weight).
FIELDS = ("strength", "max_size", "iterations", "seed", "temporal_weight")

HEADER = '''"""Made by gimp_plugin/make_settings.py from nst_engine/params.py and nst_engine/cli.py: do not
edit. The engine's ranges for the settings the dialog shows (GIMP's Python cannot import the
engine); nst_core turns them into the arguments' ranges. Standard library only."""

'''


def render() -> str:
    """The module's text, from the engine's current definitions."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from nst_engine.cli import DEVICES
    from nst_engine.params import PARAM_FIELDS

    rows = []
    for name in FIELDS:
        spec = PARAM_FIELDS[name]
        rows.append(f"    {name!r}: ({spec.metadata['min']!r}, {spec.metadata['max']!r}, "
                    f"{spec.default!r}),")
    return (HEADER
            + "#: StyleParams field -> (minimum, maximum, default), as params.py defines them.\n"
            + "RANGES = {\n" + "\n".join(rows) + "\n}\n"
            + "#: The engine's devices (nst_engine.cli.DEVICES), in its order.\n"
            + f"DEVICES = {tuple(DEVICES)!r}\n")


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
