"""Set-up for the end-to-end tests: for each Debian tree (GIMP 3.0.4 / 3.2.6), a fresh HOME with
a real GIMP profile, random VGG19 weights made by the tree's own Python and torch, and the
plug-in installed by ``install.py`` run inside the tree, exactly as a user would.

A tree that is not built is a skip with the command that builds it, except under CI=true, where
it is a failure: CI must run both GIMPs, not quietly neither.
"""

from __future__ import annotations

import os

import pytest

from .session import GimpSession
from .tree import SUITES, Tree


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", params=sorted(SUITES, reverse=True))  # trixie, forky
def gimp(request):
    tree = Tree(request.param)
    reason = tree.missing_reason()
    if reason:
        if _on_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    session = GimpSession(tree)
    try:
        session.set_up()
        yield session
    finally:
        if os.environ.get("NST_E2E_KEEP"):
            print(f"kept {tree.host_path(session.work)}")
        else:
            session.tear_down()
        timing = ", ".join(f"{k} {v}s" for k, v in session.timings.items())
        print(f"\n[{tree.suite}] {timing}")


@pytest.fixture(scope="session")
def gui_undo(gimp):
    """The findings of scripts/gui_undo.py: a run, then Ctrl+Z and Ctrl+Y in GIMP's GUI."""
    return gimp.run_gui("gui_undo.py", "gui undo")


@pytest.fixture(scope="session")
def checks(gimp):
    """The findings of scripts/e2e_checks.py: one GIMP start covering most tests."""
    return gimp.run_checks("e2e_checks.py", "e2e checks")

