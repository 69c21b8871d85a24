"""Run the tests: ``python3 tests/run.py [pytest's arguments]`` (the README's test command).

Standard library only, so it runs with any Python 3.10+, including a system Python that pip
refuses to install into (PEP 668's "externally managed" Debian and Ubuntu): the packages go
into a virtual environment outside the clone, ``~/.cache/nst-style-transfer/venv-pyX.Y``
(``$NST_CACHE`` moves the folder; the same one ``.ci/run`` uses), made on first use. The
engine is installed there with ``pip install -e '.[test]'`` (PyTorch: ~5.5 GB the first
time), again only when ``pyproject.toml`` or the clone changed, then pytest runs from the
clone's root with the arguments given, and its exit status is this script's.

Inside an active virtual environment (``VIRTUAL_ENV``) that one is used instead: the user
chose it. Nothing else about the machine is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_PYTHON = (3, 10)


def cache_dir() -> Path:
    return Path(os.environ.get("NST_CACHE") or Path.home() / ".cache" / "nst-style-transfer")


def venv_dir() -> Path:
    """The environment the tests run in: the active one, else the shared cache's for this
    Python's version (packages built for one version do not load in another)."""
    active = os.environ.get("VIRTUAL_ENV")
    if active and Path(sys.prefix).resolve() == Path(active).resolve():
        return Path(active)
    return cache_dir() / ("venv-py%d.%d" % sys.version_info[:2])


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fail(message: str, hint: str) -> int:
    """A one-line ``error:`` and what to do, no traceback (the user's to fix, not ours)."""
    print(f"error: {message}\n  {hint}", file=sys.stderr)
    return 2


def _works(python: Path) -> bool:
    try:
        return subprocess.run([str(python), "-c", "import sys"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def make_venv(venv: Path) -> int:
    """Make ``venv`` unless it has a working Python. One whose Python no longer runs (the
    system Python it was made from was upgraded or removed) is made again: it holds nothing
    but what pip puts back."""
    python = venv_python(venv)
    if _works(python):
        return 0
    if venv.exists():
        print(f"tests/run.py: {venv} has no working Python; making it again", file=sys.stderr)
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"tests/run.py: making a virtual environment in {venv}", file=sys.stderr)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)])
    if made.returncode != 0 or not _works(python):
        shutil.rmtree(venv, ignore_errors=True)  # half-made: the next run starts clean
        return fail(f"{sys.executable} -m venv could not make {venv}.",
                    "Install the venv module (Debian/Ubuntu: sudo apt install python3-venv) "
                    "and run again.")
    return 0


def stamp() -> str:
    """What the installed packages depend on: the clone (``-e`` links to it) and its
    dependency list."""
    deps = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return json.dumps({"root": str(ROOT), "pyproject": deps})


def install(venv: Path) -> int:
    """``pip install -e '.[test]'`` into ``venv`` unless done for this clone and pyproject."""
    mark = venv / "nst-test-install.json"
    try:
        if mark.read_text(encoding="utf-8") == stamp():
            return 0
    except OSError:
        pass
    print(f"tests/run.py: installing the engine and the test packages into {venv} "
          "(PyTorch is large: the first time takes a while)", file=sys.stderr)
    done = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", "-e", ".[test]"], cwd=ROOT)
    if done.returncode != 0:
        return fail(f"pip could not install the engine's packages into {venv} "
                    f"(status {done.returncode}; its lines are above).",
                    "Check the network and the free disk space (PyTorch needs ~6 GB), then "
                    "run again.")
    mark.write_text(stamp(), encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    if sys.version_info[:2] < MIN_PYTHON:
        return fail("the tests need Python %d.%d or newer, not %d.%d."
                    % (MIN_PYTHON + tuple(sys.version_info[:2])),
                    "Run this script with a newer Python (e.g. python3.12 tests/run.py).")
    venv = venv_dir()
    status = make_venv(venv) or install(venv)
    if status:
        return status
    # As if the venv were activated (what the tests' subprocesses find on PATH is its own).
    python = venv_python(venv)
    env = dict(os.environ, VIRTUAL_ENV=str(venv),
               PATH=os.pathsep.join([str(python.parent), os.environ.get("PATH", "")]))
    try:
        return subprocess.run([str(python), "-m", "pytest", *argv], cwd=ROOT, env=env).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
