"""Run commands inside a cached Debian tree (built by make-tree.sh) holding a real GIMP 3.

Each command gets its own mount and PID namespace: /proc and /dev are mounted for it alone, so
no mount outlives the command, ``ps`` inside sees only the command's own processes, and anything
it leaves running is killed when it ends. Needs root (unshare + chroot).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("NST_TREE_CACHE") or Path.home() / ".cache" / "nst-style-transfer")
#: suite -> the GIMP console binary it ships (GIMP 3.0.x in Debian 13, 3.2.x in testing).
SUITES = {"trixie": "gimp-console-3.0", "forky": "gimp-console-3.2"}
GUI_BINARIES = {"trixie": "gimp-3.0", "forky": "gimp-3.2"}
READY_STAMP = ".nst-tree-ready"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs on the host inside the new namespaces: mount what the tree needs, then enter it.
_ENTER = ('set -e; r="$1"; shift; mount -t proc proc "$r/proc"; '
          'mount --rbind /dev "$r/dev"; mount -t tmpfs -o size=512m tmpfs "$r/dev/shm"; '
          'exec chroot "$r" "$@"')


class Tree:
    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.root = CACHE / f"debian-{suite}"
        self.console = SUITES[suite]
        self.gui = GUI_BINARIES[suite]

    def missing_reason(self) -> str | None:
        """Why this tree cannot be used here, or None when it can."""
        if os.geteuid() != 0:
            return "the GIMP end-to-end tests need root (unshare + chroot)"
        if not shutil.which("unshare"):
            return "unshare (util-linux) is not installed"
        if not (self.root / READY_STAMP).is_file():
            return (f"no GIMP tree at {self.root}: build it with "
                    f"`tests/gimp/make-tree.sh {self.suite}`")
        return None

    def host_path(self, inside: str | os.PathLike) -> Path:
        """The host path of a path inside the tree."""
        return self.root / str(inside).lstrip("/")

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str = "/",
            stdin: bytes | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the tree with exactly ``env`` (plus PATH); output captured."""
        full_env = {"PATH": PATH, "LANG": "C.UTF-8", **(env or {})}
        inner = ["env", "-i", *(f"{k}={v}" for k, v in full_env.items()),
                 "sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
        cmd = ["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
               "sh", "-c", _ENTER, "nst-enter", str(self.root), *inner]
        return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
