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
- loop mode: the way back to the first frame is spread over the clip, like a bridge, so the
  animation closes without a jump: frame ``t`` of ``N`` also starts from and is tied to the
  first frame's result with the share ``1 / (N + 2 - t)`` (1/2 for the last), the frames
  before it with the rest. Tying only the last frame to the first moves the jump, whole,
  between the last two frames (and a frame after the first runs too few steps to close it).
- the results are warped bicubically (clamped to [0, 1]): bilinear warping blurs them a little
  more every frame, and the frames then drift away from the style.

Per-frame costs on a GPU (issue 31): a frame's flows (6, 8 in loop mode) are computed together,
in threads, and travel to the device in one copy (``warp.upload``: pinned, not waited for, on
CUDA); on MPS the warps and masks run on the host (``warp.warp_device``). With ``upcoming`` (the
command line knows the next frame), the next frame's flows are computed in a thread while this
frame optimises on a GPU (not on the CPU, whose cores the optimisation uses).

``temporal_weight`` 0 styles every frame as an independent still (no flow, no OpenCV needed).
The pipeline calls the hook (``plan``, ``start``, ``term``, ``keep``); nothing here changes a
still's path.
"""

from __future__ import annotations

import os
import secrets
import threading
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
    every frame uses the same one. ``frames``: how many frames the clip has; ``loop``: the
    last frame leads back to the first (needs ``frames``).
    """

    def __init__(self, *, styles: Sequence[tuple[Image.Image, float]], params: StyleParams,
                 frames: int | None = None, loop: bool = False, device: str = "auto",
                 weights: str | os.PathLike | None = None,
                 weights_kind: str | None = None) -> None:
        if loop and not frames:
            raise ValueError("loop mode needs the number of frames")
        if params.seamless and params.temporal_weight > 0:
            # The flow, the warps and their masks treat the borders as edges, not as a wrap.
            raise InvalidInput(
                "Seamless tiles and frames tied by their motion cannot be combined yet.",
                "Set the temporal weight to 0 (every frame styled on its own, each one a "
                "seamless tile; it may flicker), or turn seamless off.")
        self.styles, self.frames, self.loop = list(styles), frames, loop
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
        #: The next frame's flows computed ahead (``_Ahead``), or None.
        self.ahead: _Ahead | None = None

    def frame(self, content: Image.Image, *,
              progress: Callable[[Progress], None] | None = None,
              cancel=None, upcoming: Image.Image | None = None) -> Image.Image:
        """Style the next frame; returns it like ``stylize`` (content's size and alpha).
        ``upcoming``: the frame after this one, when known (its flows are computed while this
        one optimises on a GPU)."""
        from .pipeline import stylize  # noqa: PLC0415 - pipeline imports this module's hook

        if self.size is not None and content.size != self.size:
            raise InvalidInput(
                f"Frame {self.count + 1} is {content.width}x{content.height} px, but the "
                f"animation's frames are {self.size[0]}x{self.size[1]} px.",
                "Every frame of an animation must have the same size: crop or scale the "
                "frames (in GIMP: Image > Canvas Size / Layer to Image Size) and run again.")
        self.size = content.size
        stats = FrameStats(self.count + 1)
        hook = FrameHook(self, content, stats, upcoming) if self.temporal else None
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

    def loop_share(self, index: int) -> float:
        """How much frame ``index`` leans on the first frame's result (loop mode): the share
        that puts it on a straight way from the frame before to frame ``frames + 1``, which is
        the first again."""
        if not self.loop or index < 2:
            return 0.0
        return 1.0 / (self.frames + 2 - index)

    def needs(self, index: int) -> list[_Kept]:
        """The kept frames frame ``index`` is tied to (nearest first; then the first frame in
        loop mode), as far as they are kept."""
        earlier = {k.index: k for k in self.kept}
        out = [earlier[index - j] for j in BACK if index - j in earlier]
        if out and self.loop_share(index) > 0 and self.first is not None \
                and all(k.index != self.first.index for k in out):
            out.append(self.first)
        return out

    def remember(self, kept: _Kept) -> None:
        self.kept.appendleft(kept)  # nearest first
        if self.loop and self.first is None:
            self.first = kept


class FrameHook:
    """What ``pipeline.stylize`` asks of one frame of an animation (see the module doc)."""

    def __init__(self, anim: Animation, content: Image.Image, stats: FrameStats,
                 upcoming: Image.Image | None = None) -> None:
        self.anim, self.content, self.stats, self.upcoming = anim, content, stats, upcoming
        self.index = anim.count + 1
        self.hw: tuple[int, int] | None = None
        self.rgb: np.ndarray | None = None
        self.targets: list[tuple[Tensor, Tensor]] = []
        self.reverse: list[tuple[Tensor, Tensor, Tensor]] = []
        self._flow_cache: dict[int, tuple[Tensor, Tensor]] = {}

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
        (in loop mode blended with the first frame's; None for the first frame: the preset's
        ``init``). Computes the flows and masks."""
        t0 = time.monotonic()
        h, w = self.hw
        self.rgb = np.asarray(self.content.convert("RGB").resize((w, h), Image.BICUBIC))
        earlier = {k.index: k for k in self.anim.kept}
        pairs = [earlier[self.index - j] for j in BACK if self.index - j in earlier]
        if not pairs:
            self._look_ahead(device)
            return None
        from .flow import grey  # noqa: PLC0415

        cur = grey(self.rgb)
        work = warp.warp_device(device)  # MPS: the warps and masks on the host
        self._compute_flows(cur, self.anim.needs(self.index), work)
        self._look_ahead(device)
        near = [self._tie(cur, k, work) for k in pairs]
        masks = warp.long_term([m for _, m in near])
        self.targets = [(t, m) for (t, _), m in zip(near, masks)]
        start = self.targets[0][0]
        share = self.anim.loop_share(self.index)
        if share > 0:  # loop mode: part of the way back to the first frame
            first, trusted = self._tie(cur, self.anim.first, work)
            bridge = share * trusted
            self.targets = [(t, m * (1 - bridge)) for t, m in self.targets]
            self.targets.append((first, bridge))
            start = start * (1 - bridge) + first * bridge
            # ... and the first frame's own pixels where they went here: the way back
            # from the last frame is the first frame seen after it.
            image, mask, where = self._tie_back(cur, self.anim.first, work)
            self.reverse = [(image, share * mask, where)]
        self.stats.terms = len(self.targets) + len(self.reverse)
        self.stats.flow_seconds = time.monotonic() - t0
        self._flow_cache.clear()
        return start

    def term(self, hw: tuple[int, int], device: torch.device) -> warp.TemporalTerm | None:
        """The temporal loss at a level of size ``hw`` (None on the first frame)."""
        if not self.targets:
            return None
        targets, reverse = self.targets, self.reverse
        if tuple(hw) != tuple(self.hw):
            targets = [(resize(t, hw), resize(m, hw).clamp(0, 1)) for t, m in targets]
            sx, sy = (hw[1] - 1) / max(self.hw[1] - 1, 1), (hw[0] - 1) / max(self.hw[0] - 1, 1)
            # Python numbers: no small tensor copied to the device (and waited for).
            reverse = [(t, m, torch.stack((c[..., 0] * sx, c[..., 1] * sy), dim=-1))
                       for t, m, c in reverse]
        return warp.TemporalTerm([(t.to(device), m.to(device)) for t, m in targets],
                                 self.anim.params.temporal_weight,
                                 [tuple(v.to(device) for v in r) for r in reverse])

    def keep(self, image: Tensor) -> None:
        """The finest level's result, in the optimisation's space: the next frames' target."""
        if tuple(image.shape[-2:]) != tuple(self.hw):
            image = resize(image, self.hw)
        self.targets, self.reverse = [], []
        self.anim.remember(_Kept(self.index, self.rgb, image.detach()))

    # -- helpers ------------------------------------------------------------------------------

    def _tie(self, cur: np.ndarray, kept: _Kept, device: torch.device) -> tuple[Tensor, Tensor]:
        """``kept``'s result warped onto this frame, and where that is trusted."""
        image, back, fwd = self._flows(cur, kept, device)
        return warp.warp(image, back, "bicubic").clamp(0, 1), warp.consistency(back, fwd)

    def _tie_back(self, cur: np.ndarray, kept: _Kept, device: torch.device
                  ) -> tuple[Tensor, Tensor, Tensor]:
        """``kept``'s result in its own pixels, where that is trusted, and where each of its
        pixels lies in this frame (``warp.TemporalTerm``'s ``reverse``)."""
        image, back, fwd = self._flows(cur, kept, device)
        return image, warp.consistency(fwd, back), warp.coords(fwd)

    def _grey_of(self, kept: _Kept, cur: np.ndarray) -> np.ndarray:
        from .flow import grey  # noqa: PLC0415

        rgb = kept.rgb
        if rgb.shape[:2] != cur.shape:  # the working size changed between frames
            rgb = np.asarray(Image.fromarray(rgb).resize((cur.shape[1], cur.shape[0]),
                                                         Image.BICUBIC))
        return grey(rgb)

    def _compute_flows(self, cur: np.ndarray, kept: list[_Kept], device: torch.device) -> None:
        """The flows this frame <-> each of ``kept``: taken from the look-ahead when it
        computed them, the rest together (``Flow.many``); all uploaded in one copy."""
        ahead, self.anim.ahead = self.anim.ahead, None
        done = ahead.take(self.index, cur) if ahead is not None else {}
        greys = {k.index: self._grey_of(k, cur) for k in kept if k.index not in done}
        pairs = [p for g in greys.values() for p in ((cur, g), (g, cur))]
        flows = iter(self.anim.flow.many(pairs))
        done.update({i: (next(flows), next(flows)) for i in greys})
        order = [k.index for k in kept]
        moved = warp.upload([f for i in order for f in done[i]], device)
        self._flow_cache = {i: (moved[2 * n], moved[2 * n + 1]) for n, i in enumerate(order)}

    def _look_ahead(self, device: torch.device) -> None:
        """On a GPU, with the next frame known: its flows in a thread while this one runs."""
        if self.upcoming is None or device.type == "cpu":
            return
        h, w = self.hw
        nxt = np.asarray(self.upcoming.convert("RGB").resize((w, h), Image.BICUBIC))
        from .flow import grey  # noqa: PLC0415

        cur = grey(nxt)
        # What the next frame will keep: this one (nearest) and the kept ones it reaches.
        this = _Kept(self.index, self.rgb, torch.empty(0))
        kept = [this] + list(self.anim.kept) + ([self.anim.first] if self.anim.first else [])
        index = self.index + 1
        wanted = {index - j for j in BACK}
        if self.anim.loop_share(index) > 0:
            wanted.add(1)
        greys = {k.index: self._grey_of(k, cur) for k in kept if k.index in wanted}
        self.anim.ahead = _Ahead(index, cur, greys, self.anim.flow)

    def _flows(self, cur: np.ndarray, kept: _Kept, device: torch.device
               ) -> tuple[Tensor, Tensor, Tensor]:
        """``kept``'s result at this frame's size on ``device``, and the flows this frame ->
        ``kept`` and back (``_compute_flows`` made them)."""
        back, fwd = self._flow_cache[kept.index]
        image = kept.image.to(device)
        if tuple(image.shape[-2:]) != tuple(cur.shape):
            image = resize(image, cur.shape)
        return image, back, fwd


class _Ahead:
    """The next frame's flows, computed in a daemon thread (OpenCV releases the GIL) while
    the current frame optimises on a GPU; ``take`` waits for them."""

    def __init__(self, index: int, cur: np.ndarray, greys: dict[int, np.ndarray],
                 flow) -> None:
        self.index, self.cur, self.flows = index, cur, {}
        self.error: BaseException | None = None

        def work() -> None:
            try:
                for i, g in greys.items():
                    self.flows[i] = (flow(cur, g), flow(g, cur))
            except BaseException as e:  # noqa: BLE001 - the frame computes them again
                self.error = e
        self.thread = threading.Thread(target=work, daemon=True, name="nst-flow-ahead")
        self.thread.start()

    def take(self, index: int, cur: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The flows, if they are for frame ``index`` as it came (else none)."""
        self.thread.join()
        if self.error is not None or index != self.index or not np.array_equal(cur, self.cur):
            return {}
        return dict(self.flows)
