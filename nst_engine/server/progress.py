"""Progress messages: the ``progress`` callback of a job, at most ``PROGRESS_PER_SECOND``
messages a second."""

from __future__ import annotations

import math
import time
from typing import Any

from ..bridge.wire import Msg

#: Progress messages per second at most (the first, stage changes and the last always go).
PROGRESS_PER_SECOND = 10


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


class ProgressThrottle:
    """The ``progress`` callback: at most PROGRESS_PER_SECOND messages, never dropping the first,
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
