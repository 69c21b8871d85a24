"""Adam for the one tensor the engine optimises: the pixels.

Not ``torch.optim.Adam``: every ``torch.optim`` optimizer imports ``torch._dynamo`` the first
time a parameter group is added (its methods are wrapped to keep ``torch.compile`` out), and
that import takes 1-2 s on a 2-core CPU and several seconds on a GPU machine — paid by every
engine start, in the user's wait for the first result (benchmarks/README.md, "Engine start").
The update is ``torch.optim.Adam``'s single-tensor one (no weight decay, no AMSGrad), the same
operations in the same order, so the results match it bit for bit on the CPU
(``tests/test_adam.py``); on CUDA torch would fuse them into one kernel, here they are six small
ones on a ``[1, 3, H, W]`` tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Adam:
    def __init__(self, param: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.eps = param, float(lr), float(eps)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.steps = 0

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        step_size = self.lr / (1 - self.beta1 ** self.steps)
        bias_correction2_sqrt = (1 - self.beta2 ** self.steps) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)
