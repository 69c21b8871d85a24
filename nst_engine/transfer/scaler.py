"""Loss scaling for float16 convolutions (pre-Ampere NVIDIA cards, ``device.resolve``).

The relative losses give feature gradients far below 1, where float16 has only subnormal
numbers or none: without scaling 7-43 % per layer round to zero (issue 26). The loss is
multiplied by a power of two before the backward pass and the pixels' gradient divided by the
same after it. A power of two changes no digit of the float32 gradient (what Adam sees is what
it would see unscaled, eps included), so nothing else in the optimiser changes.

Everything stays on the device, so the Adam loop still never waits for it: a non-finite
gradient (the scale was too large: float16 overflowed) becomes zero for that step, which then
moves on Adam's momentum alone, and halves the scale; ``GROWTH_INTERVAL`` finite steps in a
row double it again (torch's GradScaler's rule, without its ``.item()`` per step).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The first scale: torch's GradScaler default, 2**16.
INIT_SCALE = 2.0 ** 16
#: Finite steps in a row before the scale doubles (GradScaler: 2000; a level runs ~100-300).
GROWTH_INTERVAL = 100
#: The scale never drops below 1: an overflow at scale 1 is the loss itself, which the
#: read-back reports as a divergence.
MIN_SCALE, MAX_SCALE = 1.0, 2.0 ** 24


class LossScaler:
    """``backward`` and ``unscale`` around one optimiser step; a no-op when not ``enabled``."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            self.scale = torch.full((), INIT_SCALE, device=device)
            self.good = torch.zeros((), device=device)  # finite steps in a row

    def backward(self, total: Tensor) -> None:
        (total * self.scale if self.enabled else total).backward()

    def unscale(self, x: Tensor) -> Tensor | None:
        """Divide ``x.grad`` by the scale, zero it if it is not finite, and adapt the scale.
        Returns the device's finite flag (None when disabled); nothing here waits for it."""
        if not self.enabled:
            return None
        grad = x.grad
        grad.div_(self.scale)
        finite = torch.isfinite(grad).all()
        grad.masked_fill_(~finite, 0.0)
        good = torch.where(finite, self.good + 1, torch.zeros_like(self.good))
        grow = good >= GROWTH_INTERVAL
        scale = torch.where(finite, torch.where(grow, self.scale * 2, self.scale),
                            self.scale * 0.5)
        self.scale = scale.clamp(MIN_SCALE, MAX_SCALE)
        self.good = torch.where(grow, torch.zeros_like(good), good)
        return finite
