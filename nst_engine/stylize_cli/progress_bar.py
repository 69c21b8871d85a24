"""The ``stylize`` command's progress bar: one self-overwriting line on a terminal."""

from __future__ import annotations

import time
from typing import Callable, TextIO

from ..progress import Progress


class ProgressBar:
    """Bar, percentage, level, loss, time left; a ``Progress`` callback for ``stylize``."""

    WIDTH = 28

    def __init__(self, stream: TextIO, label: str = "") -> None:
        self.stream, self.last, self.note = stream, 0.0, None
        self.label = f"{label} " if label else ""  # e.g. "frame 2/5"

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.stage == "optimizing" and p.iteration < p.total and now - self.last < 0.1:
            return
        self.last = now
        filled = round(self.WIDTH * p.fraction)
        eta = "" if p.eta is None else f" eta {_clock(p.eta)}"
        loss = f" loss {p.losses['total']:.3g}" if "total" in p.losses else ""
        level = f" level {p.level}/{p.levels}" if p.level else ""
        if p.width:
            level += f" at {p.width}x{p.height}" + (f" in {p.tiles} tiles" if p.tiles else "")
        if p.note and p.note != self.note:  # once, on its own line
            self.note = p.note
            self.stream.write(f"\r{p.note}\x1b[K\n")
        bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}]"
        self.stream.write(f"\r{self.label}{p.stage:<10} {bar} "
                          f"{p.iteration}/{p.total}{level}{loss} {_clock(p.elapsed)}{eta}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


#: Makes the bar of one image or frame from its label ("frame 2/5"); None: no bar (not a
#: terminal, or --quiet).
BarFactory = Callable[[str], "ProgressBar | None"]


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"
