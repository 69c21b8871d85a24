"""One client's session with the engine: messages in, replies out (``bridge/wire.py``).

A reader thread takes the client's messages: a ``stylize`` is queued as a job on the shared
queue (``jobs.Jobs``), which decides when it runs; ``cancel`` sets the named job's event;
``shutdown`` or the end of the input ends the session (``Session._ended``: the transport says
what that ends). When a job's turn comes, the queue's thread calls this session's ``run_job``,
which does the work: the preset resolved, ``transfer.pipeline.stylize`` (or the next frame of
the session's animation, ``clip``), the result or error sent back.
Framing errors (bad magic, over a limit, truncated, bad JSON) are answered with an error message
and end the session, since the stream is out of step; a well-framed but wrong message (unknown
type, other protocol version, bad fields) is answered and the session goes on.

Bounded whatever a client does: a payload's memory is reserved from the engine's budget
(``jobs.PayloadBudget``) as its bytes arrive, never on the header's word, and kept until its
job is done; a session has at most MAX_CLIENT_JOBS unfinished jobs and the queue at most
``jobs.MAX_QUEUED_JOBS``. Past a bound the request is answered ``busy`` (its payload skipped,
not stored) and the session goes on.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any, BinaryIO

from ..bridge import wire
from ..bridge.wire import Code, Msg, ProtocolError
from .. import presets
from ..errors import Cancelled, EngineError, OutOfMemory
from .clip import Clip, asked_for, check_next
from .jobs import Jobs, PayloadBudget, release_cached_memory
from .progress import ProgressThrottle
from .startup import Ready
from .streams import log

#: Exit status after a framing error on stdin.
EXIT_PROTOCOL = 3
#: Environment variable that lowers the payload limit (bytes), e.g. for tests.
MAX_PAYLOAD_ENV = "NST_MAX_PAYLOAD"
#: Longest message or hint an error reply carries (they may quote a client's input).
MAX_MESSAGE = 2000
#: Unfinished jobs (queued or running) one session may have; a plug-in has one at a time.
MAX_CLIENT_JOBS = 4
_CHUNK = 1 << 20


def bounded(text: str) -> str:
    text = str(text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


class Session:
    """One client's conversation: its messages in, its replies out, its jobs on the shared queue
    (run, when their turn comes, by ``run_job``).

    A transport makes one per client (``stdio.StdioSession``, ``listen.SocketSession``) and
    says what the client's end means (``_ended``): the process's end on stdin, only the
    connection's on a warm engine's socket.
    """

    def __init__(self, args: Any, inp: BinaryIO, out: BinaryIO, jobs: Jobs) -> None:
        self.args = args
        self.inp, self.out = inp, out
        self.max_payload = int(os.environ.get(MAX_PAYLOAD_ENV) or wire.DEFAULT_MAX_PAYLOAD)
        self.jobs = jobs
        self.budget: PayloadBudget = jobs.budget
        self.cancels: dict[Any, threading.Event] = {}
        self.lock = threading.Lock()  # guards writes to out and self.cancels
        self.stopping = threading.Event()
        self.exit_code = 0
        self.notices: list[str] = []  # attached to every result (e.g. unverified weights)
        #: The animation in progress (``clip.py``); set and dropped under ``lock``.
        self.clip: Clip | None = None

    # -------------------------------------------------------------------- sending

    def send(self, header: dict[str, Any], *parts: bytes) -> bool:
        try:
            with self.lock:
                wire.write_message(self.out, header, *parts)
            return True
        except wire.EncodeError as e:  # a bug in this reply, not a gone client: say so
            log(f"a {header.get('type')!r} reply could not be sent: {e}")
            if header.get("type") == Msg.ERROR and header.get("code") == Code.INTERNAL:
                return False  # the fallback itself failed: the log has it
            rid = header.get("id")
            return self.send_error(rid if wire.is_valid_id(rid) else None, Code.INTERNAL,
                                   f"The engine could not encode its reply ({e}).",
                                   "This is a bug; the details are in the engine log.")
        except (OSError, ValueError) as e:  # the client is gone (broken pipe), out was closed,
            # or (socket) the client did not read within the write deadline
            why = f"the client stopped reading ({e})" if isinstance(e, TimeoutError) else \
                "the client stopped reading"
            self.stop(self.exit_code, why)
            return False

    def send_error(self, rid: Any, code: str, message: str, hint: str = "") -> bool:
        # Messages may quote what a client sent: never let one outgrow what the wire carries.
        return self.send({"type": Msg.ERROR, "id": rid, "code": code,
                          "message": bounded(message), "hint": bounded(hint)})

    # -------------------------------------------------------------------- life cycle

    def stop(self, code: int, why: str) -> None:
        with self.lock:
            if self.stopping.is_set():
                return
            self.exit_code = code
            self.stopping.set()
            for ev in self.cancels.values():
                ev.set()
        # An ended session's clip can never continue: its kept frames (on the GPU too) go now,
        # not when this object is collected. A frame still running holds the state until it
        # stops (cancelled above); no clip is kept after this (``_start_clip``).
        if self._drop_clip():
            release_cached_memory()
        self._ended(why)

    def _ended(self, why: str) -> None:
        """The client is gone or asked to stop: what that ends is the transport's call."""
        raise NotImplementedError

    def hello(self, ready: Ready) -> bool:
        """Send ``hello`` (or the start-up error); False when the session cannot go on."""
        if ready.error is not None:
            self.send_error(None, *ready.error)
            return False
        self.notices = list(ready.notices)
        return self.send(ready.header)

    # -------------------------------------------------------------------- input

    def read_loop(self) -> None:
        """Messages until the input ends; nothing a client sends may end this thread silently,
        or the engine would neither answer nor exit."""
        try:
            self._read_messages()
        except BaseException as e:  # noqa: BLE001 - e.g. MemoryError while reading a payload
            log("reading the client's messages failed:\n" + traceback.format_exc())
            self.stop(EXIT_PROTOCOL, f"the reader failed ({type(e).__name__})")

    def _read_messages(self) -> None:
        while not self.stopping.is_set():
            try:
                msg = self._read_message()
            except ProtocolError as e:
                log(f"bad message from the client ({e.code}): {e.message}")
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
            if msg is None:
                self.stop(0, "end of input (the plug-in exited)")
                return
            try:
                if not self._handle(msg):
                    return
            except Exception as e:  # noqa: BLE001 - answered; the stream is still in step
                log("handling a message failed:\n" + traceback.format_exc())
                rid = msg.header.get("id")
                self.send_error(rid if wire.is_valid_id(rid) else None, Code.INTERNAL,
                                f"The engine failed on a {msg.type} message "
                                f"({type(e).__name__}).",
                                "This is a bug; the details are in the engine log.")

    def _read_message(self) -> wire.Message | None:
        """``wire.read_message`` for the engine's side: the payload is read into memory reserved
        from the budget chunk by chunk as it arrives; over the budget it is skipped and the
        request answered ``busy`` (non-fatal ProtocolError)."""
        prefix = self._read_exact(wire.PREFIX.size, at_start=True)
        if prefix is None:
            return None
        hlen, plen = wire.parse_prefix(prefix, max_payload=self.max_payload)
        header = wire.parse_header(self._read_exact(hlen))
        try:
            wire.check_message(header, plen, wire.CLIENT_TYPES)
        except ProtocolError:
            self._skip(plen)
            raise
        if not plen:
            return wire.Message(header, b"")
        payload = self._read_payload(plen)
        if payload is None:
            rid = header.get("id")
            raise ProtocolError(
                Code.BUSY, f"{header['type']}: the engine already holds as much image data as "
                f"it may ({self.budget.total >> 20} MiB in all); this request's {plen} bytes "
                "were not kept", fatal=False, id=rid if wire.is_valid_id(rid) else None)
        return wire.Message(header, payload)

    def _read_exact(self, n: int, *, at_start: bool = False) -> bytes | None:
        buf = bytearray(n)  # n is a prefix or a header: bounded by wire.MAX_HEADER
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.inp.readinto(view[got:])
            if not k:
                if at_start and got == 0:
                    return None
                raise ProtocolError(Code.BAD_FRAME, f"truncated message: end of stream "
                                    f"after {got} of {n} bytes", fatal=True)
            got += k
        return bytes(buf)

    def _read_payload(self, n: int) -> bytearray | None:
        """``n`` bytes, each chunk reserved before it is read; None when the budget ran out
        (what came is released, the rest skipped). The caller releases ``n`` when done."""
        buf = bytearray()
        scratch = memoryview(bytearray(min(n, _CHUNK)))
        while len(buf) < n:
            want = min(n - len(buf), _CHUNK)
            if not self.budget.reserve(want):
                got = len(buf)
                self.budget.release(got)
                del buf
                log(f"payload of {n} bytes refused: the budget of {self.budget.total} bytes "
                    "is spent")
                self._skip(n - got)
                return None
            try:
                k = self.inp.readinto(scratch[:want])
            except BaseException:
                self.budget.release(len(buf) + want)
                raise
            if not k:
                self.budget.release(len(buf) + want)
                raise ProtocolError(Code.BAD_FRAME, f"truncated message: end of stream "
                                    f"after {len(buf)} of {n} payload bytes", fatal=True)
            buf += scratch[:k]
            self.budget.release(want - k)
        return buf

    def _skip(self, n: int) -> None:
        scratch = memoryview(bytearray(min(n, _CHUNK)))
        while n > 0:
            k = self.inp.readinto(scratch[:min(n, _CHUNK)])
            if not k:
                raise ProtocolError(Code.BAD_FRAME, "truncated message: end of stream in "
                                    "a payload", fatal=True)
            n -= k

    def _handle(self, msg: wire.Message) -> bool:
        """Act on one checked message (``wire.check_request`` made its id hashable);
        False when this session ends."""
        rid = msg.header.get("id")
        if msg.type == Msg.STYLIZE:
            ev = threading.Event()
            with self.lock:
                taken = rid in self.cancels
                full = len(self.cancels) >= MAX_CLIENT_JOBS
                if not (taken or full):
                    self.cancels[rid] = ev
            if taken:
                self.budget.release(len(msg.payload))
                self.send_error(None, Code.BAD_REQUEST, f"stylize: the id {wire.excerpt(rid)} "
                                "belongs to a job that has not finished.",
                                "Give every request its own id.")
            elif full:
                self.budget.release(len(msg.payload))
                self.send_error(rid, Code.BUSY, f"stylize: this client already has "
                                f"{MAX_CLIENT_JOBS} unfinished jobs.",
                                "Wait for a job's result before sending more.")
            elif not self.jobs.submit(self, msg, ev):
                with self.lock:
                    self.cancels.pop(rid, None)
                self.budget.release(len(msg.payload))
                self.send_error(rid, Code.BUSY, "The engine's queue is full (other clients' "
                                "jobs are waiting).", "Try again when a job has finished.")
        elif msg.type == Msg.CANCEL:
            with self.lock:
                targets = list(self.cancels.values()) if rid is None else \
                    [self.cancels[rid]] if rid in self.cancels else []
            for ev in targets:
                ev.set()
        elif msg.type == Msg.SHUTDOWN:
            self.stop(0, "shutdown requested")
            return False
        return True

    # -------------------------------------------------------------------- jobs

    def run_job(self, request: wire.Message, cancel: threading.Event) -> None:
        """Do one ``stylize`` and send its result or error; called on the queue's thread
        (``jobs.Jobs.work``) when the job's turn comes (at once, without running it, when it was
        cancelled while it waited)."""
        h = request.header
        rid = h.get("id")
        started = time.monotonic()
        try:
            if cancel.is_set():
                raise Cancelled("Style transfer cancelled.", "")
            result = self._stylize(h, request.payload, cancel)
            self.send({"type": Msg.RESULT, "id": rid, "width": result.width,
                       "height": result.height, "notices": self.notices},
                      result.tobytes())
            log(f"job {rid!r} done in {time.monotonic() - started:.1f} s")
        except EngineError as e:
            log(f"job {rid!r}: {e.code}: {e.message}")
            self.send_error(rid, e.code, e.message, e.hint)
        except MemoryError:
            log(f"job {rid!r}: out of memory:\n" + traceback.format_exc())
            self.send_error(rid, OutOfMemory.code, "The engine ran out of memory.",
                            "Use a smaller max-size or a smaller region.")
        except Exception as e:  # noqa: BLE001 - reported, with the traceback in the log
            log(f"job {rid!r} failed:\n" + traceback.format_exc())
            self.send_error(rid, Code.INTERNAL,
                            f"The engine failed unexpectedly ({type(e).__name__}: {e}).",
                            "This is a bug; the details are in the engine log. "
                            "Please report it with that log.")
        finally:
            with self.lock:
                self.cancels.pop(rid, None)
            self.budget.release(len(request.payload))

    def _stylize(self, h: dict[str, Any], payload: bytes, cancel: threading.Event):
        from ..transfer.pipeline import stylize  # the first job pays for this, not the hello

        progress = ProgressThrottle(self.send, h.get("id"))
        if h.get("animation") is not None:
            out = self._animation_frame(h, payload, progress, cancel)
        else:
            images, weights = self._images(h, payload)
            out = stylize(content=images[0], styles=list(zip(images[1:], weights[1:])),
                          params=presets.resolve(h.get("preset"), h.get("overrides") or {}),
                          device=self._device(h), weights=self.args.weights,
                          progress=progress, cancel=cancel)
        progress.flush()
        # The result's size is checked once, by the client (``EngineClient.stylize``).
        return out if out.mode == "RGBA" else out.convert("RGBA")

    @staticmethod
    def _images(h: dict[str, Any], payload: bytes, first: int | None = None):
        """The request's images (the first ``first`` of them) as PIL images, and their
        weights (None for the content)."""
        from PIL import Image

        # Straight from the payload's memory (no extra copy: 48 MB for a 12 MP layer).
        parts = wire.split_images(h, payload)[:first]
        return ([Image.frombytes("RGBA", (im["width"], im["height"]), data)
                 for im, data in parts], [im.get("weight") for im, _ in parts])

    def _device(self, h: dict[str, Any]) -> str:
        device = h.get("device") or "auto"
        return self.args.device if device == "auto" else device

    # -------------------------------------------------------------------- animations

    def _animation_frame(self, h: dict[str, Any], payload: bytes, progress, cancel):
        """One frame of the session's animation (the rules: ``clip.py``). Frame 1 starts the
        clip from its request's styles and settings, which hold for every frame; a later frame
        only brings its content, after ``clip.check_next``. The clip is dropped, its kept frames
        with it, after its last frame and when a frame fails or is cancelled."""
        anim = h["animation"]
        n = anim["frame"]
        if n == 1:
            images, weights = self._images(h, payload)
            clip = self._start_clip(h, payload, images, weights)
            content = images[0]
        else:
            with self.lock:
                clip = self.clip
            check_next(clip, h, payload)  # refused: nothing changes
            (content,), _ = self._images(h, payload, first=1)  # the styles are frame 1's
        try:
            out = clip.animation.frame(content, progress=progress, cancel=cancel)
        except BaseException:
            self._drop_clip(clip)  # the state may hold part of this frame: it cannot go on
            raise
        clip.done = n
        if n == clip.frames:
            self._drop_clip(clip)
        return out

    def _start_clip(self, h: dict[str, Any], payload: bytes, images, weights) -> Clip:
        from ..transfer.animation import Animation

        self._drop_clip()  # the unfinished clip's frames go before the new one keeps any
        anim = h["animation"]
        params = presets.resolve(h.get("preset"), h.get("overrides") or {})
        clip = Clip(id=anim["clip"], frames=anim["frames"], size=images[0].size,
                    asked=asked_for(h, payload),
                    animation=Animation(styles=list(zip(images[1:], weights[1:])),
                                        params=params, frames=anim["frames"],
                                        loop=bool(anim.get("loop")), device=self._device(h),
                                        weights=self.args.weights))
        with self.lock:
            if not self.stopping.is_set():  # an ended session keeps no clip
                self.clip = clip
        return clip

    def _drop_clip(self, clip: Clip | None = None) -> bool:
        """Forget the session's clip (only if it is ``clip``, when given), so its kept frames
        are freed as soon as no running frame holds them; True when there was one. Returns no
        reference: a caller that held one would keep the frames alive."""
        with self.lock:
            if self.clip is None or (clip is not None and self.clip is not clip):
                return False
            self.clip = None
        return True
