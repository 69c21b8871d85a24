"""``python -m nst_engine serve``: the engine process the GIMP plug-in talks to.

Framed messages (``bridge/wire.py``) on stdin/stdout; everything else goes to stderr, which the
client points at its log file. The protocol owns the real stdout: before torch (or anything
that might print) is imported, fd 1 is moved to a private descriptor and fd 1 becomes a copy
of stderr, so even a C library's ``printf`` lands in the log instead of corrupting a frame.
stdin is likewise moved aside and replaced by the null device.

Threads: a reader takes frames off stdin — jobs go to the queue (``_Jobs``) the main thread
works through,
``cancel`` sets the named job's event, ``shutdown`` or the end of stdin (the plug-in exited or
GIMP killed it) cancels everything and ends the process; if the running job has not stopped
``EXIT_GRACE`` seconds later the process exits anyway. After a cancelled job the engine keeps
serving. Framing errors (bad magic, over a limit, truncated, bad JSON) are answered with an
error frame and the engine exits, since the stream is out of step; a well-framed but wrong
message (unknown type, other protocol version, bad fields) is answered and the engine goes on.

Warm mode (``serve --listen SOCKET``, started by ``attach``; ``listen.py``): the same session
(``_Server``) runs once per connection, with ``ends_process`` off, so a client's end (``shutdown``
or end of input) ends only its session; every session's jobs share one ``_Jobs`` queue, one job
at a time, and a job that has to wait is told so with a ``waiting`` progress frame.
"""

from __future__ import annotations

import io
import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from .bridge import wire
from .bridge.wire import Code, Msg, ProtocolError

#: Seconds a cancelled job gets to stop after shutdown/EOF before the process exits regardless.
EXIT_GRACE = 1.5
#: Progress frames per second at most (the first, stage changes and the last always go).
PROGRESS_PER_SECOND = 10
#: Exit status after a framing error on stdin.
EXIT_PROTOCOL = 3
#: Environment variable that lowers the payload limit (bytes), e.g. for tests.
MAX_PAYLOAD_ENV = "NST_MAX_PAYLOAD"
#: The progress stage of a job queued behind another client's (the plug-in shows it in words).
WAITING_STAGE = "waiting"


def _log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} serve[{os.getpid()}]: {msg}", file=sys.stderr,
          flush=True)


def _claim_stdio() -> tuple[io.FileIO, io.FileIO]:
    """Private descriptors for the protocol; fd 1 → stderr, fd 0 → the null device."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    out_fd = os.dup(1)  # dup'd descriptors are not inherited by children (PEP 446)
    in_fd = os.dup(0)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")
    if sys.platform == "win32":
        import msvcrt
        msvcrt.setmode(out_fd, os.O_BINARY)
        msvcrt.setmode(in_fd, os.O_BINARY)
    # Raw files: no buffer lock a daemon reader thread could hold at interpreter exit.
    return io.FileIO(in_fd, "rb", closefd=True), io.FileIO(out_fd, "wb", closefd=True)


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


class _Throttle:
    """The ``progress`` callback: at most PROGRESS_PER_SECOND frames, never dropping the first,
    a stage change or the last."""

    def __init__(self, send, rid: Any) -> None:
        self._send, self._rid = send, rid
        self._last_time = -math.inf
        self._last_stage: str | None = None
        self._pending = None

    def __call__(self, p) -> None:
        now = time.monotonic()
        must = (p.stage != self._last_stage or p.stage == "done" or p.iteration >= p.total)
        if must or now - self._last_time >= 1.0 / PROGRESS_PER_SECOND:
            self._emit(p, now)
        else:
            self._pending = p

    def flush(self) -> None:
        if self._pending is not None:
            self._emit(self._pending, time.monotonic())

    def _emit(self, p, now: float) -> None:
        self._pending, self._last_time, self._last_stage = None, now, p.stage
        self._send({"type": Msg.PROGRESS, "id": self._rid, "stage": p.stage, "level": p.level,
                    "levels": p.levels, "iteration": p.iteration, "total": p.total,
                    "elapsed": _finite(p.elapsed), "eta": _finite(p.eta), "width": p.width,
                    "height": p.height, "tiles": p.tiles, "note": p.note})


class Ready:
    """The loaded engine: the hello every session gets, or the start-up error."""

    def __init__(self, header: dict[str, Any] | None = None, notices: list[str] | None = None,
                 error: tuple[str, str, str] | None = None) -> None:
        self.header, self.notices, self.error = header, notices or [], error


def load_engine(args: Any) -> Ready:
    """Import torch, look at the device and weights, load the model; the hello to send."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means no engine
        _log("importing torch failed:\n" + traceback.format_exc())
        return Ready(error=(Code.ENGINE_NOT_STARTED,
                            f"PyTorch cannot be loaded by the engine's Python ({e}).",
                            "Run `python install.py` again to repair the engine's environment."))
    from . import __version__
    from .errors import DeviceUnavailable, EngineError, WeightsMissing
    from .devices import resolve_device
    from .params import StyleParams
    from .transfer import model_for

    notices: list[str] = []
    result_notices: list[str] = []  # attached to every result (e.g. unverified weights)
    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as e:
        device = None
        notices.append(e.user_text())
    try:  # loads the weights now (status for the hello) and keeps the model for the jobs
        _, desc = model_for(args.weights, None, StyleParams(), device or torch.device("cpu"))
        weights = {"status": "verified" if desc.verified else "unverified",
                   "notice": desc.notice}
        if desc.notice:
            result_notices.append(desc.notice)
    except EngineError as e:
        weights = {"status": "missing" if isinstance(e, WeightsMissing) else "invalid",
                   "notice": e.user_text()}
    notices += [n for n in (weights["notice"],) if n]
    _log(f"engine {__version__}, torch {torch.__version__}, device {device}, "
         f"weights {weights['status']}")
    listen = getattr(args, "listen", None)
    warm = ({"keep_warm": args.keep_warm, "key": args.warm_key,
             "options": {"weights": args.weights, "device": args.device}} if listen else None)
    return Ready({"type": Msg.HELLO, "protocol": wire.PROTOCOL_VERSION,
                  "engine_version": __version__,
                  "device": str(device) if device is not None else None,
                  "torch": torch.__version__, "weights": weights, "notices": notices,
                  "pid": os.getpid(), "warm": warm}, result_notices)


class _Jobs:
    """The one queue every session's jobs go through: one job at a time, in arrival order.

    A job queued behind another gets a ``waiting`` progress frame; one cancelled while it waits
    is answered at once (``cancelled``) instead of when its turn comes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque = deque()  # (session, frame, cancel event)
        self._running: "_Server | None" = None  # whose job runs now
        self.last_active = time.monotonic()

    def submit(self, session: "_Server", frame: wire.Frame, cancel: threading.Event) -> None:
        with self._cond:
            # Only another client's job makes this one wait (its own previous job may still be
            # finishing when a quick client sends the next).
            behind = (self._running not in (None, session)
                      or any(other is not session for other, _, _ in self._queue))
            self._queue.append((session, frame, cancel))
            self._cond.notify_all()
        if behind:
            _log(f"job {frame.header.get('id')!r} waits for another client's job")
            session.send({"type": Msg.PROGRESS, "id": frame.header.get("id"),
                          "stage": WAITING_STAGE, "level": 0, "levels": 0, "iteration": 0,
                          "total": 0, "elapsed": 0.0, "eta": None})

    def touch(self) -> None:
        """Something happened (a client came or went): the idle time starts again."""
        with self._cond:
            self.last_active = time.monotonic()
            self._cond.notify_all()

    def work(self, stopping: threading.Event, idle_exit: float | None = None) -> None:
        """Run jobs until ``stopping`` is set or, with ``idle_exit``, nothing happened for that
        many seconds."""
        threading.Thread(target=self._answer_cancelled, args=(stopping,), daemon=True,
                         name="nst-serve-cancelled").start()
        while not stopping.is_set():
            with self._cond:
                if not self._queue:
                    if idle_exit is not None and \
                            time.monotonic() - self.last_active >= idle_exit:
                        return
                    self._cond.wait(0.25)
                    continue
                session, frame, cancel = self._queue.popleft()
                self._running = session
            try:
                session.run_job(frame, cancel)
            finally:
                _release_cached_memory()
                with self._cond:
                    self._running = None
                    self.last_active = time.monotonic()

    def _answer_cancelled(self, stopping: threading.Event) -> None:
        while not stopping.wait(0.1):
            with self._cond:
                gone = [item for item in self._queue if item[2].is_set()]
                for item in gone:
                    self._queue.remove(item)
            for session, frame, cancel in gone:
                session.run_job(frame, cancel)  # answers ``cancelled`` without running

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _SessionJobs:
    """A session's door to the shared queue (``put((frame, event))``; ``put(None)``: the session
    ended)."""

    def __init__(self, jobs: _Jobs, session: "_Server") -> None:
        self.shared, self.session = jobs, session

    def put(self, item: Any) -> None:
        if item is None:
            self.shared.wake()
        else:
            self.shared.submit(self.session, *item)


def _release_cached_memory() -> None:
    """After each job: the allocator's cached blocks go back to the GPU (a warm engine keeps
    only the model there between jobs)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and torch.backends.mps.is_available():
            mps.empty_cache()
    except Exception as e:  # noqa: BLE001 - never fail a finished job over this
        _log(f"releasing cached GPU memory failed: {e}")


class _Server:
    """One client's session: its frames in, its replies out. ``ends_process``: stdin mode, where
    the client's end is the engine's end; off for a warm engine's connections."""

    def __init__(self, args: Any, inp: io.FileIO, out: io.FileIO, *, jobs: _Jobs | None = None,
                 ends_process: bool = True) -> None:
        self.args = args
        self.inp, self.out = inp, out
        self.max_payload = int(os.environ.get(MAX_PAYLOAD_ENV) or wire.DEFAULT_MAX_PAYLOAD)
        self.shared_jobs = jobs or _Jobs()
        self.jobs = _SessionJobs(self.shared_jobs, self)
        self.ends_process = ends_process
        self.cancels: dict[Any, threading.Event] = {}
        self.lock = threading.Lock()  # guards writes to out and self.cancels
        self.stopping = threading.Event()
        self.exit_code = 0
        self.notices: list[str] = []  # attached to every result (e.g. unverified weights)

    # -------------------------------------------------------------------- sending

    def send(self, header: dict[str, Any], *parts: bytes) -> bool:
        try:
            with self.lock:
                wire.write_frame(self.out, header, *parts)
            return True
        except wire.EncodeError as e:  # a bug in this reply, not a gone client: say so
            _log(f"a {header.get('type')!r} reply could not be sent: {e}")
            if header.get("type") == Msg.ERROR and header.get("code") == Code.INTERNAL:
                return False  # the fallback itself failed: the log has it
            rid = header.get("id")
            return self.send_error(rid if wire.is_valid_id(rid) else None, Code.INTERNAL,
                                   f"The engine could not encode its reply ({e}).",
                                   "This is a bug; the details are in the engine log.")
        except (OSError, ValueError):  # the client is gone (broken pipe) or out was closed
            self.stop(self.exit_code, "the client stopped reading")
            return False

    def send_error(self, rid: Any, code: str, message: str, hint: str = "") -> bool:
        # Messages may quote what a client sent: never let one outgrow a frame.
        return self.send({"type": Msg.ERROR, "id": rid, "code": code,
                          "message": _bounded(message), "hint": _bounded(hint)})

    # -------------------------------------------------------------------- life cycle

    def stop(self, code: int, why: str) -> None:
        with self.lock:
            if self.stopping.is_set():
                return
            self.exit_code = code
            self.stopping.set()
            for ev in self.cancels.values():
                ev.set()
        if not self.ends_process:
            _log(f"client session ended: {why}")
            self._close_connection()
            self.shared_jobs.touch()
            return
        _log(f"stopping: {why}")
        self.jobs.put(None)
        timer = threading.Timer(EXIT_GRACE, self._force_exit)
        timer.daemon = True
        timer.start()

    def _close_connection(self) -> None:
        conn = getattr(self, "conn", None)  # the warm engine's socket (listen.py sets it)
        try:
            if conn is not None:
                conn.shutdown(2)  # SHUT_RDWR: wakes this session's reader thread
            self.inp.close()
            self.out.close()
            if conn is not None:
                conn.close()
        except OSError:
            pass

    def _force_exit(self) -> None:
        _log(f"the running job did not stop within {EXIT_GRACE} s: exiting now")
        try:
            sys.stderr.flush()
        finally:
            os._exit(self.exit_code)

    def hello(self, ready: "Ready | None" = None) -> bool:
        """Send ``hello`` (or the start-up error); loads the engine first unless ``ready``."""
        ready = ready or load_engine(self.args)
        if ready.error is not None:
            self.send_error(None, *ready.error)
            return False
        self.notices = list(ready.notices)
        return self.send(ready.header)

    def serve(self) -> int:
        if not self.hello():
            return 1
        threading.Thread(target=self.read_loop, name="nst-serve-reader", daemon=True).start()
        self.shared_jobs.work(self.stopping)
        return self.exit_code

    def serve_connection(self, ready: "Ready") -> None:
        """A warm engine's session, in its own thread: hello, then the client's frames."""
        if self.hello(ready):
            self.read_loop()
        else:
            self.stop(0, "the hello could not be sent")

    # -------------------------------------------------------------------- input

    def read_loop(self) -> None:
        """Frames until the input ends; nothing a client sends may end this thread silently,
        or the engine would neither answer nor exit."""
        try:
            self._read_frames()
        except BaseException as e:  # noqa: BLE001 - e.g. MemoryError while reading a payload
            _log("reading the client's messages failed:\n" + traceback.format_exc())
            self.stop(EXIT_PROTOCOL, f"the reader failed ({type(e).__name__})")

    def _read_frames(self) -> None:
        while not self.stopping.is_set():
            try:
                frame = wire.read_frame(self.inp, accept=wire.CLIENT_TYPES,
                                        max_payload=self.max_payload)
            except ProtocolError as e:
                _log(f"bad message from the client ({e.code}): {e.message}")
                self.send_error(e.id, e.code, f"The engine received a message it cannot use: "
                                f"{e.message}.", "Install the plug-in and the engine from the "
                                "same Style Transfer version (`python install.py`).")
                if e.fatal:
                    self.stop(EXIT_PROTOCOL, "the input stream is out of step")
                    return
                continue
            except OSError as e:
                self.stop(0, f"reading stdin failed: {e}")
                return
            if frame is None:
                self.stop(0, "end of input (the plug-in exited)")
                return
            try:
                if not self._handle(frame):
                    return
            except Exception as e:  # noqa: BLE001 - answered; the stream is still in step
                _log("handling a message failed:\n" + traceback.format_exc())
                rid = frame.header.get("id")
                self.send_error(rid if wire.is_valid_id(rid) else None, Code.INTERNAL,
                                f"The engine failed on a {frame.type} message "
                                f"({type(e).__name__}).",
                                "This is a bug; the details are in the engine log.")

    def _handle(self, frame: wire.Frame) -> bool:
        """Act on one checked message (``wire.check_request`` made its id hashable);
        False when this session ends."""
        rid = frame.header.get("id")
        if frame.type == Msg.STYLIZE:
            ev = threading.Event()
            with self.lock:
                taken = rid in self.cancels
                if not taken:
                    self.cancels[rid] = ev
            if taken:
                self.send_error(None, Code.BAD_REQUEST, f"stylize: the id {wire.excerpt(rid)} "
                                "belongs to a job that has not finished.",
                                "Give every request its own id.")
            else:
                self.jobs.put((frame, ev))
        elif frame.type == Msg.CANCEL:
            with self.lock:
                targets = list(self.cancels.values()) if rid is None else \
                    [self.cancels[rid]] if rid in self.cancels else []
            for ev in targets:
                ev.set()
        elif frame.type == Msg.SHUTDOWN:
            self.stop(0, "shutdown requested")
            return False
        return True

    # -------------------------------------------------------------------- jobs

    def run_job(self, frame: wire.Frame, cancel: threading.Event) -> None:
        from .errors import Cancelled, EngineError, OutOfMemory

        h = frame.header
        rid = h.get("id")
        started = time.monotonic()
        try:
            if cancel.is_set():
                raise Cancelled("Style transfer cancelled.", "")
            result = self._stylize(h, frame.payload, cancel)
            self.send({"type": Msg.RESULT, "id": rid, "width": result.width,
                       "height": result.height, "notices": self.notices},
                      result.tobytes())
            _log(f"job {rid!r} done in {time.monotonic() - started:.1f} s")
        except EngineError as e:
            _log(f"job {rid!r}: {e.code}: {e.message}")
            self.send_error(rid, e.code, e.message, e.hint)
        except MemoryError:
            _log(f"job {rid!r}: out of memory:\n" + traceback.format_exc())
            self.send_error(rid, OutOfMemory.code, "The engine ran out of memory.",
                            "Use a smaller max-size or a smaller region.")
        except Exception as e:  # noqa: BLE001 - reported, with the traceback in the log
            _log(f"job {rid!r} failed:\n" + traceback.format_exc())
            self.send_error(rid, Code.INTERNAL,
                            f"The engine failed unexpectedly ({type(e).__name__}: {e}).",
                            "This is a bug; the details are in the engine log. "
                            "Please report it with that log.")
        finally:
            with self.lock:
                self.cancels.pop(rid, None)

    def _stylize(self, h: dict[str, Any], payload: bytes, cancel: threading.Event):
        from PIL import Image

        from .presets import resolve
        from .transfer import stylize

        # Straight from the payload's memory (no extra copy: 48 MB for a 12 MP layer).
        images = [Image.frombytes("RGBA", (im["width"], im["height"]), data)
                  for im, data in wire.split_images(h, payload)]
        weights = [im.get("weight") for im in h["images"]]
        params = resolve(h.get("preset"), h.get("overrides") or {})
        device = h.get("device") or "auto"
        if device == "auto":
            device = self.args.device
        progress = _Throttle(self.send, h.get("id"))
        out = stylize(content=images[0], styles=list(zip(images[1:], weights[1:])),
                      params=params, device=device, weights=self.args.weights,
                      progress=progress, cancel=cancel)
        progress.flush()
        if out.mode != "RGBA":
            out = out.convert("RGBA")
        if out.size != images[0].size:
            raise RuntimeError(f"stylize returned {out.size} for content {images[0].size}")
        return out


#: Longest message or hint an error frame carries (they may quote a client's input).
MAX_MESSAGE = 2000


def _bounded(text: str) -> str:
    text = str(text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def run(args: Any) -> int:
    """The ``serve`` command (``args.weights``, ``args.device``; ``args.listen``: warm mode)."""
    if getattr(args, "listen", None):
        from .listen import run_listen
        return run_listen(args)
    inp, out = _claim_stdio()  # first: nothing may print to the protocol channel
    _log(f"starting (python {sys.version.split()[0]}, {sys.executable})")
    code = _Server(args, inp, out).serve()
    _log(f"exiting with status {code}")
    # Skip interpreter finalisation: with torch loaded and the reader thread blocked on stdin it
    # was seen to hang for seconds, and the plug-in waits for this process to be gone. Nothing
    # is left to save: frames and log lines are written unbuffered.
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)
