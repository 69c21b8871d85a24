"""The progress report handed to ``stylize``'s callback (and sent to the plug-in). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    stage: str  # "loading", "preparing", "optimizing" or "done"
    level: int  # pyramid level, 1-based; 0 before optimisation starts
    levels: int  # number of pyramid levels
    iteration: int  # optimiser steps done so far, over all levels
    total: int  # optimiser steps over all levels
    elapsed: float  # seconds since stylize() started
    eta: float | None = None  # seconds left, once it can be estimated
    losses: dict[str, float] = field(default_factory=dict)  # "content", "style", "tv", "total"
    width: int = 0  # the size the current level works at, px (0 before optimisation starts)
    height: int = 0
    tiles: int = 0  # tiles the current level runs in (0 = the whole image at once)
    note: str | None = None  # an event the user should see, e.g. an out-of-memory retry

    @property
    def fraction(self) -> float:
        return self.iteration / self.total if self.total else 0.0
