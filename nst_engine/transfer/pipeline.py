"""``stylize()``: the one entry point of the engine, used by the CLI and the server.

Gatys et al. style transfer by optimising the pixels of the result, coarse to fine: each
pyramid level starts from the previous level's result upsampled, so most iterations run on
small images and the finest level only refines. ``levels.plan`` says at what sizes (up to the
image's own) and which levels run in tiles (``tiles``) because they do not fit in memory
(``device.memory``); a level that runs out of memory anyway is retried once in smaller tiles.
The optimisers (Adam with iterate averaging, or L-BFGS) are in ``optimise``; the function they
minimise in ``objective``.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import traceback
from dataclasses import replace
from typing import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor

from ..device import heap
from ..device.determinism import repeatable
from ..device.memory import Budget, is_out_of_memory, observe, out_of_memory, release_cached
from ..device.resolve import resolve_device
from ..errors import Cancelled, EngineError, InvalidInput, OutOfMemory
from ..imageio import has_alpha
from ..model.cache import model_for
from ..params import StyleParams, check_params
from ..progress import Progress
from . import color, levels, tiles
from .convert import fill_transparent, resize, to_rgb_image, to_tensor
from .levels import MIN_SIDE, level_shape
from .losses import direction_generator
from .objective import Objective
from .optimise import optimise
from .run import RunState, px_text

CancelFlag = Callable[[], bool] | threading.Event | None


def stylize(*, content: Image.Image,
            styles: Sequence[tuple[Image.Image, float]],
            params: StyleParams,
            device: str = "auto",
            weights: str | os.PathLike | None = None,
            weights_kind: str | None = None,
            progress: Callable[[Progress], None] | None = None,
            cancel: CancelFlag = None, frame=None) -> Image.Image:
    """Repaint ``content`` in the style of ``styles`` ((image, blend weight) pairs).

    Returns an image of the content's size: RGBA with the content's alpha when it has one,
    else RGB. Raises ``EngineError`` subclasses for failures a user can act on. ``frame``: an
    animation's ``animation.FrameHook`` (which levels run, the start image, the temporal loss,
    the result it keeps for the next frame); None for a still. On the CPU
    with glibc, the process's heap keeps freed memory while the run lasts (``heap``: fewer
    page faults per step, a higher peak); glibc's settings are restored when it returns.
    """
    start = time.monotonic()
    check_cancel = _cancel_check(cancel)
    _check_inputs(content, styles)
    check_params(params)  # built in Python, params met no preset or override check
    dev = resolve_device(device)
    with heap.reuse_freed_memory(dev.type == "cpu"), repeatable(dev):
        return _stylize(content, styles, params, dev, weights, weights_kind, progress,
                        check_cancel, start, frame)


def _cancel_check(cancel: CancelFlag) -> Callable[[], None]:
    is_set = getattr(cancel, "is_set", cancel)

    def check() -> None:
        if is_set is not None and is_set():
            raise Cancelled("Style transfer cancelled.", "")
    return check


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


def _stylize(content: Image.Image, styles: Sequence[tuple[Image.Image, float]],
             params: StyleParams, dev: torch.device, weights, weights_kind,
             progress: Callable[[Progress], None] | None, check_cancel: Callable[[], None],
             start: float, frame=None) -> Image.Image:
    run = RunState(params, dev, (content.height, content.width), progress, start)
    run.report("loading")
    model, _ = model_for(weights, weights_kind, params, dev)
    check_cancel()
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    draws = direction_generator(dev, seed, generator)  # per-step draws, where the image is

    content_rgb, content_alpha = to_tensor(content)
    style_data = [(*fill_transparent(*to_tensor(img)), float(w)) for img, w in styles]
    if params.preserve_colors:
        target_rgb = color.luminance(content_rgb)
        style_data = [(color.matched_style_luminance(rgb, content_rgb, mask), mask, w)
                      for rgb, mask, w in style_data]
    else:
        target_rgb = content_rgb
    run.report("preparing")

    image = None
    if frame is not None:  # an animation's frame: its levels, start image and temporal loss
        run.levels[:] = frame.plan(run.levels)
        image = frame.start(dev)
    for level in list(run.levels):
        image = _level_with_retry(run, level, image=image, model=model,
                                  plain_model=lambda: model_for(weights, weights_kind, replace(
                                      params, seamless=False), dev)[0], content=target_rgb,
                                  styles=style_data, generator=generator, draws=draws,
                                  check_cancel=check_cancel, frame=frame)
    if frame is not None:
        frame.keep(image)

    h0, w0 = content_rgb.shape[-2:]
    # The final resize, colour recombination and 8-bit rounding run where the image is, when
    # the full-size result fits there (a GPU does them while the host would wait, and a
    # quarter of the bytes cross); else on the host, as on the CPU.
    where = image.device if run.memory.holds_output((h0, w0)) else torch.device("cpu")
    result = resize(image.detach().float().to(where), (h0, w0), params.seamless)
    if params.preserve_colors:
        result = color.recombine(result, content_rgb.to(where))
    out = to_rgb_image(result)
    if content_alpha is not None:
        out.putalpha(content.convert("RGBA").getchannel("A"))
    run.report("done", eta=0.0)
    return out


def _level_with_retry(run: RunState, level: levels.Level, **kw) -> Tensor:
    """Run a level; after an out-of-memory error retry it once in smaller tiles."""
    done = (run.done, run.px_done)
    attempt = level
    for retry in (False, True):
        try:
            return _run_level(run, attempt, **kw)
        except EngineError:
            raise
        except Exception as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not is_out_of_memory(e):
                raise
            failure = e
            traceback.clear_frames(e.__traceback__)  # the failed attempt's tensors go now
        # Never plan this many pixels at once again in this process (later levels, later jobs
        # of a warm engine): the table's figure was too small for this device.
        out_of_memory(run.dev, run.amp, _largest_piece(attempt), run.params.style_loss,
                      attempt.wrap and attempt.tile is None)  # tiles run unwrapped
        release_cached(run.dev)
        tile = None if retry else levels.smaller_tile(attempt, run.memory)
        if tile is None:
            break
        attempt = run.retry(attempt, tile, done)
        run.report("optimizing")
    tiled = f", also in tiles of {attempt.tile} px" if attempt.tile else ""
    raise OutOfMemory(
        f"Out of memory on {run.dev.type} while stylizing at {px_text(attempt.hw)} (pyramid "
        f"level {attempt.index} of {len(run.levels)}){tiled}.",
        f"Use a smaller max-size (e.g. {max(64, max(level.hw) // 2)}), fewer style layers, or "
        "device cpu.") from failure


def _largest_piece(level: levels.Level) -> int:
    """The most pixels one optimisation of ``level`` holds: the whole level, or its largest
    tile."""
    return max((t.bottom - t.top) * (t.right - t.left) for t in level.tiles)


def _style_level(styles, hw, params: StyleParams, memory: Budget, dev: torch.device):
    """The style images at a level's scale (``style_scale`` times the whole level, also when
    it runs in tiles), no larger than their gradient-free pass fits in memory."""
    longest = max(MIN_SIDE, round(max(hw) * params.style_scale))
    out = []
    for rgb, mask, w in styles:
        shw = level_shape(*rgb.shape[-2:], min(longest, memory.style_side(rgb.shape[-2:])))
        out.append((resize(rgb, shw).to(dev),
                    None if mask is None else resize(mask, shw).to(dev), w))
    return out


def _run_level(run: RunState, level: levels.Level, *, image, model, plain_model, content, styles,
               generator, draws, check_cancel, frame=None) -> Tensor:
    """Optimise one pyramid level, whole or tile by tile; returns the level's image.

    Seamless levels in tiles: a tile is a crop, not a period, so inside it the padding and the
    smoothness term do not wrap (``plain_model``: the network with zero padding); the wrap is in
    the tiles' grid, which goes around the border (``tiles.grid``).

    A tiled level keeps its canvas and content on the device when they fit beside a tile
    (``Budget.holds_canvas``: 36 bytes a pixel), and blends each tile there; else on the CPU,
    moving one tile at a time to the device, so the device's peak follows the tile size, not
    the image's.
    """
    run.level = level
    dev, params, hw = run.dev, run.params, level.hw
    store = dev if level.tile is None or run.memory.holds_canvas(hw) else torch.device("cpu")
    measure = dev.type == "cuda" and level.tile is None
    if measure:
        allocated = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    per_tile = params
    if level.wrap and level.tile is not None:
        per_tile, model = replace(params, seamless=False), plain_model()
    objective = Objective(model, per_tile, _style_level(styles, hw, params, run.memory, dev),
                          run.amp, generator, draws)
    c_lvl = resize(content, hw, params.seamless).to(store)
    if image is None:
        canvas = (c_lvl.clone() if params.init == "content"
                  else torch.rand(c_lvl.shape, generator=generator).to(store))
    else:
        canvas = resize(image.to(store), hw, params.seamless).clone()
    # Every tile starts from the level's starting image, not from its neighbours' results:
    # where those end, the canvas has an edge that a tile's few steps would not smooth away.
    start = canvas.clone() if level.tile is not None else canvas
    temporal = frame.term(hw, store) if frame is not None else None
    for tile in level.tiles:
        ys, xs = tile.slices
        objective.set_content(tiles.crop(c_lvl, tile).to(dev))
        objective.extra = None if temporal is None else temporal.crop(ys, xs, dev)
        run.start_tile((ys.stop - ys.start) * (xs.stop - xs.start))
        result = optimise(run, objective, tiles.crop(start, tile).to(dev), level.steps,
                          check_cancel)
        if level.tile is None:
            canvas = result
        else:
            tiles.blend_into(canvas, tile, result)
        del result
    if measure:
        observe(dev, run.amp, hw[0] * hw[1], torch.cuda.max_memory_allocated(dev) - allocated,
                params.style_loss, level.wrap)
    check_cancel()
    return canvas
