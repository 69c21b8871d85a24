"""Talk to the engine: what the plug-in and ``install.py --check`` use.

Standard library only, relative imports only (this package is copied beside the plug-in as
``nst_bridge``), Python 3.10+ on Linux, Windows and macOS.

``EngineClient`` speaks the protocol (``wire.py``): it waits for the hello, sends jobs and
cancels, reads the engine's messages on a thread of its own and turns every failure into an
``EngineFailed`` a user can act on. How the bytes move, and what closing means, is a
transport's, one class each:

- ``PipeClient``: a process this client starts (no shell), speaking on its stdin/stdout, its
  stderr appended to the log (``logs.py``): ``serve``, a per-run engine, or ``attach``, the
  relay to the warm engine. The engine exits when its stdin closes, which is what happens when
  GIMP kills a cancelled plug-in: that is the mechanism everything else relies on
  (``process.py`` adds its own session, and on Windows a kill-on-close Job Object).
- ``DirectClient``: a connection of its own to the user's running warm engine
  (``warm.connect_direct``): no relay process to start, no copies through it. Closing ends this
  client's session; the engine stays loaded.

``EngineClient.from_config`` picks the transport. With ``keep_warm`` > 0 (POSIX) it runs the
same command with ``attach`` in place of ``serve`` (``warm.warm_argv``), so the protocol, the
log, cancel-by-closing and crash reports stay exactly as with a per-run engine, and
``close()`` ends only this client's session; when the command runs the engine on this machine
(``python -m nst_engine serve``) and a warm engine with the same options answers, it connects
to that one directly instead. That connection is made by ``from_config`` itself (the class
depends on it); ``start()`` then hands back the hello read there.
"""

from __future__ import annotations

import abc
import itertools
import os
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import config, process
from .errors import EngineFailed
from .logs import LOG_ENV, LOG_NAME, log_tail, open_log
from .process import child_env, list_presets
from .warm import EXIT_NO_ENGINE, connect_direct, direct_options, warm_argv
from .wire import (DEFAULT_MAX_PAYLOAD, ENGINE_TYPES, PROTOCOL_VERSION, Code, EncodeError, Msg,
                   ProtocolError, RGBAImage, Role, read_message, write_message)

#: EngineFailed, child_env and list_presets live in errors.py and process.py; install.py and
#: the plug-in take them from here, the client's one public face.
__all__ = ["DEFAULT_HELLO_TIMEOUT", "DirectClient", "EngineClient", "EngineFailed", "PipeClient",
           "child_env", "list_presets"]

DEFAULT_HELLO_TIMEOUT = 120.0
#: How long close() lets the engine exit (or end the session) on its own.
EXIT_GRACE = 3.0
_EOF = object()


class EngineClient(abc.ABC):
    """The protocol with one engine, whatever carries its bytes. Get one from ``from_config``,
    then ``with client: client.start(); client.stylize(...)``.

    ``stylize`` blocks; ``cancel`` may be called from another thread or from ``on_progress``.
    A transport connects the streams (``_open``), tells how the engine ended
    (``_exit_status``) and ends its side (``_close_transport``).
    """

    #: Whether the engine is the warm one, shared with later runs: the plug-in replaces a dead
    #: one with a fresh engine (``retry.py``).
    warm = False

    def __init__(self, argv: Sequence[str], *, log_path: str | os.PathLike | None = None,
                 hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("the engine command must be a non-empty list of strings")
        #: The command this client runs, or (DirectClient) would have run to reach the engine.
        self.argv = list(argv)
        self.log_path = Path(log_path if log_path is not None
                             else config.default_log_dir() / LOG_NAME)
        self.hello_timeout = float(hello_timeout)
        self.max_payload = max_payload
        self.hello: dict[str, Any] | None = None
        #: The last result's notices (e.g. weights of unknown checksum), for the user to see.
        self.last_notices: list[str] = []
        self._rfile: Any = None  # the engine's messages come from here
        self._wfile: Any = None  # ours go here
        self._log: Any = None
        self._log_start = 0
        self._messages: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._current_id: int | None = None
        self._cancelled: set[int] = set()
        self._read_error: ProtocolError | None = None

    @staticmethod
    def from_config(cfg: Mapping[str, Any], *, keep_warm: float | None = None,
                    fresh: bool = False, **kwargs: Any) -> EngineClient:
        """The client for ``bridge.config.load_config()``'s dict (module doc: which transport);
        keyword arguments (``PipeClient``'s) win over the config. ``keep_warm`` (default: the
        config's) > 0 reaches the warm engine; ``fresh``: replace the running warm engine first
        (the retry after a failure, ``retry.py``), so never the direct connection."""
        pipe_only = {"pythonpath": kwargs.pop("pythonpath", cfg.get("engine_pythonpath")),
                     "env": kwargs.pop("env", None)}
        opts: dict[str, Any] = {
            "log_path": Path(cfg.get("log_dir") or config.default_log_dir()) / LOG_NAME,
            "hello_timeout": cfg.get("hello_timeout") or DEFAULT_HELLO_TIMEOUT}
        opts.update(kwargs)
        if keep_warm is None:
            keep_warm = config.keep_warm(dict(cfg))
        command = cfg["engine_command"]
        argv = warm_argv(command, keep_warm, float(opts["hello_timeout"]), fresh)
        options = direct_options(command) if argv is not None and not fresh else None
        found = connect_direct(options, keep_warm) if options is not None else None
        if found is not None:
            return DirectClient(argv, *found, **opts)
        return PipeClient(argv or command, warm=argv is not None, **pipe_only, **opts)

    # ------------------------------------------------------------------------ life cycle

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The process this client started (with a warm engine: the ``attach`` relay)."""
        return None

    @property
    def engine_pid(self) -> int | None:
        """The engine's own pid, from its hello (on its machine)."""
        pid = (self.hello or {}).get("pid")
        return pid if isinstance(pid, int) else None

    def start(self) -> dict[str, Any]:
        """Start or reach the engine and wait for its hello (``hello_timeout`` seconds)."""
        if self._rfile is not None:
            raise RuntimeError("engine already started")
        self._log = open_log(self.log_path)
        self._log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting engine: "
                        f"{self.argv!r}\n".encode("utf-8", "replace"))
        self._log.flush()
        self._log_start = self._log.tell()
        try:
            hello = self._open()
        except BaseException:
            self._close_log()
            raise
        self._reader = threading.Thread(target=self._read_loop, name="nst-engine-reader",
                                        daemon=True)
        self._reader.start()
        self.hello = hello if hello is not None else self._await_hello()
        return self.hello

    def close(self, *, kill: bool = False) -> None:
        """Let the engine go: a per-run engine is asked to exit (shutdown, then the end of its
        input) and killed after EXIT_GRACE s; a warm engine only loses this client's session.
        ``kill``: no asking, no waiting."""
        self._close_transport(kill)
        self._close_log()

    @abc.abstractmethod
    def _open(self) -> dict[str, Any] | None:
        """Connect ``_rfile``/``_wfile`` to the engine; its hello when already read, else None
        (``start`` waits for it). Raises EngineFailed."""

    def _exit_status(self) -> tuple[int | None, bool]:
        """Once the engine's output has ended: (its exit status, or None when this transport
        cannot tell; whether this client had to kill it)."""
        return None, False

    @abc.abstractmethod
    def _close_transport(self, kill: bool) -> None:
        """End this transport's side; ``kill``: at once."""

    def _await_hello(self) -> dict[str, Any]:
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
        return item.header

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------------ requests

    def stylize(self, content: RGBAImage, styles: Sequence[tuple[RGBAImage, float]], *,
                preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                device: str | None = None,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                animation: Mapping[str, Any] | None = None) -> RGBAImage:
        """Run one job; the result has the content's size. Raises EngineFailed.
        ``animation``: ``{"clip", "frame", "frames", "loop"}`` for a frame of an animation
        (docs/PROTOCOL.md)."""
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
        if animation is not None:
            header["animation"] = dict(animation)
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
        if rid is None or self._wfile is None:
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
            write_message(self._wfile, header, *parts)

    def _read_loop(self) -> None:
        stream = self._rfile
        while True:
            try:
                msg = read_message(stream, accept=ENGINE_TYPES, max_payload=self.max_payload)
            except ProtocolError as e:
                self._read_error = e
                if e.fatal:
                    break
                continue  # that message was skipped whole; the stream is still in step
            except (OSError, ValueError):
                break  # closed under us by close()
            if msg is None:
                break
            self._messages.put(msg)
        self._messages.put(_EOF)

    def _next(self, timeout: float | None) -> Any:
        """The next message or _EOF; None after ``timeout`` seconds. Polls so Ctrl-C works."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                return self._messages.get(timeout=wait)
            except queue.Empty:
                continue

    def _failed_from(self, h: Mapping[str, Any]) -> EngineFailed:
        return EngineFailed(str(h.get("code") or Code.INTERNAL),
                            str(h.get("message") or "The engine reported an error."),
                            str(h.get("hint") or ""), self.log_path)

    def _died(self, code: str, when: str) -> EngineFailed:
        status, stopped_by_us = self._exit_status()
        broken = self._read_error if self._read_error and self._read_error.fatal else None
        if broken is not None:
            how = f"sent output that is not a protocol message ({broken.message})"
            hint = ("Something in the engine printed to its standard output, or the engine "
                    "command does not run `-m nst_engine serve`. See the engine log.")
        elif self.warm and (status is None or status == EXIT_NO_ENGINE) and not stopped_by_us:
            # The relay (EXIT_NO_ENGINE) or our own connection lost the shared engine.
            if code == Code.ENGINE_NOT_STARTED:
                text = "The warm style transfer engine could not be started or reached."
            else:
                text = (f"The connection to the warm style transfer engine was lost {when}: "
                        "the engine stopped, crashed or was replaced.")
            err = EngineFailed(code, text + self._tail_text(),
                               "Try again: the next run starts a new engine. If it keeps "
                               "happening, see the engine log, or set \"keep_warm\": 0 in "
                               "config.json (one engine per run).", self.log_path)
            self.close(kill=True)
            return err
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


class PipeClient(EngineClient):
    """An engine process of this client's own, on its stdin/stdout: ``serve``, or with
    ``warm`` the ``attach`` relay to the shared warm engine."""

    def __init__(self, argv: Sequence[str], *, warm: bool = False,
                 pythonpath: str | Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(argv, **kwargs)
        self.warm = warm
        self.pythonpath = pythonpath
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._job_object: Any = None  # Windows' kill-on-close Job Object (not a style job)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _open(self) -> None:
        env = child_env(self.pythonpath, self.env)
        if self.warm:
            env[LOG_ENV] = str(self.log_path)
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                bufsize=0, env=env, close_fds=True, **process.popen_kwargs())
        except OSError as e:
            raise EngineFailed(
                Code.ENGINE_NOT_STARTED,
                f"The style transfer engine could not be started: {self.argv[0]!r}: "
                f"{e.strerror or e}.",
                "Run `python install.py` again, or fix 'engine_command' in the Style Transfer "
                "config.json.", self.log_path) from None
        self._job_object = process.kill_on_close_job(self._proc)
        self._rfile, self._wfile = self._proc.stdout, self._proc.stdin
        return None

    def _exit_status(self) -> tuple[int | None, bool]:
        proc = self._proc
        try:
            return proc.wait(timeout=2), False
        except subprocess.TimeoutExpired:
            process.kill(proc)
            return proc.wait(), True

    def _close_transport(self, kill: bool) -> None:
        proc = self._proc
        if proc is None:
            return
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
            process.kill(proc)
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        try:
            proc.stdout.close()
        except OSError:
            pass
        if self._job_object is not None:
            process.close_job(self._job_object)
            self._job_object = None


class DirectClient(EngineClient):
    """A connection of this client's own to the running warm engine, made (and its hello read)
    by ``from_config`` through ``warm.connect_direct``."""

    warm = True

    def __init__(self, argv: Sequence[str], sock: socket.socket, hello: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(argv, **kwargs)
        self._sock = sock
        self._found_hello = hello

    def _open(self) -> dict[str, Any]:
        self._rfile = self._sock.makefile("rb", buffering=0)
        self._wfile = self._sock.makefile("wb", buffering=0)
        self._log.write(f"{time.strftime('%H:%M:%S')} client[{os.getpid()}]: connected to the "
                        f"warm engine, pid {self._found_hello.get('pid')}\n".encode())
        self._log.flush()
        return self._found_hello

    def _close_transport(self, kill: bool) -> None:
        """Ends this client's session (shutdown, then our end closes); the engine stays."""
        if not kill and self._wfile is not None:
            try:
                self._send({"type": Msg.SHUTDOWN})
                self._sock.shutdown(socket.SHUT_WR)
            except (OSError, ValueError):
                pass
            if self._reader is not None:
                self._reader.join(timeout=EXIT_GRACE)  # the engine closes the session
        for f in (self._rfile, self._wfile, self._sock):
            if f is None:  # never started
                continue
            try:
                f.close()
            except OSError:
                pass
