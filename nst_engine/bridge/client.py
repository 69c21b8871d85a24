"""Start the engine process and talk to it: what the plug-in and ``install.py --check`` use.

Standard library only, relative imports only (this package is copied beside the plug-in as
``nst_bridge``), Python 3.10+ on Linux, Windows and macOS.

Life cycle: the engine is started from an argv (no shell) with stdin/stdout as the protocol
pipes and stderr appended to a log file. It exits when its stdin closes, which is what happens
when GIMP kills a cancelled plug-in: that is the mechanism everything else relies on. POSIX: the
engine gets its own session, so terminal signals meant for GIMP don't reach it mid-write.
Windows: it is also put in a Job Object that kills it when the plug-in's handle closes (written
from the Win32 documentation, not tested on Windows here).

Warm engine (``keep_warm`` > 0 in config.json, POSIX): ``from_config`` runs the same command with
``attach`` in place of ``serve`` (``warm_argv``): a small relay that connects to the user's warm
engine, starting one if none, so the protocol, the log, cancel-by-closing and crash reports stay
exactly as above; ``close()`` then ends this client's session and the engine stays loaded. When
the command runs the engine on this machine (``python -m nst_engine serve``), ``start`` first
connects to a running warm engine itself (``warm.connect_direct``: no relay process to start,
no copies through it) and uses ``attach`` only when none with the same options answers.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .wire import (DEFAULT_MAX_PAYLOAD, ENGINE_TYPES, PROTOCOL_VERSION, Code, EncodeError, Msg,
                   ProtocolError, RGBAImage, Role, read_frame, write_frame)

LOG_NAME = "engine.log"
#: A log bigger than this at start is moved to ``engine.log.1`` (one old log is kept).
LOG_ROTATE_BYTES = 2 << 20
DEFAULT_HELLO_TIMEOUT = 120.0
#: Set in attach's environment: the log the warm engine it starts appends to.
LOG_ENV = "NST_ENGINE_LOG"
#: How long close() lets the engine exit on its own before killing it.
EXIT_GRACE = 3.0
_TAIL_BYTES = 2000
_EOF = object()


class EngineFailed(Exception):
    """The engine could not do what was asked. ``code`` is a wire error code (``wire.Code`` or
    an ``nst_engine.errors`` class's ``.code``); ``user_text()`` is what a user reads."""

    def __init__(self, code: str, message: str, hint: str = "",
                 log_path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.log_path = str(log_path) if log_path else None

    def user_text(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(self.hint)
        if self.log_path:
            parts.append(f"Engine log: {self.log_path}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.user_text()


def child_env(pythonpath: str | Sequence[str] | None = None,
              env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: GIMP's Python paths removed, ours set if given."""
    out = dict(os.environ if env is None else env)
    out.pop("PYTHONPATH", None)
    out.pop("PYTHONHOME", None)
    if pythonpath:
        paths = [pythonpath] if isinstance(pythonpath, (str, os.PathLike)) else pythonpath
        out["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    out["PYTHONUNBUFFERED"] = "1"  # library prints reach the log before a crash, not after
    return out


def warm_argv(argv: Sequence[str], keep_warm: float, hello_timeout: float,
              fresh: bool = False) -> list[str] | None:
    """``engine_command`` with ``attach`` in place of its ``nst_engine serve`` (also behind ssh
    or flatpak-spawn), or None when it has none (a custom command) or this platform has no warm
    engine (Windows) or ``keep_warm`` is 0."""
    from .warm import supported

    if keep_warm <= 0 or not supported():
        return None
    for i in range(1, len(argv)):
        if argv[i] == "serve" and argv[i - 1].endswith("nst_engine"):
            return [*argv[:i], "attach", *argv[i + 1:], "--keep-warm", f"{keep_warm:g}",
                    "--hello-timeout", f"{hello_timeout:g}", *(["--fresh"] if fresh else [])]
    return None


def _popen_platform_kwargs() -> dict[str, Any]:
    if sys.platform == "win32":
        # GIMP runs plug-ins with pythonw.exe: no console, so none for the child either.
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {"start_new_session": True}


def _kill_on_close_job(proc: subprocess.Popen) -> Any:
    """Windows only: a Job Object with KILL_ON_JOB_CLOSE holding the engine. When the plug-in
    dies its handles close and Windows ends the engine. Returns the handle (keep it open), or
    None where unavailable. Untested here (no Windows): failures are ignored, stdin EOF still
    stops the engine."""
    if sys.platform != "win32":
        return None
    try:
        import ctypes
        from ctypes import wintypes

        class IoCounters(ctypes.Structure):
            _fields_ = [(n, ctypes.c_ulonglong) for n in (
                "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
                "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]

        class BasicLimits(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                        ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD),
                        ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t),
                        ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t),
                        ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class ExtendedLimits(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", BasicLimits),
                        ("IoInfo", IoCounters),
                        ("ProcessMemoryLimit", ctypes.c_size_t),
                        ("JobMemoryLimit", ctypes.c_size_t),
                        ("PeakProcessMemoryUsed", ctypes.c_size_t),
                        ("PeakJobMemoryUsed", ctypes.c_size_t)]

        JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        k32.CreateJobObjectW.restype = wintypes.HANDLE
        k32.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
        k32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p,
                                                wintypes.DWORD]
        k32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
        job = k32.CreateJobObjectW(None, None)
        if not job:
            return None
        info = ExtendedLimits()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not (k32.SetInformationJobObject(job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                            ctypes.byref(info), ctypes.sizeof(info))
                and k32.AssignProcessToJobObject(job, int(proc._handle))):  # type: ignore[attr-defined]
            k32.CloseHandle(job)
            return None
        return job
    except Exception:
        return None


def _kill(proc: subprocess.Popen) -> None:
    """Kill the engine and, on POSIX, its session's process group (an ``ssh`` or wrapper
    script's children too)."""
    if sys.platform != "win32":
        import signal
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except OSError:
            pass
    proc.kill()


def open_log(path: Path) -> Any:
    """Open the engine log for appending, first moving a large one aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except OSError:
        pass  # missing, or held open elsewhere (Windows): keep appending
    return open(path, "ab")


class EngineClient:
    """One engine process. ``with EngineClient(argv) as c: c.start(); c.stylize(...)``.

    ``stylize`` blocks; ``cancel`` may be called from another thread or from ``on_progress``.
    """

    def __init__(self, argv: Sequence[str], *, pythonpath: str | Sequence[str] | None = None,
                 log_path: str | os.PathLike | None = None,
                 hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
                 env: Mapping[str, str] | None = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("the engine command must be a non-empty list of strings")
        self.argv = list(argv)
        self.pythonpath = pythonpath
        if log_path is None:
            from .config import default_log_dir
            log_path = default_log_dir() / LOG_NAME
        self.log_path = Path(log_path)
        self.hello_timeout = float(hello_timeout)
        self.env = env
        self.max_payload = max_payload
        self.hello: dict[str, Any] | None = None
        #: Whether argv is ``attach`` (a warm engine shared with later runs); from_config sets it.
        self.warm = False
        #: (serve options, keep_warm) for connecting to a local warm engine without attach.
        self.direct: tuple[dict[str, Any], float] | None = None
        #: The last result's notices (e.g. weights of unknown checksum), for the user to see.
        self.last_notices: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._sock: Any = None  # a direct connection to the warm engine (socket.socket)
        self._rfile: Any = None  # the engine's frames come from here
        self._wfile: Any = None  # ours go here
        self._log = None
        self._log_start = 0
        self._job = None
        self._frames: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._current_id: int | None = None
        self._cancelled: set[int] = set()
        self._read_error: ProtocolError | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, keep_warm: float | None = None,
                    fresh: bool = False, **kwargs: Any) -> "EngineClient":
        """From ``bridge.config.load_config()``'s dict; keyword arguments win. With
        ``keep_warm`` (default: the config's) > 0 the client attaches to the warm engine;
        ``fresh``: replace the running warm engine first (a retry after a failure)."""
        from .config import default_log_dir, keep_warm as configured_keep_warm
        log_dir = Path(cfg.get("log_dir") or default_log_dir())
        opts: dict[str, Any] = {"pythonpath": cfg.get("engine_pythonpath"),
                                "log_path": log_dir / LOG_NAME,
                                "hello_timeout": cfg.get("hello_timeout") or DEFAULT_HELLO_TIMEOUT}
        opts.update(kwargs)
        if keep_warm is None:
            keep_warm = configured_keep_warm(dict(cfg))
        argv = warm_argv(cfg["engine_command"], keep_warm, float(opts["hello_timeout"]), fresh)
        client = cls(argv or cfg["engine_command"], **opts)
        client.warm = argv is not None
        if client.warm and not fresh:
            from .warm import direct_options
            options = direct_options(cfg["engine_command"])
            client.direct = (options, keep_warm) if options is not None else None
        return client

    # ------------------------------------------------------------------------ life cycle

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The process this client started (with a warm engine: the ``attach`` relay)."""
        return self._proc.pid if self._proc else None

    @property
    def engine_pid(self) -> int | None:
        """The engine's own pid, from its hello (on its machine)."""
        pid = (self.hello or {}).get("pid")
        return pid if isinstance(pid, int) else None

    def start(self) -> dict[str, Any]:
        """Start the engine and wait for its hello (``hello_timeout`` seconds)."""
        if self._proc is not None or self._sock is not None:
            raise RuntimeError("engine already started")
        self._log = open_log(self.log_path)
        self._log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting engine: "
                        f"{self.argv!r}\n".encode("utf-8", "replace"))
        self._log.flush()
        self._log_start = self._log.tell()
        if self.direct is not None:
            hello = self._start_direct(*self.direct)
            if hello is not None:
                return hello
        try:
            env = child_env(self.pythonpath, self.env)
            if self.warm:
                env[LOG_ENV] = str(self.log_path)
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                bufsize=0, env=env, close_fds=True,
                **_popen_platform_kwargs())
        except OSError as e:
            self._close_log()
            raise EngineFailed(
                Code.ENGINE_NOT_STARTED,
                f"The style transfer engine could not be started: {self.argv[0]!r}: "
                f"{e.strerror or e}.",
                "Run `python install.py` again, or fix 'engine_command' in the Style Transfer "
                "config.json.", self.log_path) from None
        self._job = _kill_on_close_job(self._proc)
        self._rfile, self._wfile = self._proc.stdout, self._proc.stdin
        self._start_reader()
        item = self._next(timeout=self.hello_timeout)
        if item is None:
            self.close(kill=True)
            raise EngineFailed(
                Code.ENGINE_NOT_STARTED,
                f"The style transfer engine did not answer within {self.hello_timeout:g} s."
                + self._tail_text(),
                "The first start can be slow while PyTorch loads; raise 'hello_timeout' in "
                "config.json, or run `python install.py --check`.", self.log_path)
        if item is _EOF:
            raise self._died(Code.ENGINE_NOT_STARTED, "while starting")
        if item.type == Msg.ERROR:
            self.close()
            raise self._failed_from(item.header)
        if item.type != Msg.HELLO:
            self.close(kill=True)
            raise EngineFailed(Code.ENGINE_NOT_STARTED,
                               f"The engine sent {item.type!r} before its hello.",
                               "Check that 'engine_command' runs `-m nst_engine serve`.",
                               self.log_path)
        if item.header.get("protocol") != PROTOCOL_VERSION:
            self.close(kill=True)
            raise EngineFailed(
                Code.PROTOCOL_VERSION,
                f"The engine speaks protocol {item.header.get('protocol')!r}, this plug-in "
                f"{PROTOCOL_VERSION}.",
                "Install the plug-in and the engine from the same Style Transfer version "
                "(`python install.py`).", self.log_path)
        self.hello = item.header
        return item.header

    def _start_direct(self, options: dict[str, Any], keep_warm: float) -> dict[str, Any] | None:
        """Connect to the running warm engine itself; None (nothing done) when there is none."""
        from .warm import connect_direct

        found = connect_direct(options, keep_warm)
        if found is None:
            return None
        self._sock, self.hello = found
        self._rfile = self._sock.makefile("rb", buffering=0)
        self._wfile = self._sock.makefile("wb", buffering=0)
        self._log.write(f"{time.strftime('%H:%M:%S')} client[{os.getpid()}]: connected to the "
                        f"warm engine, pid {self.hello.get('pid')}\n".encode())
        self._log.flush()
        self._start_reader()
        return self.hello

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read_loop, name="nst-engine-reader",
                                        daemon=True)
        self._reader.start()

    def _close_direct(self, kill: bool) -> None:
        """End our session with the warm engine (it stays): shutdown, then our end closes."""
        import socket

        if not kill:
            try:
                self._send({"type": Msg.SHUTDOWN})
                self._sock.shutdown(socket.SHUT_WR)
            except (OSError, ValueError):
                pass
            if self._reader is not None:
                self._reader.join(timeout=EXIT_GRACE)  # the engine closes the session
        for f in (self._rfile, self._wfile, self._sock):
            try:
                f.close()
            except OSError:
                pass

    def close(self, *, kill: bool = False) -> None:
        """Ask the engine to exit (shutdown, then stdin EOF); kill it after EXIT_GRACE. A direct
        connection to the warm engine only ends this client's session."""
        if self._sock is not None:
            self._close_direct(kill)
        proc = self._proc
        if proc is not None:
            if not kill and proc.poll() is None:
                try:
                    self._send({"type": Msg.SHUTDOWN})
                except (OSError, ValueError):  # gone, or stdin already closed
                    pass
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=0 if kill else EXIT_GRACE)
            except subprocess.TimeoutExpired:
                _kill(proc)
                proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=2)
            try:
                proc.stdout.close()
            except OSError:
                pass
        if self._job is not None:
            import ctypes
            ctypes.WinDLL("kernel32").CloseHandle(self._job)  # type: ignore[attr-defined]
            self._job = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------------ requests

    def stylize(self, content: RGBAImage, styles: Sequence[tuple[RGBAImage, float]], *,
                preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                device: str | None = None,
                on_progress: Callable[[dict[str, Any]], None] | None = None) -> RGBAImage:
        """Run one job; the result has the content's size. Raises EngineFailed."""
        if self.hello is None:
            raise RuntimeError("start() the engine first")
        content.check()
        if not styles:
            raise ValueError("at least one style image is needed")
        images = [{"role": Role.CONTENT, "width": content.width, "height": content.height}]
        for img, weight in styles:
            img.check()
            images.append({"role": Role.STYLE, "width": img.width, "height": img.height,
                           "weight": float(weight)})
        rid = next(self._ids)
        header = {"type": Msg.STYLIZE, "id": rid, "protocol": PROTOCOL_VERSION,
                  "preset": preset, "overrides": dict(overrides or {}), "device": device,
                  "images": images}
        self._current_id = rid
        try:
            try:
                self._send(header, content.data, *(img.data for img, _ in styles))
            except EncodeError as e:  # raised before a byte is written: the caller's values
                raise EngineFailed(Code.BAD_REQUEST, f"This request cannot be sent ({e}).",
                                   "Settings must be finite numbers, texts or true/false.",
                                   self.log_path) from None
            except (OSError, ValueError):
                raise self._died(Code.ENGINE_CRASHED, "while receiving a job") from None
            while True:
                item = self._next(timeout=None)
                if item is _EOF:
                    raise self._died(Code.ENGINE_CRASHED, "during the job")
                h = item.header
                if h.get("id") not in (rid, None):
                    continue  # a late reply to an earlier, abandoned job
                if item.type == Msg.PROGRESS:
                    if on_progress is not None:
                        on_progress(h)
                elif item.type == Msg.RESULT and rid in self._cancelled:
                    # Finished before the cancel reached it: never hand it to the caller.
                    raise EngineFailed(Code.CANCELLED, "Style transfer cancelled.", "",
                                       self.log_path)
                elif item.type == Msg.RESULT:
                    if (h["width"], h["height"]) != (content.width, content.height):
                        raise EngineFailed(Code.INTERNAL,
                                           f"The engine returned a {h['width']}x{h['height']} "
                                           f"image for a {content.width}x{content.height} one.",
                                           "", self.log_path)
                    self.last_notices = [str(n) for n in h.get("notices") or []]
                    return RGBAImage(h["width"], h["height"], bytes(item.payload))
                elif item.type == Msg.ERROR:
                    raise self._failed_from(h)
        except BaseException as e:
            if not isinstance(e, EngineFailed):
                self.cancel()  # on_progress raised, or Ctrl-C: don't leave the job running
            raise
        finally:
            self._current_id = None

    def cancel(self) -> None:
        """Ask the engine to stop the running job; ``stylize`` then raises EngineFailed with
        code ``cancelled``. Safe from any thread; a no-op when no job runs."""
        rid = self._current_id
        if rid is None or (self._proc is None and self._sock is None):
            return
        self._cancelled.add(rid)
        try:
            self._send({"type": Msg.CANCEL, "id": rid})
        except (OSError, ValueError):
            pass  # the engine is gone: stylize reports that

    # ------------------------------------------------------------------------ plumbing

    def _send(self, header: dict[str, Any], *parts: bytes) -> None:
        assert self._wfile is not None
        with self._write_lock:
            write_frame(self._wfile, header, *parts)

    def _read_loop(self) -> None:
        stream = self._rfile
        while True:
            try:
                frame = read_frame(stream, accept=ENGINE_TYPES, max_payload=self.max_payload)
            except ProtocolError as e:
                self._read_error = e
                if e.fatal:
                    break
                continue  # that frame was skipped whole; the stream is still in step
            except (OSError, ValueError):
                break  # pipe closed under us by close()
            if frame is None:
                break
            self._frames.put(frame)
        self._frames.put(_EOF)

    def _next(self, timeout: float | None) -> Any:
        """The next frame or _EOF; None after ``timeout`` seconds. Polls so Ctrl-C works."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                return self._frames.get(timeout=wait)
            except queue.Empty:
                continue

    def _failed_from(self, h: Mapping[str, Any]) -> EngineFailed:
        return EngineFailed(str(h.get("code") or Code.INTERNAL),
                            str(h.get("message") or "The engine reported an error."),
                            str(h.get("hint") or ""), self.log_path)

    def _died(self, code: str, when: str) -> EngineFailed:
        proc, status, stopped_by_us = self._proc, None, False
        if proc is not None:
            try:
                status = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                _kill(proc)
                status, stopped_by_us = proc.wait(), True
        broken = self._read_error if self._read_error and self._read_error.fatal else None
        if broken is not None:
            how = f"sent output that is not a protocol message ({broken.message})"
            hint = ("Something in the engine printed to its standard output, or the engine "
                    "command does not run `-m nst_engine serve`. See the engine log.")
        elif status is not None and status < 0 and not stopped_by_us:
            how = f"was killed by signal {-status}"
            hint = "It may have run out of memory: try a smaller maximum size."
        elif status is not None and not stopped_by_us:
            how = f"exited with status {status}"
            hint = "See the engine log; `python install.py --check` tests the engine."
        else:
            how = "closed its output"
            hint = "See the engine log; `python install.py --check` tests the engine."
        err = EngineFailed(code, f"The style transfer engine {how} {when}." + self._tail_text(),
                           hint, self.log_path)
        self.close(kill=True)
        return err

    def _tail_text(self) -> str:
        tail = log_tail(self.log_path, since=self._log_start)
        return f"\nLast lines of the engine log:\n{tail}" if tail else ""


def log_tail(path: str | os.PathLike, *, since: int = 0, max_bytes: int = _TAIL_BYTES,
             max_lines: int = 15) -> str:
    """The end of the log, from offset ``since`` on (this start's part only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(since, end - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-max_lines:])


def list_presets(cfg: Mapping[str, Any], timeout: float = 60.0) -> Any:
    """Run ``cfg["presets_command"]`` (argv printing ``presets --json``) and return its parsed
    JSON. Raises EngineFailed(``presets_unavailable``)."""
    argv = cfg.get("presets_command")
    hint = "Run `python install.py` again to rewrite the Style Transfer configuration."
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           "The configuration has no valid 'presets_command'.", hint)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, env=child_env(cfg.get("engine_pythonpath")),
                              **({"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
                                 if sys.platform == "win32" else {}))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           f"Listing the presets failed: {argv[0]!r}: {e}.", hint) from None
    err = done.stderr.decode("utf-8", "replace").strip()[-_TAIL_BYTES:]
    if done.returncode != 0:
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           f"Listing the presets failed (exit status {done.returncode}): {err}",
                           hint)
    try:
        return json.loads(done.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           f"The preset list is not valid JSON ({e}). {err}", hint) from None
