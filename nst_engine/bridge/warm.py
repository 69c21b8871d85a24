"""The warm engine's private channel, and ``attach``: the relay the plug-in runs instead of a
fresh engine. Standard library only (POSIX; Windows keeps one engine per plug-in run).

One warm engine per user listens on ``<runtime_dir>/engine.sock``, a Unix-domain socket in a
folder only that user can enter (0700, owned by them: checked, never trusted), and checks each
peer's uid where the OS tells it (``SO_PEERCRED``). Nothing listens on a network port. The
engine holds an exclusive ``flock`` on ``engine.lock`` (which holds its pid) for its whole life,
so "is an engine alive?" is answered by the kernel, also after a SIGKILL.

``attach`` (``python -m nst_engine attach``, what ``EngineClient`` runs when ``keep_warm`` > 0):
connect to the socket, or start a detached ``serve --listen`` and wait for it; check its hello
(``warm.key`` = this engine's version, source files and options, so an engine that
``install.py`` has since updated, or one started with other weights, is replaced); then copy
bytes both ways between stdin/stdout and the socket until either side ends. The framed protocol
runs through unchanged, so the client, and an ssh ``engine_command``, work as with a per-run
engine; the plug-in's end of the pipe closing (GIMP killed it) closes the connection, which
cancels that client's job, and the engine stays warm.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from . import config
from .wire import ENGINE_TYPES, PROTOCOL_VERSION, Msg, ProtocolError, encode_frame, read_frame

SOCKET_NAME = "engine.sock"
LOCK_NAME = "engine.lock"
#: A socket path longer than this (bytes) is refused: AF_UNIX allows 108 on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100
#: A warm engine answers a connection at once (a thread of its own accepts); past this it hangs.
WARM_HELLO_TIMEOUT = 15.0
#: The client's own quick look (``connect_direct``); past it, attach takes over and decides.
DIRECT_HELLO_TIMEOUT = 5.0
#: The serve options a client may find in a warm engine's hello (``warm.options``).
DIRECT_OPTIONS = ("weights", "device")
#: How long a stopped engine gets to let go of its lock before it is killed.
STOP_GRACE = 3.0
#: attach's exit status when no engine could be reached (the log says why).
EXIT_NO_ENGINE = 75
_POLL = 0.05
#: Names the engine's build in place of its files' sizes and mtimes (tests, whose checkout other
#: work may touch mid-test).
BUILD_ENV = "NST_ENGINE_BUILD"


class WarmUnavailable(Exception):
    """No private channel here (Windows, an unsafe or too-long folder); the message says why."""


def supported() -> bool:
    return os.name == "posix" and hasattr(socket, "AF_UNIX")


def _log(msg: str) -> None:
    try:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} attach[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


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


def engine_key(serve_args: Sequence[str], keep_warm: float) -> str:
    """What a warm engine must match to be reused: the protocol, the engine's version and its
    source files as they are now (size and mtime: a re-install changes them), its options."""
    from .. import __version__  # nst_engine: attach runs in the engine's Python
    stamp: Any = os.environ.get(BUILD_ENV)
    if not stamp:
        root = Path(__file__).resolve().parents[1]
        stamp = []
        for p in sorted(p for pat in ("**/*.py", "presets/*.yaml") for p in root.glob(pat)):
            try:
                st = p.stat()
            except OSError:
                continue
            stamp.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    blob = json.dumps([PROTOCOL_VERSION, __version__, stamp, list(serve_args), keep_warm])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        time.sleep(_POLL)
    if lock.holder():
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE
        while lock.holder() and time.monotonic() < deadline:
            time.sleep(_POLL)
    return pid


# ---------------------------------------------------------------------------------- attach

def _spawn_engine(serve_args: Sequence[str], sock: Path, keep_warm: float, key: str,
                  log_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nst_engine", "serve", *serve_args, "--listen", str(sock),
            "--keep-warm", f"{keep_warm:g}", "--warm-key", key, "--log", str(log_path)]
    _log(f"starting a warm engine: {argv!r}")
    # Its own session: it outlives this relay and GIMP's signals; its output goes to the log.
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _connect_or_start(folder: Path, serve_args: Sequence[str], keep_warm: float, key: str,
                      log_path: Path, timeout: float) -> socket.socket:
    """A connection to a listening engine, starting one when none runs. Raises TimeoutError or
    RuntimeError (the engine failed to start: its lines are in the log)."""
    path = folder / SOCKET_NAME
    lock = EngineLock(folder)
    child: subprocess.Popen | None = None
    deadline = time.monotonic() + timeout
    while True:
        sock = connect(path)
        if sock is not None:
            return sock
        if child is not None and child.poll() not in (None, 0):
            raise RuntimeError(f"the engine exited with status {child.returncode} while "
                               "starting")
        # Start one unless one is starting (it holds the lock before it listens); two relays
        # racing start two, and the one that does not get the lock exits at once (status 0).
        if (child is None or child.poll() is not None) and lock.holder() is None:
            child = _spawn_engine(serve_args, path, keep_warm, key, log_path)
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(_POLL)


def _relay(sock: socket.socket, first: bytes) -> int:
    """stdin → socket and socket → stdout until either ends; 0 when the engine ended the
    session after our input ended, EXIT_NO_ENGINE when it vanished under a live client."""
    out_fd, in_fd = sys.stdout.fileno(), sys.stdin.fileno()
    _write_all(out_fd, first)
    input_ended = threading.Event()

    def upstream() -> None:
        try:
            while True:
                data = os.read(in_fd, 1 << 20)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        input_ended.set()
        try:
            sock.shutdown(socket.SHUT_WR)  # the engine sees the end of this client's input
        except OSError:
            pass

    threading.Thread(target=upstream, name="nst-attach-up", daemon=True).start()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            _write_all(out_fd, view[:n])
    except OSError:
        return 0 if input_ended.is_set() else EXIT_NO_ENGINE  # our reader (the client) is gone
    if input_ended.is_set():
        return 0
    # The engine closed the connection while the client still talks: it stopped or died.
    # Give the client's input a moment to end (it may have been closing anyway).
    return 0 if input_ended.wait(0.2) else EXIT_NO_ENGINE


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def attach(serve_args: Sequence[str], *, keep_warm: float, hello_timeout: float,
           log_path: Path | None = None, fresh: bool = False) -> int:
    """The ``attach`` command: relay stdin/stdout to the warm engine (see the module doc).
    ``fresh``: replace the running engine first (the plug-in's retry after a failure)."""
    log_path = Path(log_path or os.environ.get("NST_ENGINE_LOG")
                    or config.default_log_dir() / "engine.log")
    try:
        folder = private_dir()
    except WarmUnavailable as e:
        _log(f"no warm engine ({e}): running one for this client only")
        return -1  # the caller runs plain ``serve``
    key = engine_key(serve_args, keep_warm)
    if fresh:
        _replaced(stop_engine(folder), "a fresh one was asked for")
    why = "no engine answered"
    for _attempt in range(3):
        try:
            sock = _connect_or_start(folder, serve_args, keep_warm, key, log_path, hello_timeout)
        except TimeoutError:
            why = f"no engine listened within {hello_timeout:g} s"
            break
        except RuntimeError as e:
            why = str(e)
            break
        try:
            hello = read_hello(sock, WARM_HELLO_TIMEOUT)
        except TimeoutError:
            sock.close()
            _replaced(stop_engine(folder, force=True),
                      f"it did not answer within {WARM_HELLO_TIMEOUT:g} s (hung)")
            continue
        except ProtocolError as e:
            sock.close()
            _replaced(stop_engine(folder, force=True), f"it sent garbage ({e.message})")
            continue
        if hello is None:  # it was ending (idle time over) as we connected: try again
            sock.close()
            why = "the engine closed the connection before its hello"
            continue
        warm = hello.get("warm") if hello.get("type") == Msg.HELLO else None
        if not isinstance(warm, dict) or warm.get("key") != key:
            sock.close()
            _replaced(stop_engine(folder), "it is another version or has other options")
            continue
        _log(f"connected to the warm engine, pid {hello.get('pid')}")
        return _relay(sock, encode_frame(hello))
    _log(f"no warm engine: {why}")
    return EXIT_NO_ENGINE


def _replaced(pid: int | None, why: str) -> None:
    if pid:
        _log(f"stopped the warm engine pid {pid}: {why}")


def run(args: Any) -> int:
    """``python -m nst_engine attach`` (``args``: serve's options plus ``keep_warm``,
    ``hello_timeout``, ``fresh``)."""
    serve_args: list[str] = []
    if getattr(args, "weights", None):
        serve_args += ["--weights", args.weights]
    if getattr(args, "device", None):
        serve_args += ["--device", args.device]
    code = attach(serve_args, keep_warm=args.keep_warm, hello_timeout=args.hello_timeout,
                  fresh=args.fresh) if args.keep_warm > 0 else -1
    if code >= 0:
        return code
    # No warm engine possible (or keep_warm 0): become the per-run engine, as before.
    os.execv(sys.executable, [sys.executable, "-m", "nst_engine", "serve", *serve_args])
    return 1  # not reached
