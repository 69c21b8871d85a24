"""The engine's Python: the interpreter and PYTHONPATH that run ``python -m nst_engine``, the
venv and pip commands that make one, and what the installer asks it. The installer carries no
engine code: what it needs to know it asks the interpreter (``--version``) and then the engine
itself (``doctor --json``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_engine.bridge import warm
from nst_engine.bridge.client import child_env

from .errors import InstallError
from .log import say

#: The engine's own floor (pyproject.toml's requires-python); install.py's first lines repeat
#: it for the installer's Python, since they must run before anything is imported.
MIN_PYTHON = (3, 10)


@dataclass
class Engine:
    python: str
    pythonpath: list[str] | None = None

    def env(self) -> dict[str, str]:
        return child_env(self.pythonpath)

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "nst_engine", *args]

    def doctor(self, *args: str) -> dict[str, Any] | None:
        """The engine's ``doctor --json`` report on itself (``--quick``: without importing
        torch); None when it gives none: no such interpreter, or no nst_engine it can import.
        Its exit status only says whether it found problems, so the report is read either way."""
        try:
            done = subprocess.run(self.argv("doctor", "--json", *args), stdin=subprocess.DEVNULL,
                                  capture_output=True, env=self.env(), timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            return None
        try:
            report = json.loads(done.stdout.decode("utf-8", "replace"))
        except ValueError:
            return None
        return report if isinstance(report, dict) else None


def python_version(python: str) -> tuple[int, ...] | None:
    """``python --version`` as numbers, or None when it does not run as a Python. Asked of the
    interpreter, not the engine: the engine need not even import on a Python too old for it."""
    try:
        done = subprocess.run([python, "--version"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # Before 3.4, Python printed its version on stderr.
    m = re.match(r"Python (\d+)\.(\d+)\.(\d+)",
                 (done.stdout + done.stderr).decode("utf-8", "replace").strip())
    return tuple(int(g) for g in m.groups()) if done.returncode == 0 and m else None


def missing_modules(report: dict[str, Any]) -> list[str]:
    """The modules the engine imports that its Python lacks, from its doctor report."""
    return [m for m, p in report["packages"].items() if not p["found"]]


def package_versions(report: dict[str, Any]) -> str:
    return ", ".join(f"{m} {p['version']}" for m, p in report["packages"].items()
                     if p["version"])


def missing_packages_error(python: str, report: dict[str, Any]) -> InstallError:
    missing = missing_modules(report)
    # Debian packages a Python module as python3-<module name in lower case> (python3-pil).
    return InstallError(
        f"{python} lacks what the engine needs: {', '.join(missing)}.",
        "Install them for that Python: on Debian/Ubuntu `sudo apt install "
        + " ".join("python3-" + m.lower() for m in missing) + "`, or `" + python
        + " -m pip install " + " ".join(report["packages"][m]["pip"] for m in missing)
        + "`. Or leave out --python: the installer then makes its own venv with PyTorch "
        "from PyPI.")


def venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


#: The optional dependencies (pyproject.toml) the installer's venv gets.
ENGINE_EXTRAS = "animation"


def pip_commands(python: str, checkout: Path, torch_index_url: str | None = None,
                 editable: bool = False) -> list[list[str]]:
    """The pip runs that put the engine into a venv.

    With ``--torch-index-url``, torch and torchvision come first from that index alone
    (``--index-url``, exactly as pytorch.org's own instructions do: the CPU-only or a given
    CUDA build), and then the engine from PyPI, where the torch already there satisfies its
    requirement. ``--extra-index-url`` would let pip pick torch from either index by version
    number, which is not what a user naming an index wants.
    """
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    # With the ``animation`` extra: OpenCV's optical flow (opencv-python-headless), which
    # only animations need; an engine without it still does stills.
    engine = f"{checkout}[{ENGINE_EXTRAS}]"
    cmds = []
    if torch_index_url:
        cmds.append(pip + ["--index-url", torch_index_url, "torch", "torchvision"])
    if editable:
        cmds.append(pip + ["--editable", engine])
    else:
        cmds.append(pip + [engine])
        # The version number does not change with every edit: reinstall our own sources.
        cmds.append(pip + ["--no-deps", "--force-reinstall", str(checkout)])
    return cmds


def stop_warm_engine(remove_folder: bool = False) -> None:
    """A warm engine still runs the code and settings of before: stop it (the next plug-in run
    starts the new one). ``remove_folder``: also its socket folder (--uninstall)."""
    pid = warm.stop_engine()
    if pid:
        say(f"Stopped the running Style Transfer engine (pid {pid}); the next run starts "
            "the new one.")
    if remove_folder and warm.supported():
        try:
            folder = warm.private_dir(create=False)
        except warm.WarmUnavailable:
            return
        for name in (warm.SOCKET_NAME, warm.LOCK_NAME):
            (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass
