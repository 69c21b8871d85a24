"""``python -m nst_engine attach``: the relay the client runs instead of a per-run engine when
``keep_warm`` > 0 (POSIX).

Connect to the warm engine's socket (``bridge/warm.py``), or start a detached
``serve --listen`` and wait for it; check its hello (``warm.key`` = this engine's version,
source files and options, so an engine that ``install.py`` has since updated, or one started
with other weights, is replaced); then copy bytes both ways between stdin/stdout and the socket
until either side ends. The framed protocol runs through unchanged, so the client, and an ssh
``engine_command``, work as with a per-run engine; the plug-in's end of the pipe closing (GIMP
killed it) closes the connection, which cancels that client's job, and the engine stays warm.
Where no warm engine can be had, attach becomes the per-run engine (``serve``).

Standard library only: attach runs before, and instead of, anything that imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..bridge import config
from ..bridge.logs import LOG_ENV, LOG_NAME
from ..bridge.warm import (BUILD_ENV, EXIT_NO_ENGINE, POLL, SOCKET_NAME, EngineLock,
                           WarmUnavailable, can_verify, connect, foreign_listener,
                           peer_credentials, private_dir, read_hello, stop_engine)
from ..bridge.wire import PROTOCOL_VERSION, Code, Msg, ProtocolError, encode_message

#: attach's own answer "run a per-run engine for this client" (``run`` execs ``serve``).
PER_RUN = -1

#: A warm engine answers a connection at once (a thread of its own accepts); past this it hangs.
WARM_HELLO_TIMEOUT = 15.0
#: How long the lock may be held by a process not shown to be the engine (an exiting engine
#: is briefly such a one) before this client runs a per-run engine instead.
STRANGER_GRACE = 2.0


def _log(msg: str) -> None:
    try:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} attach[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def engine_key(serve_args: Sequence[str], keep_warm: float) -> str:
    """What a warm engine must match to be reused: the protocol, the engine's version and its
    source files as they are now (size and mtime: a re-install changes them), its options."""
    stamp: Any = os.environ.get(BUILD_ENV)
    if not stamp:
        root = Path(__file__).resolve().parents[1]  # nst_engine/
        stamp = []
        for p in sorted(p for pat in ("**/*.py", "presets/*.yaml") for p in root.glob(pat)):
            try:
                st = p.stat()
            except OSError:
                continue
            stamp.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    blob = json.dumps([PROTOCOL_VERSION, __version__, stamp, list(serve_args), keep_warm])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _spawn_engine(serve_args: Sequence[str], sock: Path, keep_warm: float, key: str,
                  log_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nst_engine", "serve", *serve_args, "--listen", str(sock),
            "--keep-warm", f"{keep_warm:g}", "--warm-key", key, "--log", str(log_path)]
    _log(f"starting a warm engine: {argv!r}")
    # Its own session: it outlives this relay and GIMP's signals; its output goes to the log.
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


class _PerRun(Exception):
    """No warm engine for this client, for a reason that a per-run engine does not share (the
    message says which): ``run`` becomes one."""


def _connect_or_start(folder: Path, serve_args: Sequence[str], keep_warm: float, key: str,
                      log_path: Path, timeout: float) -> socket.socket:
    """A connection to this folder's listening engine, starting one when none runs. A listener
    that is not the engine (``warm.foreign_listener``) has its socket removed when no engine
    holds the lock (ours binds a new one). Raises TimeoutError, or _PerRun (the engine failed
    to start: its lines are in the log; the lock is held by a stranger)."""
    path = folder / SOCKET_NAME
    lock = EngineLock(folder)
    child: subprocess.Popen | None = None
    deadline = time.monotonic() + timeout
    told = False
    stranger_since: float | None = None
    while True:
        sock = connect(path)
        if sock is not None:
            why = foreign_listener(sock, folder)
            if why is None:
                return sock
            if not can_verify():
                # No /proc (a chroot, a container): no holder can be shown to be the engine,
                # ours included. Reconnecting would never change that (it looped until the
                # hello timeout), so decide now, on what is known without /proc.
                return _unverifiable(sock, child, path)
            sock.close()
            if not told:
                _log(f"not the warm engine: {why}")
                told = True
            if lock.holder() is None:
                _remove_socket(path)
        if child is not None and child.poll() not in (None, 0):
            raise _PerRun(f"the warm engine exited with status {child.returncode} while "
                          "starting (its lines are above)")
        # Start one unless one is starting (it holds the lock before it listens); two relays
        # racing start two, and the one that does not get the lock exits at once (status 0).
        holder = lock.holder()
        # Linux tells who holds the lock (0 = held, not shown to be the engine: a stranger,
        # or an engine in its last moments); elsewhere 0 may be one starting: wait for it.
        if holder == 0 and child is None and sys.platform.startswith("linux"):
            now = time.monotonic()
            stranger_since = stranger_since or now
            if now - stranger_since > STRANGER_GRACE:
                raise _PerRun(f"{lock.path} is held by a process that is not the warm engine")
        else:
            stranger_since = None
        if (child is None or child.poll() is not None) and holder is None:
            child = _spawn_engine(serve_args, path, keep_warm, key, log_path)
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(POLL)


def _unverifiable(sock: socket.socket, child: subprocess.Popen | None, path: Path
                  ) -> socket.socket:
    """``sock``'s listener where /proc cannot be read: trusted when it is the engine this very
    attach started (the kernel's SO_PEERCRED pid is our child's, which cannot have been reused:
    the child is running and not yet waited for), else _PerRun at once. One log line either way."""
    creds = peer_credentials(sock)
    if child is not None and child.poll() is None and creds is not None \
            and creds[0] == child.pid:
        _log(f"cannot show who holds the lock (/proc cannot be read): trusting the engine this "
             f"attach started, pid {child.pid}")
        return sock
    sock.close()
    raise _PerRun(f"the process listening on {path} cannot be shown to be the warm engine: "
                  "/proc cannot be read")


def _remove_socket(path: Path) -> None:
    """The socket's name in our private folder, whatever it is (never followed)."""
    try:
        os.unlink(path)
        _log(f"removed {path}: no engine holds the lock")
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _PerRun(f"cannot remove {path} ({e.strerror or e})") from None


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
    ``fresh``: replace the running engine first (the plug-in's retry after a failure); a job
    it is running is finished first (``listen``: SIGTERM lets go of the socket at once).
    Returns the exit status, or PER_RUN: no warm engine for this client (one line in the log
    says why), ``run`` becomes a per-run engine."""
    log_path = Path(log_path or os.environ.get(LOG_ENV) or config.default_log_dir() / LOG_NAME)
    try:
        return _attach(serve_args, keep_warm, hello_timeout, log_path, fresh)
    except (WarmUnavailable, _PerRun) as e:
        _log(f"no warm engine ({e}): running one for this client only")
        return PER_RUN
    except Exception:  # noqa: BLE001 - a bug here must not cost the user the run
        _log("no warm engine (attach failed; details follow): running one for this client "
             "only\n" + traceback.format_exc())
        return PER_RUN


def _attach(serve_args: Sequence[str], keep_warm: float, hello_timeout: float, log_path: Path,
            fresh: bool) -> int:
    folder = private_dir()
    key = engine_key(serve_args, keep_warm)
    if fresh:
        _replaced(folder, False, "a fresh one was asked for")
    why = "no engine answered"
    for _attempt in range(3):
        try:
            sock = _connect_or_start(folder, serve_args, keep_warm, key, log_path, hello_timeout)
        except TimeoutError:
            why = f"no engine listened within {hello_timeout:g} s"
            break
        try:
            hello = read_hello(sock, WARM_HELLO_TIMEOUT)
        except TimeoutError:
            sock.close()
            _replaced(folder, True, f"it did not answer within {WARM_HELLO_TIMEOUT:g} s (hung)")
            continue
        except ProtocolError as e:
            sock.close()
            _replaced(folder, True, f"it sent garbage ({e.message})")
            continue
        if hello is None:  # it was ending (idle time over) as we connected: try again
            sock.close()
            why = "the engine closed the connection before its hello"
            continue
        if hello.get("type") == Msg.ERROR and hello.get("code") == Code.BUSY:
            sock.close()
            raise _PerRun(f"the warm engine is busy: {hello.get('message')}")
        warm = hello.get("warm") if hello.get("type") == Msg.HELLO else None
        if not isinstance(warm, dict) or warm.get("key") != key:
            sock.close()
            _replaced(folder, False, "it is another version or has other options")
            continue
        _log(f"connected to the warm engine, pid {hello.get('pid')}")
        return _relay(sock, encode_message(hello))
    _log(f"no warm engine: {why}")
    return EXIT_NO_ENGINE


def _replaced(folder: Path, force: bool, why: str) -> None:
    """Stop the warm engine (``warm.stop_engine``: only a process shown to be it). One that
    is running a job finishes it first: it lets go of its socket and lock at once and a new one
    can start beside it. Raises _PerRun when a stranger holds the lock."""
    pid = stop_engine(folder, force=force)
    if pid:
        _log(f"stopped the warm engine pid {pid}: {why}")
    elif _stranger_holds(folder):
        raise _PerRun(f"the warm engine should be replaced ({why}), but the process holding "
                      f"{folder / 'engine.lock'} cannot be shown to be it")


def _stranger_holds(folder: Path) -> bool:
    """The lock stays held, for STRANGER_GRACE s, by a process not shown to be the engine
    (an exiting engine is such a one only for a moment)."""
    lock = EngineLock(folder)
    if lock.holder() == 0 and not can_verify():
        return True  # without /proc no holder is ever shown to be the engine: waiting is vain
    end = time.monotonic() + STRANGER_GRACE
    while lock.holder() == 0:
        if time.monotonic() > end:
            return True
        time.sleep(POLL)
    return False


def run(args: Any) -> int:
    """``python -m nst_engine attach`` (``args``: serve's options plus ``keep_warm``,
    ``hello_timeout``, ``fresh``)."""
    serve_args: list[str] = []
    if getattr(args, "weights", None):
        serve_args += ["--weights", args.weights]
    if getattr(args, "device", None):
        serve_args += ["--device", args.device]
    code = attach(serve_args, keep_warm=args.keep_warm, hello_timeout=args.hello_timeout,
                  fresh=args.fresh) if args.keep_warm > 0 else PER_RUN
    if code != PER_RUN:
        return code
    # No warm engine possible (or keep_warm 0): become the per-run engine, as before.
    os.execv(sys.executable, [sys.executable, "-m", "nst_engine", "serve", *serve_args])
    return 1  # not reached
