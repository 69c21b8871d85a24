"""One run's plan and bookkeeping: the levels, the steps done, the ETA, the progress reports."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import torch

from ..device.memory import Budget
from ..device.resolve import device_precision
from ..params import StyleParams
from ..progress import Progress
from . import levels


def px_text(hw: tuple[int, int]) -> str:
    """``(h, w)`` as users read a size: ``WxH px``."""
    return f"{hw[1]}x{hw[0]} px"


class RunState:
    """A run's plan and its progress: steps and pixel-steps done, the ETA, a note."""

    def __init__(self, params: StyleParams, dev: torch.device, hw: tuple[int, int],
                 progress: Callable[[Progress], None] | None, start: float) -> None:
        self.params, self.dev, self.progress, self.start = params, dev, progress, start
        self.precision = device_precision(dev)
        self.amp = self.precision.dtype
        self.memory = Budget(dev, self.amp, style_loss=params.style_loss,
                             seamless=params.seamless)
        self.levels = levels.plan(params, hw, dev, self.memory)
        self.level: levels.Level | None = None
        self.note: str | None = None
        self.done = self.px_done = 0          # steps and pixel-steps finished
        self._tile = (0, 0, 0, 0.0)           # steps, pixel-steps before it; its px; its start

    @property
    def total(self) -> int:
        return sum(l.work for l in self.levels)

    def report(self, stage: str, eta: float | None = None,
               losses: dict[str, float] | None = None) -> None:
        if self.progress is None:
            return
        lvl = self.level
        self.progress(Progress(
            stage=stage, level=lvl.index if lvl else 0, levels=len(self.levels),
            iteration=self.done, total=self.total, elapsed=time.monotonic() - self.start,
            eta=eta, losses=losses or {}, width=lvl.hw[1] if lvl else 0,
            height=lvl.hw[0] if lvl else 0, tiles=len(lvl.tiles) if lvl and lvl.tile else 0,
            note=self.note))

    def start_tile(self, px: int) -> None:
        self._tile = (self.done, self.px_done, px, time.monotonic())

    def tick(self, steps: int, losses: dict[str, float]) -> None:
        """``steps`` of the current tile are done; report them with the latest losses."""
        done0, px0, px, started = self._tile
        self.done, self.px_done = done0 + steps, px0 + steps * px
        rate = (time.monotonic() - started) / (steps * px)  # seconds per pixel-step
        left = sum(l.px_work for l in self.levels) - self.px_done
        self.report("optimizing", eta=rate * left, losses=losses)

    def retry(self, level: levels.Level, tile: int, done: tuple[int, int]) -> levels.Level:
        """Replace ``level`` by the same in tiles of ``tile`` px; undo its steps."""
        new = replace(level, tile=tile)
        self.levels[self.levels.index(level)] = self.level = new
        self.done, self.px_done = done
        self.note = (f"Out of memory at {px_text(level.hw)}: retrying that level in tiles of "
                     f"{tile} px.")
        return new
