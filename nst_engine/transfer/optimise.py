"""The optimisers on the pixels: Adam with iterate averaging, and L-BFGS.

The Adam loop never waits for the device: the losses go into a buffer on the device and are
read back (checked for NaN, reported) every ``READBACK_STEPS`` steps or ``READBACK_SECONDS``,
whichever comes first; on the CPU, where reading costs nothing, after every step. CUDA graphs
are not used: whether they pay could not be measured where this was written (no GPU); the
s/iter rows of ``benchmarks/bench_gpu.py`` against the plain loop show how much launch overhead
is left for them to remove.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor

from ..errors import NumericalError
from .adam import Adam
from .objective import Objective
from .run import RunState
from .scaler import LossScaler

#: On a GPU: optimiser steps between two reads of the losses (each read waits for the device
#: to catch up; nothing else in the loop does). A NaN loss stops the run within this many steps.
READBACK_STEPS = {"cpu": 1, "cuda": 25, "mps": 25}
#: ... and at most this many seconds between reads, so progress arrives ~10 times a second.
READBACK_SECONDS = 0.1
LOSS_NAMES = ("total", "content", "style", "tv")
#: L-BFGS with float16 loss scaling: evaluations of one point at ever lower scales before its
#: gradient is taken as it is (16 halvings from 2**16 reach the scale 1).
SCALE_RETRIES = 17


def optimise(run: RunState, objective: Objective, init: Tensor, n_steps: int,
             check_cancel: Callable[[], None]) -> Tensor:
    """``n_steps`` of the preset's optimiser from ``init``; returns the result (detached)."""
    x = init.detach().clone().float().contiguous().requires_grad_(True)
    if run.params.optimizer == "lbfgs":
        return lbfgs(run, x, objective, n_steps, check_cancel)
    return adam(run, x, objective, n_steps, check_cancel)


def _diverged(run: RunState, step: int, value: float) -> NumericalError:
    return NumericalError(
        f"The optimisation diverged (loss became {value}) at pyramid level "
        f"{run.level.index}, step {step}.",
        f"Lower the learning rate (now {run.params.learning_rate}) or the style weight / "
        "strength, or use the adam optimizer.")


class Readback:
    """The losses of the last steps, kept on the device until they are read.

    ``record`` costs no wait; ``read`` (one wait for the device) checks every recorded step
    for a non-finite loss, so a NaN stops the run within ``READBACK_STEPS`` steps.
    """

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.every = READBACK_STEPS.get(run.dev.type, max(READBACK_STEPS.values()))
        self.rows = torch.zeros((self.every, len(LOSS_NAMES)), device=run.dev)
        self.zero = torch.zeros((), device=run.dev)
        self.pending = self.steps = 0
        self.last = time.monotonic()

    def record(self, total: Tensor, parts: dict[str, Tensor]) -> None:
        values = [total, *(parts[k] for k in LOSS_NAMES[1:])]
        with torch.no_grad():  # a loss without layers is the number 0, not a tensor
            torch.stack([v.detach() if isinstance(v, Tensor) else self.zero for v in values],
                        out=self.rows[self.pending])
        self.pending += 1
        self.steps += 1

    def due(self, last: bool) -> bool:
        return (last or self.pending >= self.every
                or time.monotonic() - self.last >= READBACK_SECONDS)

    def read(self) -> dict[str, float]:
        rows = self.rows[: self.pending].tolist()
        first = self.steps - self.pending + 1
        for k, row in enumerate(rows):
            if not all(math.isfinite(v) for v in row):
                raise _diverged(self.run, first + k, row[0])
        self.pending, self.last = 0, time.monotonic()
        return dict(zip(LOSS_NAMES, rows[-1]))


def adam(run: RunState, x: Tensor, objective: Objective, n_steps: int,
         check_cancel: Callable[[], None]) -> Tensor:
    """Adam on the pixels; the result is the running average of the iterates."""
    opt = Adam(x, lr=run.params.learning_rate)  # not torch.optim's: see adam.py
    avg = x.detach().clone()
    keep = 1.0 - run.params.average_decay
    losses = Readback(run)
    scaler = LossScaler(run.dev, run.precision.loss_scale)
    for i in range(n_steps):
        check_cancel()
        opt.zero_grad()
        total, parts = objective(x)
        scaler.backward(total)
        scaler.unscale(x)
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
            avg.lerp_(x, keep)
        losses.record(total, parts)
        if losses.due(i + 1 == n_steps):
            run.tick(i + 1, losses.read())
    return avg


class _BudgetSpent(Exception):
    """Raised inside the closure when the level's function evaluations are used up."""


def lbfgs(run: RunState, x: Tensor, objective: Objective, n_steps: int,
          check_cancel: Callable[[], None]) -> Tensor:
    """L-BFGS with a strong-Wolfe line search; one iteration = one function evaluation.

    One ``step()`` call runs the whole level: torch's L-BFGS loses its way when called with
    ``max_iter=1`` repeatedly together with a line search. The closure checks cancel, reports
    progress and stops at the budget; the best point evaluated is the result (a line-search
    trial may be interrupted). No clamping between steps: it would break the curvature pairs
    (as in jcjohnson's neural-style); the result is clamped once at the end. The line search
    reads every loss back anyway, so each step is checked at once.
    """
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=n_steps, max_eval=2 * n_steps + 25,
                            history_size=20, tolerance_grad=0.0, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")
    count = 0
    best = (math.inf, x.detach().clone())
    losses = Readback(run)  # read after every evaluation: the line search needs the values
    scaler = LossScaler(run.dev, run.precision.loss_scale)

    def closure():
        nonlocal count, best
        check_cancel()
        if count >= n_steps:
            raise _BudgetSpent
        for _ in range(SCALE_RETRIES):
            opt.zero_grad(set_to_none=True)
            total, parts = objective(x)
            scaler.backward(total)
            finite = scaler.unscale(x)
            # The line search reads every value anyway: here an overflowed float16 gradient
            # is evaluated again at the lowered scale rather than passed on as a zero (which
            # L-BFGS would take for convergence).
            if finite is None or bool(finite):
                break
        losses.record(total, parts)
        vals = losses.read()
        if vals["total"] < best[0]:
            best = (vals["total"], x.detach().clone())
        count += 1
        run.tick(count, vals)
        return total

    while count < n_steps:
        before = count
        try:
            opt.step(closure)
        except _BudgetSpent:
            break
        if count - before <= 1:  # converged or no descent direction left
            break
    return best[1].clamp(0, 1)
