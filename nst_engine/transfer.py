"""``stylize()``: the one entry point of the engine, used by the CLI and the ``serve`` mode.

The module is not named ``stylize`` so that ``from nst_engine import stylize`` is always the
function: a submodule of that name would replace the package attribute once imported.

Gatys et al. style transfer by optimising the pixels of the result, coarse to fine: each
pyramid level starts from the previous level's result upsampled, so most iterations run on
small images and the finest level only refines. Adam with iterate averaging (the output is an
exponential moving average of the iterates, which removes most of Adam's pixel noise) or L-BFGS.
``levels.plan`` says at what sizes (up to the image's own) and which levels run in tiles
(``tiles``) because they do not fit in memory (``memory``); a level that runs out of memory
anyway is retried once in smaller tiles.

The Adam loop never waits for the device: the losses go into a buffer on the device and are
read back (checked for NaN, reported) every ``READBACK_STEPS`` steps or ``READBACK_SECONDS``,
whichever comes first; on the CPU, where reading costs nothing, after every step. CUDA graphs
are not used: whether they pay could not be measured where this was written (no GPU); the
s/iter rows of ``benchmarks/bench_gpu.py`` against the plain loop show how much launch overhead
is left for them to remove.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import color, heap, levels, tiles
from .adam import Adam
from .devices import autocast_dtype, resolve_device
from .errors import Cancelled, EngineError, InvalidInput, NumericalError, OutOfMemory
from .imageio import has_alpha
from .levels import MIN_SIDE, level_shape as _level_shape
from .losses import ContentLoss, TVLoss, make_style_loss
from .memory import Budget, observe
from .params import StyleParams
from .presets import check_params
from .progress import Progress

CancelFlag = Callable[[], bool] | threading.Event | None
#: Models kept loaded between calls (the serve mode runs many jobs with the same weights).
MODEL_CACHE_SIZE = 2
#: On a GPU: optimiser steps between two reads of the losses (each read waits for the device
#: to catch up; nothing else in the loop does). A NaN loss stops the run within this many steps.
READBACK_STEPS = {"cpu": 1, "cuda": 25, "mps": 25}
#: ... and at most this many seconds between reads, so progress arrives ~10 times a second.
READBACK_SECONDS = 0.1
_model_cache: OrderedDict[tuple, tuple] = OrderedDict()
_cache_lock = threading.Lock()


def model_for(weights: str | os.PathLike | None, weights_kind: str | None, params: StyleParams,
              device: torch.device):
    """The feature extractor for these weights, layers, pooling and device, and the weights'
    description (``VGGWeights`` without its tensors: ``verified``, ``notice``, ``kind``).

    Cached in-process by (file, its size and mtime, kind, layers, pooling, device).
    """
    from .model import VGGFeatures
    from .weights import default_weights_path, load_weights

    path = Path(weights) if weights is not None else default_weights_path()
    layers = tuple(sorted(set(params.content_layers) | set(params.style_layers)))
    try:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # load_weights says what is wrong
    key = (str(path.resolve() if stamp else path), stamp, weights_kind, layers, params.pooling,
           str(device))
    with _cache_lock:
        if key in _model_cache:
            _model_cache.move_to_end(key)
            return _model_cache[key]
    loaded = load_weights(path, kind=weights_kind)
    model = VGGFeatures(loaded, layers, params.pooling).to(device)
    entry = (model, replace(loaded, convs={}))
    with _cache_lock:
        _model_cache[key] = entry
        while len(_model_cache) > MODEL_CACHE_SIZE:
            _model_cache.popitem(last=False)
    return entry


def _cancel_check(cancel: CancelFlag) -> Callable[[], None]:
    is_set = getattr(cancel, "is_set", cancel)

    def check() -> None:
        if is_set is not None and is_set():
            raise Cancelled("Style transfer cancelled.", "")
    return check


def _to_tensor(img: Image.Image) -> tuple[Tensor, Tensor | None]:
    """PIL image -> (RGB ``[1, 3, H, W]`` in [0, 1], alpha ``[1, 1, H, W]`` in [0, 1] or None)."""
    alpha = has_alpha(img)
    # Converted to float by torch, not by np.asarray(..., dtype=float32): numpy's path from a
    # PIL image to float takes ~2 s at 12 MP, torch's ~0.15 s, with the same float32 values.
    u8 = torch.from_numpy(np.array(img.convert("RGBA" if alpha else "RGB"))).permute(2, 0, 1)[None]

    def unit(t: Tensor) -> Tensor:
        return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    return unit(u8[:, :3]), (unit(u8[:, 3:]) if alpha else None)


def _fill_transparent(rgb: Tensor, alpha: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Paint transparent style pixels with the opaque pixels' mean colour.

    The masks keep transparent pixels out of the statistics, but VGG's receptive fields would
    still carry whatever colour they hold into the features of nearby opaque pixels; a flat
    neutral fill keeps that leak small.
    """
    if alpha is None:
        return rgb, None
    opaque = alpha >= 0.5
    mean = (rgb * opaque).sum(dim=(2, 3), keepdim=True) / opaque.sum().clamp(min=1)
    return torch.where(opaque, rgb, mean), alpha


def _resize(t: Tensor, hw: tuple[int, int]) -> Tensor:
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    down = hw[0] * hw[1] < t.shape[-2] * t.shape[-1]
    out = F.interpolate(t, size=hw, mode="bilinear" if down else "bicubic",
                        align_corners=False, antialias=down)
    return out.clamp(0, 1)


def _check_inputs(content: Image.Image, styles: Sequence[tuple[Image.Image, float]]) -> None:
    if content.width < 1 or content.height < 1:
        raise InvalidInput("The content image is empty.", "Use an image with some pixels.")
    if not styles:
        raise InvalidInput("No style image was given.", "Give at least one style image.")
    blend = [float(w) for _, w in styles]
    if any(not math.isfinite(w) or w < 0 for w in blend) or sum(blend) <= 0:
        raise InvalidInput(f"Style weights must be non-negative with a positive sum, got {blend}.",
                           "Use weights such as 0.7,0.3.")
    for i, (img, _) in enumerate(styles, 1):
        if img.width < 1 or img.height < 1:
            raise InvalidInput(f"Style image {i} is empty.", "Use an image with some pixels.")
        if has_alpha(img) and img.convert("RGBA").getchannel("A").getextrema()[1] < 128:
            raise InvalidInput(f"Style image {i} is fully transparent, so it has no style.",
                               "Choose a style layer with visible pixels.")


class _Objective:
    """The weighted sum of content, style and TV losses at one pyramid level.

    The style targets come from the whole style image, once per level; the content target is
    set per tile (``set_content``), so all tiles of a level share one set of style statistics.
    """

    def __init__(self, model, params: StyleParams,
                 styles: Sequence[tuple[Tensor, Tensor | None, float]],
                 amp: torch.dtype | None, generator: torch.Generator) -> None:
        self.model, self.params, self.amp = model, params, amp
        self.content_w = _normalised_layers(params.content_layers)
        self.style_w = _normalised_layers(params.style_layers)
        with torch.no_grad():
            sfs = [self.features(img) for img, _, _ in styles]
            masks = [m for _, m, _ in styles]
            blend = [w for _, _, w in styles]
            self.style = {l: make_style_loss(params.style_loss, [sf[l] for sf in sfs], masks,
                                             blend, generator=generator)
                          for l in self.style_w}
        self.content: dict[str, ContentLoss] = {}
        self.tv = TVLoss()

    def set_content(self, content: Tensor) -> None:
        self.content = {}  # the previous tile's targets go before the next ones are made
        with torch.no_grad():
            cf = self.features(content)
            self.content = {l: ContentLoss(cf[l]) for l in self.content_w}

    def features(self, img: Tensor) -> dict[str, Tensor]:
        # Channels-last, like the model's weights: oneDNN's and the tensor cores' native layout
        # (no reorder per convolution). CPU float32: 0.80x the time of the default layout per
        # layer; bfloat16 on AMX 0.53 vs 0.87 s per iteration at 512 px (benchmarks/README.md).
        img = img.contiguous(memory_format=torch.channels_last)
        if self.amp is None:
            return self.model(img)
        with torch.autocast(img.device.type, dtype=self.amp):
            return self.model(img)

    def __call__(self, img: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        feats = self.features(img)
        content = sum(w * self.content[l](feats[l]) for l, w in self.content_w.items())
        style = sum(w * self.style[l](feats[l]) for l, w in self.style_w.items())
        tv = self.tv(img.float())
        total = (p.content_weight * content + p.style_weight * p.strength * style
                 + p.tv_weight * tv)
        return total, {"content": content, "style": style, "tv": tv}


def _normalised_layers(layers) -> dict[str, float]:
    """Layer weights divided by their sum, so style_weight means the same for any layer set."""
    total = sum(float(w) for w in layers.values())
    return {l: float(w) / total for l, w in layers.items() if w} if total > 0 else {}


def _is_oom(e: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if oom_types and isinstance(e, oom_types):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text
                                            or "can't allocate memory" in text)


def _release(dev: torch.device) -> None:
    """Hand cached blocks back after an out-of-memory error, so a retry starts clean."""
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    elif dev.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _px(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]} px"


def stylize(*, content: Image.Image,
            styles: Sequence[tuple[Image.Image, float]],
            params: StyleParams,
            device: str = "auto",
            weights: str | os.PathLike | None = None,
            weights_kind: str | None = None,
            progress: Callable[[Progress], None] | None = None,
            cancel: CancelFlag = None) -> Image.Image:
    """Repaint ``content`` in the style of ``styles`` ((image, blend weight) pairs).

    Returns an image of the content's size: RGBA with the content's alpha when it has one,
    else RGB. Raises ``EngineError`` subclasses for failures a user can act on. On the CPU
    with glibc, the process's heap keeps freed memory while the run lasts (``heap``: fewer
    page faults per step, a higher peak); glibc's settings are restored when it returns.
    """
    start = time.monotonic()
    check_cancel = _cancel_check(cancel)
    _check_inputs(content, styles)
    check_params(params)  # built in Python, params met no preset or override check
    dev = resolve_device(device)
    with heap.reuse_freed_memory(dev.type == "cpu"):
        return _stylize(content, styles, params, dev, weights, weights_kind, progress,
                        check_cancel, start)


def _stylize(content: Image.Image, styles: Sequence[tuple[Image.Image, float]],
             params: StyleParams, dev: torch.device, weights, weights_kind,
             progress: Callable[[Progress], None] | None, check_cancel: Callable[[], None],
             start: float) -> Image.Image:
    run = _Run(params, dev, (content.height, content.width), progress, start)
    run.report("loading")
    model, _ = model_for(weights, weights_kind, params, dev)
    check_cancel()
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    content_rgb, content_alpha = _to_tensor(content)
    style_data = [(*_fill_transparent(*_to_tensor(img)), float(w)) for img, w in styles]
    if params.preserve_colors:
        target_rgb = color.luminance(content_rgb)
        style_data = [(color.matched_style_luminance(rgb, content_rgb, mask), mask, w)
                      for rgb, mask, w in style_data]
    else:
        target_rgb = content_rgb
    run.report("preparing")

    image = None
    for level in list(run.levels):
        image = _level_with_retry(run, level, image=image, model=model, content=target_rgb,
                                  styles=style_data, generator=generator,
                                  check_cancel=check_cancel)

    h0, w0 = content_rgb.shape[-2:]
    result = _resize(image.detach().float().cpu(), (h0, w0))
    if params.preserve_colors:
        result = color.recombine(result, content_rgb)
    # Rounded in torch (the same float32 arithmetic as numpy's, several times faster at 12 MP).
    rgb8 = result[0].mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
    out = Image.fromarray(rgb8.permute(1, 2, 0).contiguous().numpy(), "RGB")
    if content_alpha is not None:
        out.putalpha(content.convert("RGBA").getchannel("A"))
    run.report("done", eta=0.0)
    return out


class _Run:
    """A run's plan and its progress: steps and pixel-steps done, the ETA, a note."""

    def __init__(self, params: StyleParams, dev: torch.device, hw: tuple[int, int],
                 progress: Callable[[Progress], None] | None, start: float) -> None:
        self.params, self.dev, self.progress, self.start = params, dev, progress, start
        self.amp = autocast_dtype(dev)
        self.memory = Budget(dev, self.amp)
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
        self.note = (f"Out of memory at {_px(level.hw)}: retrying that level in tiles of "
                     f"{tile} px.")
        return new


def _level_with_retry(run: _Run, level: levels.Level, **kw) -> Tensor:
    """Run a level; after an out-of-memory error retry it once in smaller tiles."""
    done = (run.done, run.px_done)
    attempt = level
    for retry in (False, True):
        try:
            return _run_level(run, attempt, **kw)
        except EngineError:
            raise
        except Exception as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not _is_oom(e):
                raise
            failure = e
            traceback.clear_frames(e.__traceback__)  # the failed attempt's tensors go now
        _release(run.dev)
        tile = None if retry else levels.smaller_tile(attempt, run.memory)
        if tile is None:
            break
        attempt = run.retry(attempt, tile, done)
        run.report("optimizing")
    tiled = f", also in tiles of {attempt.tile} px" if attempt.tile else ""
    raise OutOfMemory(
        f"Out of memory on {run.dev.type} while stylizing at {_px(attempt.hw)} (pyramid level "
        f"{attempt.index} of {len(run.levels)}){tiled}.",
        f"Use a smaller max-size (e.g. {max(64, max(level.hw) // 2)}), fewer style layers, or "
        "device cpu.") from failure


def _style_level(styles, hw, params: StyleParams, memory: Budget, dev: torch.device):
    """The style images at a level's scale (``style_scale`` times the whole level, also when
    it runs in tiles), no larger than their gradient-free pass fits in memory."""
    longest = max(MIN_SIDE, round(max(hw) * params.style_scale))
    out = []
    for rgb, mask, w in styles:
        shw = _level_shape(*rgb.shape[-2:], min(longest, memory.style_side(rgb.shape[-2:])))
        out.append((_resize(rgb, shw).to(dev),
                    None if mask is None else _resize(mask, shw).to(dev), w))
    return out


def _run_level(run: _Run, level: levels.Level, *, image, model, content, styles, generator,
               check_cancel) -> Tensor:
    """Optimise one pyramid level, whole or tile by tile; returns the level's image.

    A tiled level keeps its canvas and content on the CPU and moves one tile at a time to the
    device, so the device's peak follows the tile size, not the image's.
    """
    run.level = level
    dev, params, hw = run.dev, run.params, level.hw
    store = dev if level.tile is None else torch.device("cpu")
    measure = dev.type == "cuda" and level.tile is None
    if measure:
        allocated = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    objective = _Objective(model, params, _style_level(styles, hw, params, run.memory, dev),
                           run.amp, generator)
    c_lvl = _resize(content, hw).to(store)
    if image is None:
        canvas = (c_lvl.clone() if params.init == "content"
                  else torch.rand(c_lvl.shape, generator=generator).to(store))
    else:
        canvas = _resize(image.to(store), hw).clone()
    # Every tile starts from the level's starting image, not from its neighbours' results:
    # where those end, the canvas has an edge that a tile's few steps would not smooth away.
    start = canvas.clone() if level.tile is not None else canvas
    for tile in level.tiles:
        ys, xs = tile.slices
        objective.set_content(c_lvl[..., ys, xs].to(dev))
        run.start_tile((ys.stop - ys.start) * (xs.stop - xs.start))
        result = _optimise(run, objective, start[..., ys, xs].to(dev), level.steps,
                           check_cancel)
        if level.tile is None:
            canvas = result
        else:
            tiles.blend_into(canvas, tile, result)
        del result
    if measure:
        observe(dev, run.amp, hw[0] * hw[1], torch.cuda.max_memory_allocated(dev) - allocated)
    check_cancel()
    return canvas


def _diverged(run: _Run, step: int, value: float) -> NumericalError:
    return NumericalError(
        f"The optimisation diverged (loss became {value}) at pyramid level "
        f"{run.level.index}, step {step}.",
        f"Lower the learning rate (now {run.params.learning_rate}) or the style weight / "
        "strength, or use the adam optimizer.")


_LOSS_NAMES = ("total", "content", "style", "tv")


class _Readback:
    """The losses of the last steps, kept on the device until they are read.

    ``record`` costs no wait; ``read`` (one wait for the device) checks every recorded step
    for a non-finite loss, so a NaN stops the run within ``READBACK_STEPS`` steps.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.every = READBACK_STEPS.get(run.dev.type, max(READBACK_STEPS.values()))
        self.rows = torch.zeros((self.every, len(_LOSS_NAMES)), device=run.dev)
        self.zero = torch.zeros((), device=run.dev)
        self.pending = self.steps = 0
        self.last = time.monotonic()

    def record(self, total: Tensor, parts: dict[str, Tensor]) -> None:
        values = [total, *(parts[k] for k in _LOSS_NAMES[1:])]
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
        return dict(zip(_LOSS_NAMES, rows[-1]))


def _optimise(run: _Run, objective: _Objective, init: Tensor, n_steps: int,
              check_cancel) -> Tensor:
    x = init.detach().clone().float().contiguous().requires_grad_(True)
    if run.params.optimizer == "lbfgs":
        return _lbfgs(run, x, objective, n_steps, check_cancel)
    return _adam(run, x, objective, n_steps, check_cancel)


def _adam(run: _Run, x: Tensor, objective: _Objective, n_steps: int, check_cancel) -> Tensor:
    """Adam on the pixels; the result is the running average of the iterates."""
    opt = Adam(x, lr=run.params.learning_rate)  # not torch.optim's: see nst_engine/adam.py
    avg = x.detach().clone()
    keep = 1.0 - run.params.average_decay
    losses = _Readback(run)
    for i in range(n_steps):
        check_cancel()
        opt.zero_grad()
        total, parts = objective(x)
        total.backward()
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


def _lbfgs(run: _Run, x: Tensor, objective: _Objective, n_steps: int, check_cancel) -> Tensor:
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
    losses = _Readback(run)  # read after every evaluation: the line search needs the values

    def closure():
        nonlocal count, best
        check_cancel()
        if count >= n_steps:
            raise _BudgetSpent
        opt.zero_grad(set_to_none=True)
        total, parts = objective(x)
        losses.record(total, parts)
        vals = losses.read()
        total.backward()
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
