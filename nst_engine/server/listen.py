"""``serve --listen SOCKET``: the warm engine that ``attach`` starts (``attach.py``).

Loads torch and the model once, then serves any number of clients, each on its own connection
of the user's private Unix-domain socket, with the same framed protocol and the same session
code as stdin mode (``session.Session``); their jobs share one queue, one job at a time. It exits
``--keep-warm`` seconds after the last activity (a job ending, a client coming or going), on
SIGTERM (``install.py``, or a client replacing it) and SIGHUP, removing its socket.

Order matters: the lock first (a second engine started in a race exits at once, status 0), then
torch and the model, and only then the socket, so a client that can connect gets its hello at
once: a connection that stays silent means a hung engine, which the client replaces.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..bridge import warm
from .engine import Ready, load_engine
from .jobs import Jobs
from .session import Session
from .streams import exit_now, follow_log, log, open_log


class SocketSession(Session):
    """A warm engine's session: one connection of the socket, which it closes when the client
    ends; the engine goes on."""

    def __init__(self, args: Any, conn: socket.socket, jobs: Jobs) -> None:
        super().__init__(args, conn.makefile("rb", buffering=0),
                         conn.makefile("wb", buffering=0), jobs)
        self.conn = conn

    def _ended(self, why: str) -> None:
        log(f"client session ended: {why}")
        try:
            self.conn.shutdown(socket.SHUT_RDWR)  # wakes this session's reader thread
            self.inp.close()
            self.out.close()
            self.conn.close()
        except OSError:
            pass
        self.jobs.touch()

    def serve(self, ready: Ready) -> None:
        """Hello, then the client's frames, in this session's own thread."""
        if self.hello(ready):
            self.read_loop()
        else:
            self.stop(0, "the hello could not be sent")


class _Listener:
    def __init__(self, args: Any, path: Path) -> None:
        self.args, self.path = args, path
        self.jobs = Jobs()
        self.stopping = threading.Event()
        self.sock: socket.socket | None = None
        self.inode: int | None = None

    def exit(self, why: str, code: int = 0) -> None:
        """Remove our socket (not a successor's) and end the process at once."""
        try:
            if self.inode is not None and os.stat(self.path).st_ino == self.inode:
                self.path.unlink()
        except OSError:
            pass
        log(f"warm engine exiting: {why}")
        exit_now(code)

    def accept_loop(self, ready: Ready) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError as e:
                self.exit(f"accepting a connection failed: {e}", 1)
                return
            creds = warm.peer_credentials(conn)
            if creds is not None and creds[1] != os.getuid():
                log(f"refused a connection from uid {creds[1]} (pid {creds[0]})")
                conn.close()
                continue
            if self.args.log:
                follow_log(Path(self.args.log))
            log(f"client connected (pid {creds[0] if creds else '?'})")
            session = SocketSession(self.args, conn, self.jobs)
            self.jobs.touch()
            threading.Thread(target=session.serve, args=(ready,), daemon=True,
                             name="nst-serve-session").start()


def run(args: Any) -> int:
    """The ``serve --listen SOCKET`` command."""
    path = Path(args.listen)
    if args.log:
        open_log(Path(args.log))
    log(f"warm engine starting (python {sys.version.split()[0]}, {sys.executable}), "
         f"socket {path}, keep_warm {args.keep_warm:g} s")
    try:
        warm.check_private(path.parent)
    except warm.WarmUnavailable as e:
        log(f"not listening: {e}")
        os._exit(1)
    lock = warm.EngineLock(path.parent)
    if not lock.acquire():
        log("another warm engine holds the lock: leaving it to serve")
        os._exit(0)
    listener = _Listener(args, path)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: listener.exit(f"signal {signum}"))
    ready = load_engine(args)
    if ready.error is not None:
        listener.exit(f"cannot start: {ready.error[1]}", 1)
    listener.sock = warm.listen(path)
    listener.inode = os.stat(path).st_ino
    log(f"listening on {path}")
    threading.Thread(target=listener.accept_loop, args=(ready,), daemon=True,
                     name="nst-serve-accept").start()
    listener.jobs.touch()
    listener.jobs.work(listener.stopping, idle_exit=args.keep_warm)
    listener.exit(f"no job for {args.keep_warm:g} s")
    return 0
