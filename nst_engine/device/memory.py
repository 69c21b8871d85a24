"""The memory model: what one pyramid level needs per pixel, and what the device can give.

A level's peak is about ``bytes_per_pixel * pixels`` on top of what was allocated before it
(the model, the images): VGG19's activations up to relu5_1 kept for the backward pass, their
gradients, the loss features in float32, Adam's two moments and the running average. The
figures below were measured, not derived: ``benchmarks/bench_tiles.py --calibrate`` runs one
level at several sizes in fresh processes and fits the growth of the peak resident memory per
pixel. On CUDA the engine also measures each level it runs (``max_memory_allocated``) and
uses the larger of that and the table from then on, in this process.

The budget is what a level may use: on CUDA a share of the free device memory
(``torch.cuda.mem_get_info`` plus what torch's cache holds unused), on MPS a share of the
recommended working set, on the CPU a share of the available RAM; ``NST_MEMORY_BUDGET_MB``
sets it outright (tests, shared machines).
"""

from __future__ import annotations

import math
import os
import threading

import torch

#: Environment variable: the memory budget of one level in MiB, on any device.
BUDGET_ENV = "NST_MEMORY_BUDGET_MB"
#: Share of the free memory a level may plan to use: the rest is for fragmentation, other
#: programs and the estimate's error.
BUDGET_SHARE = {"cuda": 0.85, "mps": 0.6, "cpu": 0.5}
#: Bytes per pixel of one optimisation step at a level, by style loss and convolution precision
#: (key: ``str(dtype)`` of the autocast dtype, "float32" without autocast). Measured on the CPU
#: (2-core Xeon, torch 2.14, 256-1024 px, with the heap kept for reuse during the run, see
#: ``heap``; ``benchmarks/bench_tiles.py --calibrate``, benchmarks/README.md, "Memory model"),
#: rounded up. Gram: float32 2450-2580, bfloat16 1900-1930 (a later session: 2894 and 1926).
#: The other losses keep more per pixel: mean/covariance a centred float32 copy of each
#: layer's features (3573/3046, up to 3758 between neighbours), sliced Wasserstein the
#: projections onto as many directions as channels, their sort (values and int64 indices)
#: and the style's resampled quantiles (5150/4863). float16 (CUDA only) uses bfloat16's. The
#: CUDA figures are the same graph; the engine measures them per level as it runs.
BYTES_PER_PIXEL = {
    "gram": {"float32": 2600.0, "torch.bfloat16": 2000.0, "torch.float16": 2000.0},
    "mean_cov": {"float32": 3600.0, "torch.bfloat16": 3800.0, "torch.float16": 3800.0},
    "sliced_wasserstein": {"float32": 5200.0, "torch.bfloat16": 4900.0,
                           "torch.float16": 4900.0},
}
#: Seamless levels (``seamless``: every convolution's input padded by ``model.wrap``, the
#: padded copies kept for the backward pass) need this many times the table's figure, by
#: precision. Measured like the table (``benchmarks/bench_seamless.py --calibrate``, the
#: method of ``bench_tiles.py --calibrate``; benchmarks/README.md, "Memory model"): seamless
#: levels grew by 3272 and 3364 B/px (float32, 256->512->768 px), 2032 and 2468 (bfloat16),
#: against the table's 2600 and 2000, so x1.3 and x1.25. float16 takes bfloat16's, as the
#: table does. Without it a seamless level planned on the plain figure holds more than it
#: may (saved-for-backward alone is +24 % at 256 px float32, issue 31).
SEAMLESS_FACTOR = {"float32": 1.3, "torch.bfloat16": 1.25, "torch.float16": 1.25}
#: What a level needs besides its pixels: the model, the style targets, oneDNN's bf16 weight
#: copies (measured: 80-250 MB at 256 px).
FIXED_BYTES = 256 << 20
#: A forward pass without gradients (the style image's statistics) needs this share of it.
NO_GRAD_SHARE = 0.35
#: A tiled level's canvases on the device: the canvas, its starting image and the content,
#: 3 float32 channels each, per pixel.
CANVAS_BYTES = 3 * 3 * 4
#: ... kept on the device while they take at most this share of the budget (the tiles were
#: planned on all of it; the blend's temporaries are a tile's few bands).
CANVAS_SHARE = 0.15
#: The final result at the content's size on the device: the resized image, the content and
#: the recombination's temporaries for preserve-colors (float32, 3 channels each), 8-bit out.
OUTPUT_BYTES = 6 * 3 * 4 + 3
#: The smallest budget a measurement gives (a nearly full device still gets minimal tiles).
MIN_BUDGET = FIXED_BYTES + (64 << 20)

#: Levels smaller than this (pixels) are not used to correct the table.
OBSERVE_MIN_PIXELS = 1 << 20
#: After an out-of-memory error at P pixels (a whole level or a tile), nothing of more than
#: this share of P is planned again on that device, precision and style loss in this process.
OOM_SHARE = 0.5

#: What this process learnt, per (device, precision, style loss, seamless): the largest bytes
#: per pixel measured, and the fewest pixels that ran out of memory. Kept for the process's
#: life, so a warm engine's later jobs plan with it (``forget`` is for tests). Seamless apart:
#: its levels need more per pixel, and one seamless job must not make later plain jobs plan
#: smaller levels (a plain figure still bounds a seamless one: ``bytes_per_pixel``).
_Key = tuple[str, str, str, bool]
_observed: dict[_Key, float] = {}
_failed: dict[_Key, int] = {}
_observed_lock = threading.Lock()


def _precision(amp: torch.dtype | None) -> str:
    return "float32" if amp is None else str(amp)


def _key(device: torch.device, amp: torch.dtype | None, style_loss: str,
         seamless: bool = False) -> _Key:
    return str(device), _precision(amp), style_loss, bool(seamless)


def _seamless_factor(precision: str) -> float:
    return SEAMLESS_FACTOR.get(precision, SEAMLESS_FACTOR["float32"])


def bytes_per_pixel(device: torch.device, amp: torch.dtype | None,
                    style_loss: str = "gram", seamless: bool = False) -> float:
    """The table's figure (``SEAMLESS_FACTOR`` times it for a seamless level), or the larger
    figure measured in this process on this device for such levels. A seamless level also
    takes the plain levels' measured figure times the factor: the wrap only adds."""
    key = _key(device, amp, style_loss, seamless)
    by_precision = BYTES_PER_PIXEL.get(style_loss, BYTES_PER_PIXEL["gram"])
    table = by_precision.get(key[1], by_precision["float32"])
    factor = _seamless_factor(key[1]) if seamless else 1.0
    with _observed_lock:
        plain = _observed.get(_key(device, amp, style_loss), 0.0)
        return max(table * factor, plain * factor, _observed.get(key, 0.0))


def observe(device: torch.device, amp: torch.dtype | None, pixels: int, peak: int,
            style_loss: str = "gram", seamless: bool = False) -> None:
    """Record a level's measured peak (bytes above what was allocated before it)."""
    if pixels < OBSERVE_MIN_PIXELS or peak <= 0:
        return  # on small levels the fixed part would pass for a per-pixel cost
    key = _key(device, amp, style_loss, seamless)
    with _observed_lock:
        _observed[key] = max(_observed.get(key, 0.0), peak / pixels)


def out_of_memory(device: torch.device, amp: torch.dtype | None, pixels: int,
                  style_loss: str = "gram", seamless: bool = False) -> None:
    """Record that ``pixels`` at once (a level or one tile) ran out of memory: from now on no
    plan in this process holds more than ``OOM_SHARE`` of it. Without this, every later job
    of a warm engine would plan the same size from the same table, fail, and retry in tiles."""
    if pixels <= 0:
        return
    key = _key(device, amp, style_loss, seamless)
    with _observed_lock:
        _failed[key] = min(_failed.get(key, pixels), pixels)


def pixel_ceiling(device: torch.device, amp: torch.dtype | None,
                  style_loss: str = "gram", seamless: bool = False) -> float:
    """The most pixels at once a plan may hold after the out-of-memory errors seen here (a
    seamless plan also below the plain levels' failures: it needs more than they did)."""
    keys = [_key(device, amp, style_loss, seamless)] + (
        [_key(device, amp, style_loss)] if seamless else [])
    with _observed_lock:
        failed = [_failed[k] for k in keys if k in _failed]
    return min(failed) * OOM_SHARE if failed else math.inf


def forget() -> None:
    """Forget what this process measured and every out-of-memory error (tests)."""
    with _observed_lock:
        _observed.clear()
        _failed.clear()


def _cpu_available() -> int:
    """Available RAM in bytes (Linux: MemAvailable; elsewhere free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4 << 30  # unknown: assume a small machine


def _device_free(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Blocks torch's caching allocator holds but does not use are free to us too.
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        recommended = getattr(mps, "recommended_max_memory", None)
        allocated = getattr(mps, "driver_allocated_memory", None)
        if recommended is not None and allocated is not None:
            return max(0, recommended() - allocated())
    return _cpu_available()


def budget(device: torch.device) -> int:
    """Bytes one level may use on ``device`` (``NST_MEMORY_BUDGET_MB`` overrides)."""
    forced = os.environ.get(BUDGET_ENV, "").strip()
    if forced:
        try:
            return max(1, int(float(forced) * (1 << 20)))
        except ValueError:
            pass  # a typo must not stop a run: fall back to the measurement
    share = BUDGET_SHARE.get(device.type, 0.5)
    return max(MIN_BUDGET, int(_device_free(device) * share))


class Budget:
    """The memory a run may use per level, and what fits in it.

    ``seamless``: whole levels wrap (``SEAMLESS_FACTOR`` more per pixel); tiles never do (a
    seamless level's tiles run the zero-padded network, ``pipeline._run_level``), so the tile
    sides are the plain figure's."""

    def __init__(self, device: torch.device, amp: torch.dtype | None,
                 total: int | None = None, *, style_loss: str = "gram",
                 seamless: bool = False) -> None:
        self.device, self.amp, self.style_loss = device, amp, style_loss
        self.seamless = seamless
        self.total = budget(device) if total is None else total
        self.pixels = max(0, self.total - FIXED_BYTES)  # what the pixels may use

    @property
    def per_pixel(self) -> float:
        return bytes_per_pixel(self.device, self.amp, self.style_loss, self.seamless)

    def _max_pixels(self, seamless: bool) -> float:
        return min(self.pixels / bytes_per_pixel(self.device, self.amp, self.style_loss,
                                                 seamless),
                   pixel_ceiling(self.device, self.amp, self.style_loss, seamless))

    @property
    def max_pixels(self) -> float:
        """The most pixels one whole level may have: what the budget holds, and less than
        what ran out of memory here before."""
        return self._max_pixels(self.seamless)

    def fits(self, hw: tuple[int, int]) -> bool:
        """Whether a whole level of this size fits."""
        return hw[0] * hw[1] <= self.max_pixels

    def largest_side(self, hw: tuple[int, int]) -> int:
        """The longest side of the largest level of this aspect ratio that fits untiled."""
        aspect = min(hw) / max(hw)
        return int(math.sqrt(self.max_pixels / aspect))

    def tile_side(self) -> int:
        """The longest side of the square tiles that fit (tiles never wrap)."""
        return int(math.sqrt(self._max_pixels(False)))

    def style_side(self, hw: tuple[int, int]) -> int:
        """The longest side a style image of this shape may have for its (gradient-free)
        statistics pass."""
        pixels = self._max_pixels(False) / NO_GRAD_SHARE  # no backward: nothing kept
        return int(math.sqrt(pixels * max(hw) / min(hw)))

    def holds_canvas(self, hw: tuple[int, int]) -> bool:
        """Whether a tiled level's canvas, starting image and content (``CANVAS_BYTES`` per
        pixel) fit beside its tiles, so they stay on the device (the CPU's are always
        there)."""
        return (self.device.type == "cpu"
                or hw[0] * hw[1] * CANVAS_BYTES <= self.total * CANVAS_SHARE)

    def holds_output(self, hw: tuple[int, int]) -> bool:
        """Whether the final resize to ``hw``, the colour recombination and the 8-bit result
        (``OUTPUT_BYTES`` per pixel) fit on the device once the levels are done."""
        return self.device.type == "cpu" or hw[0] * hw[1] * OUTPUT_BYTES <= self.total


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is the device (or the CPU allocator) running out of memory."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if oom_types and isinstance(e, oom_types):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text
                                            or "can't allocate memory" in text)


def release_cached(dev: torch.device) -> None:
    """Hand the allocator's cached blocks back after an out-of-memory error, so a retry starts
    clean."""
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    elif dev.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
