"""Styling the frames of an animation one by one, with temporal coherence (Ruder et al. 2016).

``Animation`` keeps what the next frames need and nothing more: the results and working-size
content of the last four frames (and of the first, in loop mode), so memory does not grow with
the number of frames. Each frame is one ``pipeline.stylize`` call with a ``FrameHook``:

- the first frame is a still (every pyramid level);
- each later frame starts from the previous result warped by the optical flow (``flow``: DIS,
  current -> previous), runs only the finest level with at most ``FRAME_COST`` of a still's
  pixel-steps, and has a temporal loss (``warp.TemporalTerm``, weight ``temporal_weight``) to
  the results of the frames 1, 2 and 4 back, warped onto it, each masked by the forward-backward
  consistency check and, further back, only where no nearer frame is trusted (``long_term``);
- loop mode: the last frame also has a term to the first frame's result, so the animation
  closes without a jump.

``temporal_weight`` 0 styles every frame as an independent still (no flow, no OpenCV needed).
The pipeline calls the hook (``plan``, ``start``, ``term``, ``keep``); nothing here changes a
still's path.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import InvalidInput
from ..params import StyleParams
from ..progress import Progress
from . import warp
from .convert import resize

#: A frame after the first runs at most this fraction of a still's pixel-steps (the issue's bar
#: is one half; the rest is left for the flows, the style targets and the conversions).
FRAME_COST = 0.45
#: The earlier frames a frame is tied to (Ruder et al.'s long-term set J).
BACK = (1, 2, 4)


@dataclass
class _Kept:
    index: int          # 1-based frame number
    rgb: np.ndarray     # the content at the working size, uint8 [H, W, 3]
    image: Tensor       # the result in the optimisation's space, [1, 3, H, W], working size


@dataclass
class FrameStats:
    """What one frame cost: for the benchmark and the log."""
    index: int
    seconds: float = 0.0
    flow_seconds: float = 0.0   # optical flows, masks and warps
    steps: int = 0
    levels: int = 0
    terms: int = 0              # temporal terms (earlier frames it was tied to)


class Animation:
    """The frames of one animation, styled in order by ``frame()``.

    ``styles`` and ``params`` as for ``pipeline.stylize``; a ``seed`` of None is drawn once, so
    every frame uses the same one. ``loop``: the last frame (``frame(..., last=True)``) is also
    tied to the first.
    """

    def __init__(self, *, styles: Sequence[tuple[Image.Image, float]], params: StyleParams,
                 loop: bool = False, device: str = "auto",
                 weights: str | os.PathLike | None = None,
                 weights_kind: str | None = None) -> None:
        self.styles, self.loop = list(styles), loop
        self.params = params if params.seed is not None else replace(
            params, seed=secrets.randbits(63))
        self.device, self.weights, self.weights_kind = device, weights, weights_kind
        self.temporal = params.temporal_weight > 0
        self.flow = None
        if self.temporal:
            from .flow import Flow  # noqa: PLC0415 - OpenCV only when frames are tied
            self.flow = Flow()     # FlowUnavailable now, before any frame is styled
        self.kept: deque[_Kept] = deque(maxlen=max(BACK))
        self.first: _Kept | None = None
        self.size: tuple[int, int] | None = None
        self.count = 0
        self.stats: list[FrameStats] = []

    def frame(self, content: Image.Image, *, last: bool = False,
              progress: Callable[[Progress], None] | None = None,
              cancel=None) -> Image.Image:
        """Style the next frame; returns it like ``stylize`` (content's size and alpha)."""
        from .pipeline import stylize  # noqa: PLC0415 - pipeline imports this module's hook

        if self.size is not None and content.size != self.size:
            raise InvalidInput(
                f"Frame {self.count + 1} is {content.width}x{content.height} px, but the "
                f"animation's frames are {self.size[0]}x{self.size[1]} px.",
                "Every frame of an animation must have the same size: crop or scale the "
                "frames (in GIMP: Image > Canvas Size / Layer to Image Size) and run again.")
        self.size = content.size
        stats = FrameStats(self.count + 1)
        hook = FrameHook(self, content, last, stats) if self.temporal else None
        started = time.monotonic()
        more = {} if hook is None else {"frame": hook}  # independent frames: plain stills
        out = stylize(content=content, styles=self.styles, params=self.params,
                      device=self.device, weights=self.weights,
                      weights_kind=self.weights_kind, progress=progress, cancel=cancel,
                      **more)
        self.count += 1
        stats.seconds = time.monotonic() - started
        self.stats.append(stats)
        return out

    def remember(self, kept: _Kept) -> None:
        self.kept.appendleft(kept)  # nearest first
        if self.loop and self.first is None:
            self.first = kept


class FrameHook:
    """What ``pipeline.stylize`` asks of one frame of an animation (see the module doc)."""

    def __init__(self, anim: Animation, content: Image.Image, last: bool,
                 stats: FrameStats) -> None:
        self.anim, self.content, self.last, self.stats = anim, content, last, stats
        self.index = anim.count + 1
        self.hw: tuple[int, int] | None = None
        self.rgb: np.ndarray | None = None
        self.targets: list[tuple[Tensor, Tensor]] = []

    # -- called by the pipeline ---------------------------------------------------------------

    def plan(self, levels: list) -> list:
        """The levels this frame runs: all for the first, the finest one cheaper after."""
        self.hw = levels[-1].hw
        self.stats.levels = len(levels)
        if not self.anim.kept:
            self.stats.steps = sum(l.steps for l in levels)
            return levels
        finest = levels[-1]
        budget = FRAME_COST * sum(l.px_work for l in levels)
        steps = max(1, min(finest.steps, int(budget * finest.steps // finest.px_work)))
        self.stats.levels, self.stats.steps = 1, steps
        return [replace(finest, index=1, steps=steps)]

    def start(self, device: torch.device) -> Tensor | None:
        """The image the first level starts from: the previous result warped onto this frame
        (None for the first frame: the preset's ``init``). Computes the flows and masks."""
        t0 = time.monotonic()
        h, w = self.hw
        self.rgb = np.asarray(self.content.convert("RGB").resize((w, h), Image.BICUBIC))
        earlier = {k.index: k for k in self.anim.kept}
        pairs = [earlier[self.index - j] for j in BACK if self.index - j in earlier]
        first = self.anim.first
        loop_back = (self.last and self.anim.loop and first is not None
                     and first.index not in [k.index for k in pairs])
        if not pairs and not loop_back:
            return None
        from .flow import grey  # noqa: PLC0415

        cur = grey(self.rgb)
        near = [self._tie(cur, k, device) for k in pairs]
        masks = warp.long_term([m for _, m in near])
        self.targets = [(t, m) for (t, _), m in zip(near, masks)]
        if loop_back:
            self.targets.append(self._tie(cur, first, device))
        self.stats.terms = len(self.targets)
        start = self.targets[0][0]
        self.stats.flow_seconds = time.monotonic() - t0
        return start

    def term(self, hw: tuple[int, int], device: torch.device) -> warp.TemporalTerm | None:
        """The temporal loss at a level of size ``hw`` (None on the first frame)."""
        if not self.targets:
            return None
        targets = self.targets
        if tuple(hw) != tuple(self.hw):
            targets = [(resize(t, hw), (resize(m, hw) > 0.5).float()) for t, m in targets]
        return warp.TemporalTerm([(t.to(device), m.to(device)) for t, m in targets],
                                 self.anim.params.temporal_weight)

    def keep(self, image: Tensor) -> None:
        """The finest level's result, in the optimisation's space: the next frames' target."""
        if tuple(image.shape[-2:]) != tuple(self.hw):
            image = resize(image, self.hw)
        self.targets = []
        self.anim.remember(_Kept(self.index, self.rgb, image.detach()))

    # -- helpers ------------------------------------------------------------------------------

    def _tie(self, cur: np.ndarray, kept: _Kept, device: torch.device) -> tuple[Tensor, Tensor]:
        """``kept``'s result warped onto this frame, and where that is trusted."""
        from .flow import grey  # noqa: PLC0415

        rgb = kept.rgb
        if rgb.shape[:2] != cur.shape:  # the working size changed between frames
            rgb = np.asarray(Image.fromarray(rgb).resize((cur.shape[1], cur.shape[0]),
                                                         Image.BICUBIC))
        other = grey(rgb)
        back = warp.flow_tensor(self.anim.flow(cur, other), device)
        fwd = warp.flow_tensor(self.anim.flow(other, cur), device)
        image = kept.image.to(device)
        if tuple(image.shape[-2:]) != tuple(cur.shape):
            image = resize(image, cur.shape)
        return warp.warp(image, back), warp.consistency(back, fwd)
