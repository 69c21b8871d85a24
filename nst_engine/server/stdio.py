"""``python -m nst_engine serve``: one client on stdin/stdout, the per-run engine.

The client (the plug-in, ``install.py --check``) starts this process and points its stderr at
the log file. The client's end (``shutdown``, or the end of stdin: the plug-in exited or GIMP
killed it) cancels everything and ends the process; if the running job has not stopped
``EXIT_GRACE`` seconds later the process exits anyway. After a cancelled job the engine keeps
serving.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from .startup import load_model
from .jobs import Jobs
from .session import Session
from .streams import claim_stdio, exit_now, log

#: Seconds a cancelled job gets to stop after shutdown/EOF before the process exits regardless.
EXIT_GRACE = 1.5


class StdioSession(Session):
    """The session whose client's end is the process's end."""

    def _ended(self, why: str) -> None:
        log(f"stopping: {why}")
        self.jobs.wake()
        timer = threading.Timer(EXIT_GRACE, self._force_exit)
        timer.daemon = True
        timer.start()

    def _force_exit(self) -> None:
        log(f"the running job did not stop within {EXIT_GRACE} s: exiting now")
        exit_now(self.exit_code)

    def serve(self) -> int:
        """Load torch and the model, say hello, then work through the jobs on this thread
        until the client ends."""
        if not self.hello(load_model(self.args)):
            return 1
        threading.Thread(target=self.read_loop, name="nst-serve-reader", daemon=True).start()
        self.jobs.work(self.stopping)
        return self.exit_code


def run(args: Any) -> int:
    """The ``serve`` command without ``--listen`` (``args.weights``, ``args.device``)."""
    inp, out = claim_stdio()  # first: nothing may print to the protocol channel
    log(f"starting (python {sys.version.split()[0]}, {sys.executable})")
    code = StdioSession(args, inp, out, Jobs()).serve()
    log(f"exiting with status {code}")
    exit_now(code)
    return code  # not reached
