"""``serve --listen SOCKET``: the warm engine that ``attach`` starts (``attach.py``).

Loads torch and the model once, then serves any number of clients, each on its own connection
of the user's private Unix-domain socket, with the same framed protocol and the same session
code as stdin mode (``session.Session``); their jobs share one queue, one job at a time. It exits
``--keep-warm`` seconds after the last activity (a job ending, a client coming or going), on
SIGTERM (``install.py``, or a client replacing it) and SIGHUP, removing its socket.

Order matters: the lock first (a second engine started in a race exits at once, status 0), then
torch and the model, and only then the socket, so a client that can connect gets its hello at
once: a connection that stays silent means a hung engine, which the client replaces.

Whatever a local peer does, it costs only its own session: every reply has a write deadline
(WRITE_DEADLINE_ENV, default WRITE_DEADLINE s), and a peer that does not read in time is dropped
and its job cancelled; at most MAX_CONNECTIONS clients are served at once (the next one is
answered ``busy``); an error in accepting (EMFILE: out of descriptors) is logged and retried
after a pause, never the end of the engine. Replacing the engine (SIGTERM from a newer client,
``attach --fresh``, install.py) never breaks a job: the engine lets go of its socket and lock at
once, so a successor can start, and exits once its clients' jobs are done.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..bridge import warm, wire
from ..bridge.wire import Code, Msg
from .startup import Ready, load_model
from .jobs import Jobs
from .session import Session
from .streams import exit_now, follow_log, log, open_log


#: Seconds a reply may wait for the client to read before the client is dropped.
WRITE_DEADLINE = 10.0
WRITE_DEADLINE_ENV = "NST_WRITE_DEADLINE"
#: Clients served at once; the next is answered ``busy`` and closed.
MAX_CONNECTIONS = 32
#: A replaced engine exits once its clients sent no job for this long.
DRAIN_IDLE = 2.0
#: The longest pause between tries when accepting fails (EMFILE, ENOBUFS, ...).
MAX_BACKOFF = 1.0


def write_deadline() -> float:
    try:
        return float(os.environ.get(WRITE_DEADLINE_ENV) or WRITE_DEADLINE)
    except ValueError:
        return WRITE_DEADLINE


class DeadlineWriter:
    """A socket's sending side where each ``write`` must be taken whole by the peer within
    ``deadline`` seconds, else TimeoutError (the session drops that client)."""

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn, self.deadline = conn, deadline
        self.closed = False

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed connection")
        view = memoryview(data).cast("B")
        total = len(view)
        end = time.monotonic() + self.deadline
        poller = select.poll() if hasattr(select, "poll") else None
        if poller is not None:
            poller.register(self.conn.fileno(), select.POLLOUT)
        while view:
            try:
                n = self.conn.send(view, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                n = 0
            if n:
                view = view[n:]
                continue
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"it did not read for {self.deadline:g} s")
            if poller is not None:
                poller.poll(min(left, 1.0) * 1000)
            else:
                select.select([], [self.conn], [], min(left, 1.0))
        return total

    def flush(self) -> None:
        if self.closed:
            raise ValueError("flush of a closed connection")

    def close(self) -> None:
        self.closed = True


class SocketSession(Session):
    """A warm engine's session: one connection of the socket, which it closes when the client
    ends; the engine goes on."""

    def __init__(self, args: Any, conn: socket.socket, jobs: Jobs,
                 on_end: Any = None) -> None:
        super().__init__(args, conn.makefile("rb", buffering=0),
                         DeadlineWriter(conn, write_deadline()), jobs)  # type: ignore[arg-type]
        self.conn = conn
        self._on_end = on_end

    def _ended(self, why: str) -> None:
        log(f"client session ended: {why}")
        try:
            self.conn.shutdown(socket.SHUT_RDWR)  # wakes this session's reader thread
        except OSError:
            pass
        for f in (self.inp, self.out, self.conn):
            try:
                f.close()
            except OSError:
                pass
        if self._on_end is not None:
            self._on_end(self)
        self.jobs.touch()

    def serve(self, ready: Ready) -> None:
        """Hello, then the client's messages, in this session's own thread."""
        try:
            if self.hello(ready):
                self.read_loop()
            else:
                self.stop(0, "the hello could not be sent")
        finally:
            self.stop(0, "the session's thread ended")  # a no-op when it has stopped


class _Listener:
    def __init__(self, args: Any, path: Path, lock: warm.EngineLock) -> None:
        self.args, self.path, self.lock = args, path, lock
        self.jobs = Jobs()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.draining = False
        self.sock: socket.socket | None = None
        self.inode: int | None = None
        self.sessions: set[SocketSession] = set()
        self._sessions_lock = threading.Lock()
        self._last_refusal_log = 0.0

    def exit(self, why: str, code: int = 0) -> None:
        """Remove our socket (not a successor's) and end the process at once."""
        self._remove_socket()
        log(f"warm engine exiting: {why}")
        exit_now(code)

    def _remove_socket(self) -> None:
        try:
            if self.inode is not None and os.lstat(self.path).st_ino == self.inode:
                self.path.unlink()
        except OSError:
            pass

    def stop_or_drain(self, why: str) -> None:
        """SIGTERM/SIGHUP: exit now when no job runs or waits; else let go of the socket and
        the lock at once (a successor may start) and exit once the clients' jobs are done."""
        if not self.jobs.busy() or self.sock is None:
            self.exit(why)
        if self.draining:
            return
        self.draining = True
        log(f"{why} while a job runs: no new clients; the lock and socket are let go, and the "
            f"engine exits once its clients' jobs are done")
        self._remove_socket()
        self.inode = None
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop (Linux)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.lock.release()
        self.jobs.idle_exit = DRAIN_IDLE
        self.jobs.touch()

    def _session_ended(self, session: SocketSession) -> None:
        with self._sessions_lock:
            self.sessions.discard(session)

    def accept_loop(self, ready: Ready) -> None:
        """Accept clients until the engine drains; nothing that fails here ends the engine:
        it is logged and, after a pause that grows while it lasts, tried again."""
        assert self.sock is not None
        backoff = 0.0
        while not self.draining:
            try:
                conn, _ = self.sock.accept()
            except OSError as e:
                if self.draining:
                    return
                if e.errno in (errno.EINTR, errno.ECONNABORTED, errno.EAGAIN):
                    continue
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.05)
                log(f"accepting a connection failed ({e.strerror or e}); trying again in "
                    f"{backoff:g} s")
                time.sleep(backoff)
                continue
            except Exception:  # noqa: BLE001 - never end the engine over one connection
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.05)
                log("accepting a connection failed:\n" + traceback.format_exc())
                time.sleep(backoff)
                continue
            backoff = 0.0
            try:
                self._welcome(conn, ready)
            except Exception:  # noqa: BLE001 - e.g. no thread could be started
                log("serving a new connection failed:\n" + traceback.format_exc())
                try:
                    conn.close()
                except OSError:
                    pass

    def _welcome(self, conn: socket.socket, ready: Ready) -> None:
        creds = warm.peer_credentials(conn)
        if creds is not None and creds[1] != os.getuid():
            log(f"refused a connection from uid {creds[1]} (pid {creds[0]})")
            conn.close()
            return
        with self._sessions_lock:
            full = len(self.sessions) >= MAX_CONNECTIONS
        if full:
            self._refuse(conn, creds)
            return
        if self.args.log:
            follow_log(Path(self.args.log))
        log(f"client connected (pid {creds[0] if creds else '?'})")
        session = SocketSession(self.args, conn, self.jobs, on_end=self._session_ended)
        with self._sessions_lock:
            self.sessions.add(session)
        self.jobs.touch()
        try:
            threading.Thread(target=session.serve, args=(ready,), daemon=True,
                             name="nst-serve-session").start()
        except BaseException:
            self._session_ended(session)
            raise

    def _refuse(self, conn: socket.socket, creds: Any) -> None:
        """One ``busy`` error message, if the socket takes it now, and the connection closes."""
        try:
            conn.send(wire.encode_message({
                "type": Msg.ERROR, "id": None, "code": Code.BUSY,
                "message": f"The warm engine serves {MAX_CONNECTIONS} clients already.",
                "hint": "Close other Style Transfer dialogs or scripts, or try again."}),
                socket.MSG_DONTWAIT)
        except OSError:
            pass
        conn.close()
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:
            self._last_refusal_log = now
            log(f"refused a connection (pid {creds[0] if creds else '?'}): "
                f"{MAX_CONNECTIONS} clients are connected")

    def work(self) -> None:
        """The jobs, on a thread of their own: the main thread stays free for signals."""
        try:
            self.jobs.work(self.stopping, idle_exit=self.args.keep_warm)
        except BaseException:  # noqa: BLE001 - logged; the engine must not linger silently
            log("the job loop failed:\n" + traceback.format_exc())
        finally:
            self.finished.set()


def run(args: Any) -> int:
    """The ``serve --listen SOCKET`` command."""
    path = Path(args.listen)
    if args.log:
        open_log(Path(args.log))
    log(f"warm engine starting (python {sys.version.split()[0]}, {sys.executable}), "
        f"socket {path}, keep_warm {args.keep_warm:g} s")
    lock = warm.EngineLock(path.parent)
    try:
        warm.check_private(path.parent)
        if not lock.acquire():
            log("another warm engine holds the lock: leaving it to serve")
            os._exit(0)
    except warm.WarmUnavailable as e:
        log(f"not listening: {e}")
        os._exit(1)
    listener = _Listener(args, path, lock)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _stack: listener.stop_or_drain(f"signal {signum}"))
    signal.signal(signal.SIGINT, lambda signum, _stack: listener.exit(f"signal {signum}"))
    ready = load_model(args)
    if ready.error is not None:
        listener.exit(f"cannot start: {ready.error[1]}", 1)
    try:
        sock = warm.listen(path)
    except warm.WarmUnavailable as e:
        listener.exit(f"not listening: {e}", 1)
    listener.inode = os.lstat(path).st_ino
    listener.sock = sock
    log(f"listening on {path}")
    threading.Thread(target=listener.accept_loop, args=(ready,), daemon=True,
                     name="nst-serve-accept").start()
    listener.jobs.touch()
    threading.Thread(target=listener.work, daemon=True, name="nst-serve-jobs").start()
    while not listener.finished.wait(0.5):
        pass
    listener.exit("its clients' jobs are done" if listener.draining
                  else f"no job for {args.keep_warm:g} s")
    return 0
