"""The README's test command (``python3 tests/run.py``): CI runs exactly it, and it works where
pip may not install into the system Python (PEP 668; issue 35, item 9) by making its own venv.

The script's steps are checked with its subprocesses faked (no venv is made, nothing is
installed): which commands it runs, in which order, when it skips pip, and that each failure is
a one-line ``error:`` with what to do, never a traceback.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests import run as runner

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The two commands at the top of the README (install; run the tests), comments cut."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    block = [line for line in lines[:6] if line.startswith("    ")]
    return [line.split("#", 1)[0].strip() for line in block]


def ci_command() -> str:
    """The last command .ci/run runs."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")][-1]


def test_ci_runs_exactly_the_readmes_test_command_and_it_needs_no_pip_into_the_system():
    install, tests = readme_commands()
    assert install == "python3 install.py"
    assert ci_command() == tests == "python3 tests/run.py"
    assert "pip install" not in tests  # refused by an externally managed Python (PEP 668)
    script = ROOT / shlex.split(tests)[1]
    assert script.is_file() and script.resolve() == Path(runner.__file__).resolve()


class FakeSystem:
    """``subprocess.run`` as the script uses it: makes venvs (a folder), pip, pytest."""

    def __init__(self, venv_status=0, pip_status=0, pytest_status=0) -> None:
        self.calls: list[list[str]] = []
        self.status = {"venv": venv_status, "pip": pip_status, "pytest": pytest_status}

    def __call__(self, cmd, **kw):
        cmd = [str(c) for c in cmd]
        if cmd[1:] == ["-c", "import sys"]:  # _works: a venv's python runs once it is made
            return subprocess.CompletedProcess(cmd, 0 if Path(cmd[0]).exists() else 1)
        self.calls.append(cmd)
        step = cmd[2] if cmd[2] in ("venv", "pytest") else "pip"
        if step == "venv" and self.status["venv"] == 0:
            python = runner.venv_python(Path(cmd[3]))
            python.parent.mkdir(parents=True)
            python.write_text("")
        if step in ("pip", "pytest"):
            assert kw.get("cwd") == runner.ROOT  # -e . and the tests are the clone's
        return subprocess.CompletedProcess(cmd, self.status[step])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    return tmp_path / "cache"


def test_makes_the_venv_once_installs_once_and_passes_pytests_arguments_and_status(
        cache, monkeypatch):
    fake = FakeSystem(pytest_status=5)
    monkeypatch.setattr(runner.subprocess, "run", fake)
    venv = cache / ("venv-py%d.%d" % sys.version_info[:2])
    python = str(runner.venv_python(venv))
    assert runner.main(["-m", "not gimp", "-x"]) == 5  # pytest's status is the script's
    assert fake.calls == [
        [sys.executable, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[test]"],
        [python, "-m", "pytest", "-m", "not gimp", "-x"]]
    fake.calls.clear()
    assert runner.main([]) == 5  # the venv and its packages are reused
    assert fake.calls == [[python, "-m", "pytest"]]
    fake.calls.clear()
    (venv / "nst-test-install.json").write_text('{"pyproject": "an older one"}')
    runner.main([])  # pyproject.toml (or the clone) changed: pip again, the venv kept
    assert [c[2] for c in fake.calls] == ["pip", "pytest"]


@pytest.mark.parametrize("failing, words", [
    ("venv", "sudo apt install python3-venv"),
    ("pip", "Check the network and the free disk space"),
])
def test_a_failed_step_is_one_error_line_with_what_to_do(cache, monkeypatch, capsys,
                                                         failing, words):
    fake = FakeSystem(**{f"{failing}_status": 1})
    monkeypatch.setattr(runner.subprocess, "run", fake)
    assert runner.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and words in err and "Traceback" not in err
    assert "pytest" not in [c[2] for c in fake.calls]  # no tests run without their packages
    if failing == "venv":
        assert not any(cache.iterdir())  # a half-made venv is not left to trip the next run
