"""The warm engine where /proc cannot be read (a chroot or container without it; issue 35, item
10): ``attach`` cannot show who holds the lock, so it must trust the engine it started itself
and send any other client to a per-run engine at once, never reconnect in a loop.

The attach (and its engine) run with ``warm.PROC`` pointed at a folder that does not exist, set
by a ``sitecustomize`` on their PYTHONPATH: the same as a missing /proc for every read of it
(the lock's holders, a process's command line and open files). The test process itself keeps
the real /proc, so the fixture can still stop the engine afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nst_engine.bridge import warm
from tests.test_serve import ROOT
from tests.test_warm import cfg_for, log_text, run_job, runtime  # noqa: F401

pytestmark = pytest.mark.skipif(not warm.supported() or not sys.platform.startswith("linux"),
                                reason="the warm engine is POSIX-only; the lock is read in /proc")

#: Well under the tests' usual 120 s: a loop would spend all of it (before the fix it did).
HELLO_TIMEOUT = 30


def no_proc_cfg(weights, tmp_path) -> dict:
    fake = tmp_path / "no-proc"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "from pathlib import Path\n"
        "import nst_engine.bridge.warm as warm\n"
        f"warm.PROC = Path({str(tmp_path / 'there-is-no-proc')!r})\n")
    cfg = cfg_for(weights, tmp_path)
    return {**cfg, "engine_pythonpath": [str(fake), str(ROOT)], "hello_timeout": HELLO_TIMEOUT}


def test_attach_trusts_the_engine_it_started_and_later_runs_go_per_run_at_once(
        random_weights_file, tmp_path, runtime):  # noqa: F811
    cfg = no_proc_cfg(random_weights_file, tmp_path)
    pid1, first = run_job(cfg)  # attach starts the warm engine and relays to it
    log = log_text(tmp_path)
    assert "cannot show who holds" in log and "trusting the engine this attach started" in log
    assert log.count("client connected") == 1, log  # one connection: no reconnect loop
    assert "not the warm engine" not in log
    assert (runtime / warm.LOCK_NAME).read_text() == str(pid1)  # the warm engine served it

    # A later run cannot show the running engine is the warm one: a per-run engine, at once.
    pid2, second = run_job(cfg, direct=False)
    log = log_text(tmp_path)
    assert pid2 != pid1 and second == first
    assert log.count("client connected") == 2, log  # the one look at the warm engine
    assert log.count("running one for this client only") == 1, log
    assert "/proc cannot be read" in log
