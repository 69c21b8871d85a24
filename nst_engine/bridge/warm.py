"""The warm engine's private channel: its folder, socket and lock, the engine commands that
reach it (``warm_argv``, ``direct_options``), the client's direct connection, and stopping it.
Standard library only (POSIX; Windows keeps one engine per plug-in run). The relay that starts
engines, ``attach``, is engine-side: ``nst_engine/server/attach.py``.

One warm engine per user listens on ``<runtime_dir>/engine.sock``, a Unix-domain socket in a
folder only that user can enter (0700, owned by them: checked, never trusted), and checks each
peer's uid where the OS tells it (``SO_PEERCRED``). Nothing listens on a network port. The
engine holds an exclusive ``flock`` on ``engine.lock`` (which holds its pid) for its whole life,
so "is an engine alive?" is answered by the kernel, also after a SIGKILL.

``attach`` (``python -m nst_engine attach``, what the client runs when ``keep_warm`` > 0)
connects to the socket or starts an engine, checks its hello and relays bytes; a client on this
machine with a plain ``engine_command`` connects itself (``connect_direct``).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any, Sequence

from . import config
from .wire import ENGINE_TYPES, PROTOCOL_VERSION, Msg, ProtocolError, read_frame

SOCKET_NAME = "engine.sock"
LOCK_NAME = "engine.lock"
#: A socket path longer than this (bytes) is refused: AF_UNIX allows 108 on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100
#: The client's own quick look (``connect_direct``); past it, attach takes over and decides.
DIRECT_HELLO_TIMEOUT = 5.0
#: The serve options a client may find in a warm engine's hello (``warm.options``).
DIRECT_OPTIONS = ("weights", "device")
#: How long a stopped engine gets to let go of its lock before it is killed.
STOP_GRACE = 3.0
#: attach's exit status when no engine could be reached (the log says why); the client
#: knows it and starts a per-run engine or says so.
EXIT_NO_ENGINE = 75
POLL = 0.05
#: Names the engine's build in place of its files' sizes and mtimes (tests, whose checkout other
#: work may touch mid-test).
BUILD_ENV = "NST_ENGINE_BUILD"


class WarmUnavailable(Exception):
    """No private channel here (Windows, an unsafe or too-long folder); the message says why."""


def supported() -> bool:
    return os.name == "posix" and hasattr(socket, "AF_UNIX")


# ---------------------------------------------------------------------------------- the folder

def private_dir(create: bool = True) -> Path:
    """``config.runtime_dir()``, made 0700 if missing, checked (``check_private``), with room
    for the socket's path. Raises WarmUnavailable."""
    if not supported():
        raise WarmUnavailable("this platform has no Unix-domain sockets")
    d = config.runtime_dir()
    if len(os.fsencode(d / SOCKET_NAME)) > MAX_SOCKET_PATH:
        raise WarmUnavailable(f"the socket path {d / SOCKET_NAME} is longer than "
                              f"{MAX_SOCKET_PATH} bytes (set NST_RUNTIME_DIR to a shorter folder)")
    if create:
        try:
            d.mkdir(mode=0o700, parents=False)
        except FileExistsError:
            pass
        except OSError as e:
            raise WarmUnavailable(f"cannot create {d}: {e.strerror or e}") from None
    check_private(d)
    return d


def check_private(d: Path) -> None:
    """A real folder (not a link), owned by this user, that nobody else may enter (closed to
    0700 when it is ours but open). Raises WarmUnavailable."""
    try:
        st = d.lstat()
    except OSError as e:
        raise WarmUnavailable(f"{d}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise WarmUnavailable(f"{d} is not a folder (or is a symbolic link)")
    if st.st_uid != os.getuid():
        raise WarmUnavailable(f"{d} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)  # ours, but too open (e.g. made by hand): close it


def peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end, where the OS says (Linux); else None."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, opt,
                                                             struct.calcsize("3i")))
    except OSError:
        return None
    return pid, uid


# ---------------------------------------------------------------------------------- the lock

class EngineLock:
    """``engine.lock``: held (flock) by the living engine, holding its pid."""

    def __init__(self, folder: Path) -> None:
        import fcntl
        self._fcntl = fcntl
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)

    def acquire(self) -> bool:
        """Take the lock for this process's life (non-blocking); write our pid into it."""
        fd = self._open()
        try:
            self._fcntl.flock(fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid of the engine holding the lock, 0 if it is held but the pid is unreadable,
        or None when nobody holds it."""
        try:
            fd = self._open()
        except OSError:
            return None
        try:
            try:
                self._fcntl.flock(fd, self._fcntl.LOCK_SH | self._fcntl.LOCK_NB)
            except OSError:
                pass
            else:
                self._fcntl.flock(fd, self._fcntl.LOCK_UN)
                return None
            try:
                return int(os.pread(fd, 32, 0).decode() or 0)
            except (OSError, ValueError):
                return 0
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------- the socket

def listen(path: Path) -> socket.socket:
    """Bind the engine's socket (the caller holds the lock, so a file there is stale), 0600."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(16)
    return sock


def connect(path: Path) -> socket.socket | None:
    """A connection to the engine listening at ``path``, or None when none listens there.
    Raises WarmUnavailable when the listener is another user's."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        sock.close()
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EAGAIN):
            return None
        raise WarmUnavailable(f"cannot connect to {path}: {e.strerror or e}") from None
    creds = peer_credentials(sock)
    if creds is not None and creds[1] != os.getuid():
        sock.close()
        raise WarmUnavailable(f"{path} is served by another user (uid {creds[1]})")
    return sock


def read_hello(sock: socket.socket, timeout: float) -> dict[str, Any] | None:
    """The engine's first frame (hello or a start-up error), or None when the connection closed
    first. Raises TimeoutError after ``timeout`` s, ProtocolError on garbage."""
    sock.settimeout(timeout)
    stream = sock.makefile("rb", buffering=0)
    try:
        frame = read_frame(stream, accept=ENGINE_TYPES)
    except (socket.timeout, TimeoutError):
        raise TimeoutError from None
    except (ConnectionError, OSError):
        return None
    finally:
        stream.close()
        sock.settimeout(None)
    return None if frame is None else frame.header


def direct_options(argv: Sequence[str]) -> dict[str, Any] | None:
    """The serve options of an ``engine_command`` that runs the engine on this machine, exactly
    ``[python, -m, nst_engine, serve, (--weights W | --device D)...]``; else None (ssh,
    flatpak-spawn, wrappers, other options: those go through attach)."""
    if len(argv) < 4 or list(argv[1:4]) != ["-m", "nst_engine", "serve"]:
        return None
    opts: dict[str, Any] = {"weights": None, "device": "auto"}
    rest = list(argv[4:])
    if len(rest) % 2:
        return None
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag[2:] not in DIRECT_OPTIONS or not flag.startswith("--"):
            return None
        opts[flag[2:]] = value
    return opts


def warm_argv(argv: Sequence[str], keep_warm: float, hello_timeout: float,
              fresh: bool = False) -> list[str] | None:
    """``engine_command`` with ``attach`` in place of its ``nst_engine serve`` (also behind ssh
    or flatpak-spawn), or None when it has none (a custom command) or this platform has no warm
    engine (Windows) or ``keep_warm`` is 0."""
    if keep_warm <= 0 or not supported():
        return None
    for i in range(1, len(argv)):
        if argv[i] == "serve" and argv[i - 1].endswith("nst_engine"):
            return [*argv[:i], "attach", *argv[i + 1:], "--keep-warm", f"{keep_warm:g}",
                    "--hello-timeout", f"{hello_timeout:g}", *(["--fresh"] if fresh else [])]
    return None


def connect_direct(options: dict[str, Any], keep_warm: float
                   ) -> tuple[socket.socket, dict[str, Any]] | None:
    """The plug-in's fast path: a connection to a running warm engine started with these serve
    ``options`` and ``keep_warm``, and its hello; None when there is none or it differs (then
    ``attach`` starts, replaces or waits for one). It does not compare the engine's build:
    install.py stops the warm engine whenever it changes the engine."""
    try:
        folder = private_dir(create=False)
        sock = connect(folder / SOCKET_NAME)
    except WarmUnavailable:
        return None
    if sock is None:
        return None
    try:
        hello = read_hello(sock, DIRECT_HELLO_TIMEOUT)
    except (TimeoutError, ProtocolError):
        hello = None
    warm = hello.get("warm") if hello else None
    if not (hello and hello.get("type") == Msg.HELLO and hello.get("protocol") == PROTOCOL_VERSION
            and isinstance(warm, dict) and warm.get("options") == options
            and warm.get("keep_warm") == keep_warm):
        sock.close()
        return None
    return sock, hello


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_engine(folder: Path | None = None, *, force: bool = False) -> int | None:
    """Stop the warm engine, if one is running: SIGTERM (SIGKILL with ``force`` or after
    STOP_GRACE s). Returns its pid, or None when none was running. install.py and attach use it."""
    try:
        folder = folder or private_dir(create=False)
    except WarmUnavailable:
        return None
    lock = EngineLock(folder)
    pid = lock.holder()
    if not pid:
        return None
    _signal(pid, signal.SIGKILL if force else signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while lock.holder() and time.monotonic() < deadline:
        time.sleep(POLL)
    if lock.holder():
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE
        while lock.holder() and time.monotonic() < deadline:
            time.sleep(POLL)
    return pid
