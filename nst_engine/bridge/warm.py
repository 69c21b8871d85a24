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
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import config
from .wire import ENGINE_TYPES, PROTOCOL_VERSION, Msg, ProtocolError, read_message

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


def check_private(d: Path) -> bool:
    """A real folder (not a link), owned by this user, that nobody else may enter. One that is
    ours but was found open (made by hand, or planted before our first run) is closed to 0700
    and emptied: whatever is in it may have been put there by someone else (a lock that is a
    link to one of the user's files, a socket another program listens on). Returns whether it
    had to be repaired. Raises WarmUnavailable."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(d, flags)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise WarmUnavailable(f"{d} is not a folder (or is a symbolic link)") from None
        raise WarmUnavailable(f"{d}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise WarmUnavailable(f"{d} is not a folder (or is a symbolic link)")
        if st.st_uid != os.getuid():
            raise WarmUnavailable(f"{d} belongs to another user (uid {st.st_uid})")
        if not st.st_mode & 0o077:
            return False
        try:  # ours, but open: close it first (nobody else can add to it from now on), then
            os.fchmod(fd, 0o700)  # throw away what others may have put there
            _empty_folder(fd)
        except OSError as e:
            raise WarmUnavailable(f"{d} was open to other users and could not be made private "
                                  f"({e.strerror or e})") from None
        return True
    finally:
        os.close(fd)


def _empty_folder(dir_fd: int) -> None:
    """Remove everything inside the open folder ``dir_fd``, links as links (never followed)."""
    for name in os.listdir(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                          | getattr(os, "O_NOFOLLOW", 0), dir_fd=dir_fd)
            try:
                _empty_folder(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


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
    """``engine.lock``: held (flock) by the living engine, holding its pid.

    Nothing about it is taken on its word: it is opened without following links (a planted
    link to one of the user's files is refused, never truncated) and must then be a regular
    file of this user's with one name; and the pid it holds is only a hint: ``holder`` names a
    process only when the kernel says that process holds the lock and its command line is
    this folder's warm engine (``verified_engine``)."""

    def __init__(self, folder: Path) -> None:
        import fcntl
        self._fcntl = fcntl
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def _open(self, create: bool) -> int | None:
        """The lock file, opened safely; None when it does not exist (and ``create`` is
        False). Raises WarmUnavailable when the name holds something else."""
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
            | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise WarmUnavailable(f"{self.path} is a symbolic link") from None
            raise WarmUnavailable(f"cannot open {self.path}: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            why = ("is not a regular file" if not stat.S_ISREG(st.st_mode) else
                   f"belongs to another user (uid {st.st_uid})" if st.st_uid != os.getuid()
                   else "has other names (hard links)" if st.st_nlink != 1 else None)
            if why:
                raise WarmUnavailable(f"{self.path} {why}")
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def acquire(self) -> bool:
        """Take the lock for this process's life (non-blocking); write our pid into it. False
        when another process holds it; raises WarmUnavailable when the file is not safe."""
        fd = self._open(create=True)
        assert fd is not None
        try:
            self._fcntl.flock(fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Let go of the lock (a replaced engine finishing its last job: a successor may
        start)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def holder(self) -> int | None:
        """The pid of the warm engine holding the lock, as the kernel tells (``verified_engine``);
        0 when the lock is held but its holder cannot be shown to be this folder's engine (it
        is then never signalled); None when nobody holds it."""
        try:
            fd = self._open(create=False)
        except WarmUnavailable:
            return 0  # something planted: treat it as held by a stranger
        if fd is None:
            return None
        try:
            try:
                self._fcntl.flock(fd, self._fcntl.LOCK_SH | self._fcntl.LOCK_NB)
            except OSError:
                pass
            else:
                self._fcntl.flock(fd, self._fcntl.LOCK_UN)
                return None
            st = os.fstat(fd)
            try:
                hint = int(os.pread(fd, 32, 0).decode() or 0)
            except (OSError, ValueError):
                hint = 0
            return verified_engine(self.path.parent, st, hint) or 0
        finally:
            os.close(fd)


#: Where Linux tells who holds a lock and what a process runs. A chroot or container may lack it
#: or hide it: ``can_verify`` is then False (tests point this elsewhere to fake that).
PROC = Path("/proc")


def can_verify() -> bool:
    """Whether this process can show who holds the lock: Linux with a readable /proc (its own
    entry's open files can be listed, as ``_is_engine`` lists the holder's). Where it cannot,
    ``EngineLock.holder`` says 0 for any holder, the warm engine included, so a caller must
    decide without it (``attach`` trusts only the engine it started itself)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.listdir(PROC / str(os.getpid()) / "fd")
    except OSError:
        return False
    return True


def _lock_holders(st: os.stat_result) -> list[int]:
    """The pids the kernel lists as holding a flock on the file ``st`` (Linux's /proc/locks);
    empty when it cannot tell."""
    pids = []
    try:
        with open(PROC / "locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return pids
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":  # "->" lines are waiters, not holders
            continue
        try:
            ino = int(parts[5].rsplit(":", 1)[1])
            pid = int(parts[4])
        except (IndexError, ValueError):
            continue
        if ino == st.st_ino and pid > 0:
            pids.append(pid)
    return pids


def _is_engine(pid: int, folder: Path, st: os.stat_result) -> bool:
    """Linux: ``pid`` is this user's process, has the lock file ``st`` open, and runs
    ``-m nst_engine serve … --listen <folder>/engine.sock``."""
    proc = PROC / str(pid)
    try:
        if proc.stat().st_uid != os.getuid():
            return False
        argv = (proc / "cmdline").read_bytes().split(b"\0")
        fds = os.listdir(proc / "fd")
    except OSError:
        return False
    argv = [os.fsdecode(a) for a in argv]
    serve = any(argv[i:i + 3] == ["-m", "nst_engine", "serve"] for i in range(len(argv)))
    sock = str(folder / SOCKET_NAME)
    if not (serve and any(argv[i:i + 2] == ["--listen", sock] for i in range(len(argv)))):
        return False
    for name in fds:
        try:
            fst = os.stat(proc / "fd" / name)
        except OSError:
            continue
        if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def verified_engine(folder: Path, st: os.stat_result, hint: int = 0) -> int | None:
    """The pid of the warm engine of ``folder`` that holds the lock file ``st``: a process the
    kernel lists as holding it (else the file's ``hint``), of this user, with that file open
    and the warm engine's command line. None when that cannot be shown (no /proc: never)."""
    if not sys.platform.startswith("linux"):
        return None
    candidates = _lock_holders(st) or ([hint] if hint > 0 else [])
    for pid in candidates:
        if _is_engine(pid, folder, st):
            return pid
    return None


# ---------------------------------------------------------------------------------- the socket

def listen(path: Path) -> socket.socket:
    """Bind the engine's socket (the caller holds the lock, so what has the name is stale or
    planted: removed, never followed), 0600. Raises WarmUnavailable."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise WarmUnavailable(f"{path}: {e.strerror or e}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise WarmUnavailable(f"{path} is a folder, not the engine's socket")
        try:
            os.unlink(path)  # a link is removed, not what it points at
        except FileNotFoundError:
            pass
        except OSError as e:
            raise WarmUnavailable(f"cannot remove {path}: {e.strerror or e}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        sock.bind(str(path))
    except OSError as e:
        sock.close()
        raise WarmUnavailable(f"cannot listen on {path}: {e.strerror or e}") from None
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


def connect(path: Path) -> socket.socket | None:
    """A connection to what listens at ``path``, or None when nothing does (or the name is
    not a socket of this user's: a link or a file is never followed). Raises WarmUnavailable
    when the listener is another user's. Whether it is the engine: ``foreign_listener``."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        return None
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


def foreign_listener(sock: socket.socket, folder: Path) -> str | None:
    """Why the process listening on ``sock`` is not this folder's warm engine (it is not the
    process the kernel shows holding the lock), or None when it is, or the OS cannot tell
    (no SO_PEERCRED: the folder's permissions alone)."""
    creds = peer_credentials(sock)
    if creds is None or not sys.platform.startswith("linux"):
        return None
    holder = EngineLock(folder).holder()
    if holder and holder == creds[0]:
        return None
    return (f"pid {creds[0]} listens on {folder / SOCKET_NAME}, and it is not the warm engine "
            f"({'no engine holds the lock' if holder is None else 'the lock is held by another process'})")


def read_hello(sock: socket.socket, timeout: float) -> dict[str, Any] | None:
    """The engine's first message (hello or a start-up error), or None when the connection closed
    first. Raises TimeoutError after ``timeout`` s, ProtocolError on garbage."""
    sock.settimeout(timeout)
    stream = sock.makefile("rb", buffering=0)
    try:
        msg = read_message(stream, accept=ENGINE_TYPES)
    except (socket.timeout, TimeoutError):
        raise TimeoutError from None
    except (ConnectionError, OSError):
        return None
    finally:
        stream.close()
        sock.settimeout(None)
    return None if msg is None else msg.header


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
    if foreign_listener(sock, folder) is not None:  # attach logs it and replaces the socket
        sock.close()
        return None
    try:
        hello = read_hello(sock, DIRECT_HELLO_TIMEOUT)
    except (TimeoutError, ProtocolError):
        hello = None
    warm = hello.get("warm") if hello else None
    creds = peer_credentials(sock)
    if not (hello and hello.get("type") == Msg.HELLO and hello.get("protocol") == PROTOCOL_VERSION
            and (creds is None or hello.get("pid") == creds[0])
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
    STOP_GRACE s). Returns its pid, or None when none was running, or none that can be shown
    to be the warm engine (``EngineLock.holder``: no process is signalled on a file's word).
    A warm engine that gets SIGTERM during a job lets go of its socket and lock at once and
    exits when its clients' jobs are done. install.py and attach use it."""
    try:
        folder = folder or private_dir(create=False)
    except WarmUnavailable:
        return None
    lock = EngineLock(folder)
    pid = lock.holder()
    if not pid:
        return None
    _signal(pid, signal.SIGKILL if force else signal.SIGTERM)
    # Wait for the lock itself to be let go (an exiting engine soon cannot be shown to be one).
    deadline = time.monotonic() + STOP_GRACE
    while lock.holder() is not None and time.monotonic() < deadline:
        time.sleep(POLL)
    if lock.holder() == pid:  # still there, and still shown to be the engine
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE
        while lock.holder() is not None and time.monotonic() < deadline:
            time.sleep(POLL)
    return pid
