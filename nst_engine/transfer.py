"""``stylize()``: the one entry point of the engine, used by the CLI and the ``serve`` mode.

The module is not named ``stylize`` so that ``from nst_engine import stylize`` is always the
function: a submodule of that name would replace the package attribute once imported.

Gatys et al. style transfer by optimising the pixels of the result, coarse to fine: each
pyramid level starts from the previous level's result upsampled, so most iterations run on
small images and the finest level only refines. Adam with iterate averaging (the output is an
exponential moving average of the iterates, which removes most of Adam's pixel noise) or L-BFGS.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import color
from .devices import autocast_dtype, resolve_device
from .errors import Cancelled, EngineError, InvalidInput, NumericalError, OutOfMemory
from .imageio import has_alpha
from .losses import ContentLoss, TVLoss, make_style_loss
from .params import StyleParams
from .progress import Progress

CancelFlag = Callable[[], bool] | threading.Event | None
#: Shortest side, in px, the optimisation runs at (VGG pools the image 4 times before relu5_1).
MIN_SIDE = 32
#: Models kept loaded between calls (the serve mode runs many jobs with the same weights).
MODEL_CACHE_SIZE = 2
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
    arr = np.asarray(img.convert("RGBA" if alpha else "RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]
    return t[:, :3].contiguous(), (t[:, 3:].contiguous() if alpha else None)


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


def _level_shape(h: int, w: int, longest: int) -> tuple[int, int]:
    scale = longest / max(h, w)
    return max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale))


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
    """The weighted sum of content, style and TV losses at one pyramid level."""

    def __init__(self, model, params: StyleParams, content: Tensor,
                 styles: Sequence[tuple[Tensor, Tensor | None, float]],
                 amp: torch.dtype | None, generator: torch.Generator) -> None:
        self.model, self.params, self.amp = model, params, amp
        self.content_w = _normalised_layers(params.content_layers)
        self.style_w = _normalised_layers(params.style_layers)
        with torch.no_grad():
            cf = self.features(content)
            self.content = {l: ContentLoss(cf[l]) for l in self.content_w}
            del cf
            sfs = [self.features(img) for img, _, _ in styles]
            masks = [m for _, m, _ in styles]
            blend = [w for _, _, w in styles]
            self.style = {l: make_style_loss(params.style_loss, [sf[l] for sf in sfs], masks,
                                             blend, generator=generator)
                          for l in self.style_w}
        self.tv = TVLoss()

    def features(self, img: Tensor) -> dict[str, Tensor]:
        if self.amp is None:
            return self.model(img)
        # Reduced-precision convolutions run fastest channels-last (oneDNN/AMX, tensor cores):
        # measured 0.53 vs 0.87 s per iteration at 512 px on an AMX CPU; in float32 the
        # CPU is faster with the default layout, so it is used only here.
        img = img.contiguous(memory_format=torch.channels_last)
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
    else RGB. Raises ``EngineError`` subclasses for failures a user can act on.
    """
    start = time.monotonic()
    check_cancel = _cancel_check(cancel)
    sizes, steps = params.level_sizes(), params.level_iterations()
    total_steps = sum(steps)

    def report(stage: str, level: int, done: int, eta=None, losses=None) -> None:
        if progress is not None:
            progress(Progress(stage=stage, level=level, levels=len(sizes), iteration=done,
                              total=total_steps, elapsed=time.monotonic() - start, eta=eta,
                              losses=losses or {}))

    _check_inputs(content, styles)
    dev = resolve_device(device)
    report("loading", 0, 0)
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
    report("preparing", 0, 0)

    h0, w0 = content_rgb.shape[-2:]
    # Never optimise above the content's own size (upsampling adds nothing but cost).
    longest_cap = max(h0, w0, 64)
    done, image = 0, None
    rate = None  # seconds per iteration per pixel, for the ETA
    remaining_px = [math.prod(_level_shape(h0, w0, min(s, longest_cap))) * n
                    for s, n in zip(sizes, steps)]
    for level, (size, n_steps) in enumerate(zip(sizes, steps), 1):
        hw = _level_shape(h0, w0, min(size, longest_cap))
        try:
            image, rate, done = _run_level(
                level=level, hw=hw, n_steps=n_steps, image=image, model=model, params=params,
                content=target_rgb, styles=style_data, dev=dev, generator=generator,
                check_cancel=check_cancel, report=report, done=done, rate=rate,
                remaining_px=sum(remaining_px[level:]))
        except EngineError:
            raise
        except Exception as e:  # noqa: BLE001 - only OOM is turned into a user message
            if not _is_oom(e):
                raise
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"Out of memory on {dev.type} while stylizing at {hw[1]}x{hw[0]} px "
                f"(pyramid level {level} of {len(sizes)}).",
                f"Use a smaller max-size (e.g. {max(64, size // 2)}), fewer style layers, or "
                "device cpu.") from e

    result = _resize(image.detach().float().cpu(), (h0, w0))
    if params.preserve_colors:
        result = color.recombine(result, content_rgb)
    out = Image.fromarray(
        (result[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8), "RGB")
    if content_alpha is not None:
        out.putalpha(content.convert("RGBA").getchannel("A"))
    report("done", len(sizes), total_steps, eta=0.0)
    return out


def _run_level(*, level, hw, n_steps, image, model, params, content, styles, dev, generator,
               check_cancel, report, done, rate, remaining_px):
    """Optimise one pyramid level; returns (image, seconds per iteration-pixel, steps done)."""
    amp = autocast_dtype(dev)
    c_lvl = _resize(content, hw).to(dev)
    style_longest = max(MIN_SIDE, round(max(hw) * params.style_scale))
    s_lvl = []
    for rgb, mask, w in styles:
        shw = _level_shape(*rgb.shape[-2:], style_longest)
        s_lvl.append((_resize(rgb, shw).to(dev),
                      None if mask is None else _resize(mask, shw).to(dev), w))
    objective = _Objective(model, params, c_lvl, s_lvl, amp, generator)
    del s_lvl
    if image is None:
        init = (c_lvl if params.init == "content"
                else torch.rand(c_lvl.shape, generator=generator).to(dev))
    else:
        init = _resize(image, hw)
    x = init.detach().clone().float().contiguous().requires_grad_(True)
    px = hw[0] * hw[1]
    level_start = time.monotonic()

    def finite(total: Tensor, parts: dict[str, Tensor], step: int) -> dict[str, float]:
        vals = {k: float(v.detach()) for k, v in parts.items()}
        vals["total"] = float(total.detach())
        if not all(math.isfinite(v) for v in vals.values()):
            raise NumericalError(
                f"The optimisation diverged (loss became {vals['total']}) at pyramid level "
                f"{level}, step {step}.",
                f"Lower the learning rate (now {params.learning_rate}) or the style weight / "
                "strength, or use the adam optimizer.")
        return vals

    def tick(i: int, vals: dict[str, float]) -> None:
        nonlocal rate
        elapsed = time.monotonic() - level_start
        rate = elapsed / ((i + 1) * px)
        eta = rate * ((n_steps - i - 1) * px + remaining_px)
        report("optimizing", level, done + i + 1, eta=eta, losses=vals)

    if params.optimizer == "lbfgs":
        result = _lbfgs(x, objective, n_steps, check_cancel, finite, tick)
    else:
        opt = torch.optim.Adam([x], lr=params.learning_rate)
        avg = x.detach().clone()
        decay = params.average_decay
        for i in range(n_steps):
            check_cancel()
            opt.zero_grad(set_to_none=True)
            total, parts = objective(x)
            vals = finite(total, parts, i + 1)
            total.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
                avg.mul_(decay).add_(x, alpha=1.0 - decay)
            tick(i, vals)
        result = avg
    check_cancel()
    return result, rate, done + n_steps


class _BudgetSpent(Exception):
    """Raised inside the closure when the level's function evaluations are used up."""


def _lbfgs(x, objective, n_steps, check_cancel, finite, tick) -> Tensor:
    """L-BFGS with a strong-Wolfe line search; one iteration = one function evaluation.

    One ``step()`` call runs the whole level: torch's L-BFGS loses its way when called with
    ``max_iter=1`` repeatedly together with a line search. The closure checks cancel, reports
    progress and stops at the budget; the best point evaluated is the result (a line-search
    trial may be interrupted). No clamping between steps: it would break the curvature pairs
    (as in jcjohnson's neural-style); the result is clamped once at the end.
    """
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=n_steps, max_eval=2 * n_steps + 25,
                            history_size=20, tolerance_grad=0.0, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")
    count = 0
    best = (math.inf, x.detach().clone())

    def closure():
        nonlocal count, best
        check_cancel()
        if count >= n_steps:
            raise _BudgetSpent
        opt.zero_grad(set_to_none=True)
        total, parts = objective(x)
        vals = finite(total, parts, count + 1)
        total.backward()
        if vals["total"] < best[0]:
            best = (vals["total"], x.detach().clone())
        tick(count, vals)
        count += 1
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
