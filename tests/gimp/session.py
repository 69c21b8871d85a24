"""One GIMP tree with a fresh HOME and the plug-in installed by ``install.py``, as a user would:
runs GIMP batch scripts (console) and GUI scripts (under Xvfb) in it. Used by conftest.py and
screenshot.py; needs no pytest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from .tree import Tree

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
GIMP_BATCH = ["-i", "-d", "-f", "--batch-interpreter", "python-fu-eval", "-b", "-", "--quit"]


def _checkout_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as a user would copy it."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             check=True, capture_output=True).stdout.decode()
        return [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]


class GimpSession:
    """One tree, one fresh HOME, the plug-in installed: runs GIMP scripts in it."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.work = f"/tmp/nst-e2e-{uuid.uuid4().hex[:8]}"  # inside the tree
        self.src = f"{self.work}/src"
        self.home = f"{self.work}/home"
        self.weights = f"{self.work}/vgg19-random.pth"
        self.scripts = f"{self.src}/tests/gimp/scripts"
        self.timings: dict[str, float] = {}
        self.log: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        # The warm engine's folder: this session's own (not the tree's shared /tmp). The
        # scripts' folder: where they import prelude.py from (python-fu-eval gives them no
        # __file__).
        return {"HOME": self.home, "NST_RUNTIME_DIR": f"{self.work}/run",
                "NST_E2E_SCRIPTS": self.scripts, **extra}

    def sh(self, argv: list[str], what: str, *, cwd: str = "/", stdin: bytes | None = None,
           env: dict[str, str] | None = None, timeout: float = 600,
           check: bool = True) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        done = self.tree.run(argv, env=env or self.env(), cwd=cwd, stdin=stdin, timeout=timeout)
        self.timings[what] = round(time.monotonic() - t0, 1)
        text = done.stdout.decode("utf-8", "replace")
        self.log.append(f"### {what} (rc {done.returncode})\n{text[-6000:]}")
        if check and done.returncode != 0:
            raise AssertionError(f"{what} failed in {self.tree.suite} (rc {done.returncode}):\n"
                                 f"{text[-4000:]}")
        return done

    def set_up(self) -> None:
        dest = self.tree.host_path(self.src)
        for rel in _checkout_files():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target)
        self.tree.host_path(self.home).mkdir(parents=True)
        # A real profile, made by GIMP itself, so the installer's profile search is exercised.
        self.batch("print('profile:', Gimp.directory())", "first GIMP start (profile)")
        self.sh(["python3", "-m", "nst_engine.testing", self.weights], "random weights",
                cwd=self.src)
        self.sh(["python3", "install.py", "--python", "/usr/bin/python3",
                 "--weights", self.weights], "install.py", cwd=self.src)
        # The suite was written for an engine per run, and asserts that none is left after a
        # run; test_warm_e2e.py turns the warm engine on for its own runs.
        self.set_config(keep_warm=0)

    def set_config(self, **values) -> None:
        """Change keys of config.json in this session's HOME."""
        path = self.tree.host_path(f"{self.home}/.config/nst-style-transfer/config.json")
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg.update(values)
        path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")

    def batch(self, script: str, what: str, *, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
        return self.sh([self.tree.console, *GIMP_BATCH], what, stdin=script.encode(),
                       env=self.env(**(env or {})), timeout=timeout)

    def findings_path(self, what: str) -> str:
        """Where a script run as ``what`` writes its findings ($NST_E2E_OUT), inside the tree."""
        return f"{self.work}/{what.replace(' ', '-')}.json"

    def read_findings(self, out: str, done: subprocess.CompletedProcess, what: str) -> dict:
        """The findings a script wrote to ``out``; a failure that shows GIMP's output when it
        wrote none, or the traceback when the script raised."""
        path = self.tree.host_path(out)
        if not path.is_file():
            raise AssertionError(f"{what}: GIMP wrote no results (rc {done.returncode}):\n"
                                 + done.stdout.decode("utf-8", "replace")[-4000:])
        found = json.loads(path.read_text(encoding="utf-8"))
        assert "exception" not in found, found["exception"]
        return found

    def run_checks(self, script_name: str, what: str, **env: str) -> dict:
        """Run scripts/<script_name> in GIMP; it writes its findings as JSON."""
        out = self.findings_path(what)
        script = (SCRIPTS / script_name).read_text(encoding="utf-8")
        done = self.batch(script, what, env={"NST_E2E_OUT": out, **env}, timeout=900)
        found = self.read_findings(out, done, what)
        found["gimp_output"] = done.stdout.decode("utf-8", "replace")
        return found

    def run_gui(self, script_name: str, what: str, timeout: float = 240, **env: str) -> dict:
        """Run scripts/<script_name> in GIMP's GUI under a private Xvfb (scripts/gui_run.py);
        it writes its findings as JSON. ``procs``: processes left alive at the end. ``env``:
        more variables for GIMP (and so its plug-ins)."""
        out = self.findings_path(what)
        done = self.sh(["python3", f"{self.scripts}/gui_run.py", self.tree.gui,
                        f"{self.scripts}/{script_name}", str(timeout)], what,
                       env=self.env(NST_E2E_OUT=out, **env), timeout=timeout + 60, check=False)
        found = self.read_findings(out, done, what)
        procs = self.tree.host_path(out + ".procs")
        found["procs"] = procs.read_text().split("\n") if procs.is_file() else ["(no list)"]
        found["procs"] = [p for p in found["procs"] if p]
        found["runner_rc"] = done.returncode
        return found

    def file_text(self, inside: str) -> str:
        return self.tree.host_path(inside).read_text(encoding="utf-8", errors="replace")

    def tear_down(self) -> None:
        shutil.rmtree(self.tree.host_path(self.work), ignore_errors=True)
