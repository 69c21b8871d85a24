"""The README's Python API line, run exactly as the README writes it, in fresh interpreters.

``from nst_engine import stylize`` once gave the *module* ``nst_engine.stylize`` (a submodule
of that name replaced the package attribute once imported); the line is taken from the README
itself, so the test follows the documentation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_api_line() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"`(from nst_engine import [^`]*)`", text)
    assert found, "the README no longer shows `from nst_engine import ...`"
    return found[0]


CHECK = textwrap.dedent("""
    import inspect
    import nst_engine
    assert callable(stylize) and inspect.isfunction(stylize), type(stylize)
    assert stylize.__module__ == "nst_engine.transfer.pipeline", stylize.__module__
    assert inspect.isclass(StyleParams) and StyleParams().max_size > 0
""")

RUN = textwrap.dedent("""
    from PIL import Image
    content = Image.new("RGB", (40, 30), (200, 120, 40))
    style = Image.new("RGB", (32, 32), (20, 60, 220))
    out = stylize(content=content, styles=[(style, 1.0)],
                  params=StyleParams(max_size=64, levels=1, iterations=1, seed=1),
                  device="cpu", weights=WEIGHTS)
    assert out.size == (40, 30) and out.mode == "RGB", (out.size, out.mode)
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("before", [
    "",                                    # the line on its own
    "import nst_engine.transfer",          # after the engine module was imported
    "from nst_engine import transfer",
    "import nst_engine.transfer as t\nfrom nst_engine import *",
    "import nst_engine.transfer.pipeline",  # the module that defines it
])
def test_readme_api_line_gives_the_function(before):
    line = readme_api_line()
    run = run_python(f"{before}\n{line}\n{CHECK}")
    assert run.returncode == 0, run.stderr


def test_readme_api_line_runs_a_style_transfer(random_weights_file):
    line = readme_api_line()
    code = (f"WEIGHTS = {str(random_weights_file)!r}\nimport nst_engine.transfer\n"
            f"{line}\n{CHECK}\n{RUN}")
    run = run_python(code)
    assert run.returncode == 0, run.stderr
