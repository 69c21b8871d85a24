"""The one queue every session's jobs go through: *when* each job runs (one at a time, in arrival
order, on the thread that calls ``Jobs.work``); *what* a job does is its session's
(``Session.run_job``: the preset resolved, ``transfer.pipeline.stylize`` called, the reply
sent). Also the payload memory budget all sessions reserve from, and handing the GPU's cached
memory back after each job: after a still, and after an animation frame whose clip ended,
failed or was replaced; not between the frames of a clip that goes on (each frame would
allocate its working set again, issue 31), until the queue has been idle for
``CACHE_IDLE_SECONDS`` (a clip its client stopped sending)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Any, Protocol

from ..bridge import wire
from ..bridge.wire import Msg
from .streams import log

#: The progress stage of a job queued behind another client's (the plug-in shows it in words).
WAITING_STAGE = "waiting"
#: Jobs the queue holds (waiting, not running) before a new one is answered ``busy``.
MAX_QUEUED_JOBS = 16
#: Environment variable: bytes of request payloads (images) the engine holds at once, in all
#: sessions together: being read, queued or running. Default DEFAULT_PAYLOAD_BUDGET.
PAYLOAD_BUDGET_ENV = "NST_PAYLOAD_BUDGET"
DEFAULT_PAYLOAD_BUDGET = 2 << 30
#: Seconds without a job after which the cache kept for a clip in progress is handed back
#: (the plug-in sends the next frame as soon as one returns: well under this).
CACHE_IDLE_SECONDS = 10.0


class PayloadBudget:
    """Bytes of payload the engine may hold: reserved as they arrive, released when the job
    that holds them is done (or the request refused)."""

    def __init__(self, total: int | None = None) -> None:
        if total is None:
            total = int(os.environ.get(PAYLOAD_BUDGET_ENV) or DEFAULT_PAYLOAD_BUDGET)
        self.total = total
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.total:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class Client(Protocol):
    """Whose job it is (a ``session.Session``): where its replies go, and ``run_job``, which does
    the work of one of its requests."""

    def send(self, header: dict[str, Any], *parts: bytes) -> bool: ...

    def run_job(self, request: wire.Message, cancel: threading.Event) -> None: ...


class Jobs:
    """The one queue every session's jobs go through: one job at a time, in arrival order;
    ``work`` hands each to its session's ``run_job``.

    A job queued behind another gets a ``waiting`` progress message; one cancelled while it waits
    is answered at once (``cancelled``) instead of when its turn comes."""

    def __init__(self, budget: PayloadBudget | None = None) -> None:
        self._cond = threading.Condition()
        self._queue: deque = deque()  # (session, request, cancel event)
        self._running: "Client | None" = None  # whose job runs now
        self.last_active = time.monotonic()
        self.budget = budget or PayloadBudget()
        #: Seconds without activity after which ``work`` returns (None: never); may change
        #: while it runs (a replaced warm engine finishing its jobs).
        self.idle_exit: float | None = None
        #: The device's cache was kept after the last job (a frame of a clip that goes on).
        self.cache_kept = False

    def busy(self) -> bool:
        """A job runs or waits."""
        with self._cond:
            return self._running is not None or bool(self._queue)

    def submit(self, session: Client, request: wire.Message, cancel: threading.Event) -> bool:
        """Queue a job; False (not queued) when MAX_QUEUED_JOBS wait already."""
        with self._cond:
            if len(self._queue) >= MAX_QUEUED_JOBS:
                return False
            # Only another client's job makes this one wait (its own previous job may still be
            # finishing when a quick client sends the next).
            behind = (self._running not in (None, session)
                      or any(other is not session for other, _, _ in self._queue))
            self._queue.append((session, request, cancel))
            self._cond.notify_all()
        if behind:
            log(f"job {request.header.get('id')!r} waits for another client's job")
            session.send({"type": Msg.PROGRESS, "id": request.header.get("id"),
                          "stage": WAITING_STAGE, "level": 0, "levels": 0, "iteration": 0,
                          "total": 0, "elapsed": 0.0, "eta": None})
        return True

    def touch(self) -> None:
        """Something happened (a client came or went): the idle time starts again."""
        with self._cond:
            self.last_active = time.monotonic()
            self._cond.notify_all()

    def work(self, stopping: threading.Event, idle_exit: float | None = None) -> None:
        """Hand jobs to their sessions' ``run_job``, one at a time on this thread, until
        ``stopping`` is set or, with ``idle_exit``, nothing happened for that many seconds
        (``self.idle_exit`` when set wins)."""
        if idle_exit is not None and self.idle_exit is None:
            self.idle_exit = idle_exit
        threading.Thread(target=self._answer_cancelled, args=(stopping,), daemon=True,
                         name="nst-serve-cancelled").start()
        while not stopping.is_set():
            with self._cond:
                if not self._queue:
                    idle = time.monotonic() - self.last_active
                    if self.cache_kept and idle >= CACHE_IDLE_SECONDS:
                        self.cache_kept = False  # the clip's client went quiet
                        release_cached_memory()
                    idle_exit = self.idle_exit
                    if idle_exit is not None and idle >= idle_exit:
                        if self.cache_kept:
                            release_cached_memory()
                        return
                    self._cond.wait(0.25)
                    continue
                session, request, cancel = self._queue.popleft()
                self._running = session
            try:
                session.run_job(request, cancel)
            finally:
                self.cache_kept = clip_goes_on(session, request)
                if not self.cache_kept:
                    release_cached_memory()
                with self._cond:
                    self._running = None
                    self.last_active = time.monotonic()

    def _answer_cancelled(self, stopping: threading.Event) -> None:
        while not stopping.wait(0.1):
            with self._cond:
                gone = [item for item in self._queue if item[2].is_set()]
                for item in gone:
                    self._queue.remove(item)
            for session, request, cancel in gone:
                session.run_job(request, cancel)  # answers ``cancelled`` without running

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


def clip_goes_on(session: Client, request: wire.Message) -> bool:
    """Whether ``request`` was a frame of its session's animation and the clip still goes on
    (``Session.clip``: dropped when the clip ends, fails or its session ends), so the next
    frame reuses the cached working set."""
    return bool(request.header.get("animation")) and getattr(session, "clip", None) is not None


def release_cached_memory() -> None:
    """After each job, and when a session drops an animation's kept frames: the allocator's
    cached blocks go back to the GPU (a warm engine keeps only the model there between jobs).
    Torch is not imported for this: without it nothing was cached."""
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
        log(f"releasing cached GPU memory failed: {e}")
