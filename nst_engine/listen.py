"""``serve --listen SOCKET``: the warm engine that ``attach`` starts (see ``bridge/warm.py``).

Loads torch and the model once, then serves any number of clients, each on its own connection
of the user's private Unix-domain socket, with the same framed protocol and the same session
code as stdin mode (``serve._Server``); their jobs share one queue, one job at a time. It exits
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

from .bridge import warm
from .serve import _Jobs, _log, _Server, load_engine


def _open_log(path: Path) -> None:
    """fd 1 and fd 2 → the log (appending); fd 0 → the null device. Nothing is a terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr


def _follow_log(path: Path) -> None:
    """The client moves a large log aside (engine.log.1): write to the new file from now on."""
    try:
        if os.stat(path).st_ino == os.fstat(2).st_ino:
            return
    except OSError:
        pass
    try:
        _open_log(path)
    except OSError:
        pass


class _Listener:
    def __init__(self, args: Any, path: Path) -> None:
        self.args, self.path = args, path
        self.jobs = _Jobs()
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
        _log(f"warm engine exiting: {why}")
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)

    def accept_loop(self, ready: Any) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError as e:
                self.exit(f"accepting a connection failed: {e}", 1)
                return
            creds = warm.peer_credentials(conn)
            if creds is not None and creds[1] != os.getuid():
                _log(f"refused a connection from uid {creds[1]} (pid {creds[0]})")
                conn.close()
                continue
            if self.args.log:
                _follow_log(Path(self.args.log))
            _log(f"client connected (pid {creds[0] if creds else '?'})")
            session = _Server(self.args, conn.makefile("rb", buffering=0),
                              conn.makefile("wb", buffering=0), jobs=self.jobs,
                              ends_process=False)
            session.conn = conn
            self.jobs.touch()
            threading.Thread(target=session.serve_connection, args=(ready,), daemon=True,
                             name="nst-serve-session").start()


def run_listen(args: Any) -> int:
    path = Path(args.listen)
    if args.log:
        _open_log(Path(args.log))
    _log(f"warm engine starting (python {sys.version.split()[0]}, {sys.executable}), "
         f"socket {path}, keep_warm {args.keep_warm:g} s")
    try:
        warm.check_private(path.parent)
    except warm.WarmUnavailable as e:
        _log(f"not listening: {e}")
        os._exit(1)
    lock = warm.EngineLock(path.parent)
    if not lock.acquire():
        _log("another warm engine holds the lock: leaving it to serve")
        os._exit(0)
    listener = _Listener(args, path)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: listener.exit(f"signal {signum}"))
    ready = load_engine(args)
    if ready.error is not None:
        listener.exit(f"cannot start: {ready.error[1]}", 1)
    listener.sock = warm.listen(path)
    listener.inode = os.stat(path).st_ino
    _log(f"listening on {path}")
    threading.Thread(target=listener.accept_loop, args=(ready,), daemon=True,
                     name="nst-serve-accept").start()
    listener.jobs.touch()
    listener.jobs.work(listener.stopping, idle_exit=args.keep_warm)
    listener.exit(f"no job for {args.keep_warm:g} s")
    return 0
