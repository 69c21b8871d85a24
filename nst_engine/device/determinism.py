"""Repeatable runs on CUDA: cuDNN told to use deterministic algorithms for the run.

By default cuDNN may pick convolution algorithms whose backward pass adds in a varying order
(atomics), so the same seed gives slightly different pixels run to run, and with
``benchmark`` on it even picks the algorithm by timing. For the run's length this sets
``cudnn.deterministic`` and clears ``cudnn.benchmark``, then restores what the process had
(the engine runs one job at a time, so nothing else sees the change). The cost on a GPU is
not measured yet (no GPU where this was written): ``benchmarks/bench_gpu.py`` times the
engine with it. The CPU and MPS are left as they are: the CPU repeats a seed bit for bit
already (same machine, torch and thread count); MPS promises nothing either way.

cuDNN is not the only source of atomics: an animation's loop term differentiates a bilinear
sample at every step, and ``grid_sample``'s CUDA backward adds with atomics. That term samples
by ``transfer.warp.BilinearMap`` on CUDA instead (its backward adds into distinct pixels per
pass), so loop mode repeats too. ``torch.use_deterministic_algorithms`` is not set: it is
process-wide (a warm engine's other sessions), needs ``CUBLAS_WORKSPACE_CONFIG`` set before
CUDA starts, and raises on ops with no deterministic kernel rather than choosing one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def repeatable(device: torch.device) -> Iterator[None]:
    """cuDNN deterministic and not benchmarking while the block runs, on CUDA only."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before
