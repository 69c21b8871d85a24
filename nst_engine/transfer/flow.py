"""Optical flow between two frames: OpenCV's DIS (Kroeger et al. 2016), on the CPU.

The only module that imports OpenCV (``opencv-python-headless``, the ``animation`` extra), and
only when a flow is asked for: an engine without it does stills and says what to install
(``require_opencv``). DIS needs no weights and takes a few ms at the sizes the optimisation runs
at (``benchmarks/bench_animation.py``).

Convention (Ruder et al.'s): ``flow(a, b)`` is the displacement from each pixel of ``a`` to
where it is in ``b``: ``a[y, x] ~ b[y + f[y, x, 1], x + f[y, x, 0]]``, as ``[H, W, 2]`` float32
``(dx, dy)`` in px. So ``flow(current, previous)`` warps the previous frame onto the current one.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from ..errors import OPENCV_HINT, EngineError, FlowUnavailable


def require_opencv():
    """The ``cv2`` module, or ``FlowUnavailable`` saying exactly what to install."""
    try:
        import cv2  # noqa: PLC0415 - optional: only animations need it
    except ImportError as e:
        raise FlowUnavailable(f"OpenCV is not installed in the engine's Python ({e}).",
                              OPENCV_HINT) from None
    if not hasattr(cv2, "DISOpticalFlow_create"):
        raise FlowUnavailable(f"This OpenCV ({getattr(cv2, '__version__', '?')}) has no DIS "
                              "optical flow.", OPENCV_HINT)
    return cv2


def grey(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 or float in [0, 1] -> ``[H, W]`` uint8 luma, what DIS reads."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(
        (a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114 + 0.5).astype(np.uint8))


class Flow:
    """DIS with one set of settings; ``__call__(a, b)`` on grey uint8 frames of one size;
    ``many`` computes several pairs at once, in threads (OpenCV releases the GIL)."""

    def __init__(self, preset: str = "medium") -> None:
        cv2 = require_opencv()
        presets = {"fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
                   "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST}
        self._make = lambda: cv2.DISOpticalFlow_create(presets[preset])
        # Variational refinement on: sub-pixel accuracy away from motion boundaries.
        # One DIS object per thread: an object keeps its buffers between calls, so two threads
        # must not share one.
        self._local = threading.local()

    def many(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """``[self(a, b) for a, b in pairs]``, the pairs spread over up to one thread per core
        (an animation frame needs 6-8; each one is the same as computed alone)."""
        workers = min(len(pairs), os.cpu_count() or 1)
        if workers <= 1:
            return [self(a, b) for a, b in pairs]
        with ThreadPoolExecutor(workers, thread_name_prefix="nst-flow") as pool:
            return list(pool.map(lambda p: self(*p), pairs))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(f"flow needs two grey frames of one size, got {a.shape}, {b.shape}")
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = self._local.dis = self._make()
        f = dis.calc(a, b, None)
        if f is None or f.shape != (*a.shape, 2) or not np.isfinite(f).all():
            raise EngineError("The optical flow between two frames could not be computed.",
                              "Check that the frames are images of one size; report it with "
                              "the engine log if it persists.")
        return f.astype(np.float32, copy=False)
