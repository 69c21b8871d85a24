"""Warping by optical flow, the reliability masks and the temporal loss, in torch (they run
where the image is: CPU, CUDA or MPS).

After Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos" (GCPR 2016; IJCV 2018):

- ``warp(img, flow)``: ``out[p] = img[p + flow[p]]`` (bilinear), with ``flow`` from the frame
  ``out`` belongs to towards the frame ``img`` belongs to (``flow.Flow`` convention).
- ``consistency(back, fwd)``: 1 where the backward flow is trusted. A pixel is left out where the
  forward flow, followed back, does not cancel the backward flow (disocclusion:
  ``|w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5``), on motion boundaries
  (``|grad u|^2 + |grad v|^2 > 0.01 |w^|^2 + 0.002``) and where it points out of the frame.
- ``long_term(masks)``: the masks of frames further back keep only pixels that no nearer frame
  covers (``c_long(j) = max(c(j) - sum of nearer c, 0)``), so each pixel is tied to the nearest
  frame where it was visible.
- ``TemporalTerm``: ``sum_j sum_p c_j(p) |x(p) - w_j(p)|^2 / D`` (D = pixels x channels), the
  temporal loss of the paper's equation (3) with the long-term sum of (4).
- ``warping_error``: Lai et al. 2018's measure, the masked mean squared difference between a
  frame and the next one warped back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: The paper's constants for the forward-backward check and the motion boundaries.
DISOCCLUSION = (0.01, 0.5)
MOTION_BOUNDARY = (0.01, 0.002)
#: Rejected pixels grow by this many px: DIS's flow is smooth across a motion edge, so a thin
#: disoccluded strip passes the check in part without it (a 3 px strip: 20-30 % of it on the
#: synthetic clips of tests/test_animation.py; with it, under 4 %).
MARGIN = 1


def flow_tensor(flow: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
    """``[H, W, 2]`` (numpy, as ``flow.Flow`` gives) -> ``[1, 2, H, W]`` float32 on ``device``."""
    if isinstance(flow, Tensor):
        t = flow if flow.dim() == 4 else flow.permute(2, 0, 1)[None]
    else:
        t = torch.from_numpy(np.ascontiguousarray(flow)).permute(2, 0, 1)[None]
    return t.to(device=device, dtype=torch.float32)


def _grid(flow: Tensor) -> Tensor:
    """Sampling grid for ``grid_sample`` (align_corners=True): pixel + flow, in [-1, 1]."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack((x, y), dim=-1)


def warp(img: Tensor, flow: Tensor, mode: str = "bilinear") -> Tensor:
    """``img`` ``[N, C, H, W]`` sampled at ``p + flow[p]`` (``mode`` as ``grid_sample``'s;
    edge pixels repeat outside, and ``in_frame`` says where that happened)."""
    grid = _grid(flow.to(img.device))
    return F.grid_sample(img.float(), grid, mode=mode, padding_mode="border",
                         align_corners=True)


def in_frame(flow: Tensor) -> Tensor:
    """``[1, 1, H, W]``: 1 where ``p + flow[p]`` lies inside the frame."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return inside[:, None].float()


def consistency(back: Tensor, fwd: Tensor, margin: int = MARGIN) -> Tensor:
    """``[1, 1, H, W]`` mask (1 = trusted) for warping a frame ``b`` onto a frame ``a`` with
    ``back`` = flow(a -> b), checked against ``fwd`` = flow(b -> a); both ``[1, 2, H, W]``.
    ``margin`` px around every rejected pixel are rejected too."""
    fwd_back = warp(fwd, back)  # w~: the forward flow at the point each pixel comes from
    s = fwd_back + back
    sq = lambda t: (t * t).sum(dim=1, keepdim=True)  # noqa: E731
    a, b = DISOCCLUSION
    disoccluded = sq(s) > a * (sq(fwd_back) + sq(back)) + b
    du_x, du_y = _gradients(back[:, :1])
    dv_x, dv_y = _gradients(back[:, 1:])
    grad = du_x ** 2 + du_y ** 2 + dv_x ** 2 + dv_y ** 2
    a, b = MOTION_BOUNDARY
    boundary = grad > a * sq(back) + b
    trusted = (~disoccluded & ~boundary).float() * in_frame(back)
    if margin:  # the pixels next to a rejected one go too (DIS blurs the flow across edges)
        k = 2 * margin + 1
        trusted = -F.max_pool2d(-trusted, k, stride=1, padding=margin)
    return trusted


def _gradients(t: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (one-sided at the edges) of ``[1, 1, H, W]``."""
    gx = torch.zeros_like(t)
    gy = torch.zeros_like(t)
    if t.shape[-1] > 2:
        gx[..., 1:-1] = (t[..., 2:] - t[..., :-2]) * 0.5
    if t.shape[-1] > 1:
        gx[..., 0] = t[..., 1] - t[..., 0]
        gx[..., -1] = t[..., -1] - t[..., -2]
    if t.shape[-2] > 2:
        gy[..., 1:-1, :] = (t[..., 2:, :] - t[..., :-2, :]) * 0.5
    if t.shape[-2] > 1:
        gy[..., 0, :] = t[..., 1, :] - t[..., 0, :]
        gy[..., -1, :] = t[..., -1, :] - t[..., -2, :]
    return gx, gy


def long_term(masks: Sequence[Tensor]) -> list[Tensor]:
    """Masks nearest frame first -> each keeps only what no nearer one covers."""
    out, covered = [], None
    for m in masks:
        out.append(m if covered is None else (m - covered).clamp(min=0.0))
        covered = m if covered is None else covered + m
    return out


class TemporalTerm:
    """The temporal loss against warped earlier results, at one level's size.

    ``targets``: ``(warped result, mask)`` pairs ``[1, C, H, W]`` / ``[1, 1, H, W]``, all of one
    size; ``weight`` multiplies the sum. ``reverse``: ``(result, mask, coords)`` of earlier
    frames in their own pixels, tied the other way round: the image is sampled at ``coords``
    (``[1, h, w, 2]``, (x, y) in its pixels: where each of their pixels went) and compared
    there, so a pixel the earlier frame shows and this one hides behind a flow the check
    rejected is tied too (the warping error measures both ways). ``crop`` gives the term of
    one tile.
    """

    def __init__(self, targets: Sequence[tuple[Tensor, Tensor]], weight: float,
                 reverse: Sequence[tuple[Tensor, Tensor, Tensor]] = ()) -> None:
        self.targets = [(t.detach().float(), m.detach().float()) for t, m in targets]
        self.reverse = [(t.detach().float(), m.detach().float(), c.detach().float())
                        for t, m, c in reverse]
        self.weight = float(weight)

    def crop(self, ys: slice, xs: slice, device: torch.device | None = None) -> "TemporalTerm":
        def cut(t: Tensor) -> Tensor:
            t = t[..., ys, xs]
            return t if device is None else t.to(device)

        def move(t: Tensor) -> Tensor:
            return t if device is None else t.to(device)
        reverse = []
        for target, mask, coords in self.reverse:
            y0, x0 = ys.start or 0, xs.start or 0
            local = coords - coords.new_tensor([x0, y0])
            h, w = ys.stop - y0, xs.stop - x0
            inside = ((local[..., 0] >= 0) & (local[..., 0] <= w - 1) & (local[..., 1] >= 0)
                      & (local[..., 1] <= h - 1))
            reverse.append((move(target), move(mask * inside[:, None].float()), move(local)))
        return TemporalTerm([(cut(t), cut(m)) for t, m in self.targets], self.weight, reverse)

    def __call__(self, img: Tensor) -> Tensor:
        x = img.float()
        d = x.shape[1] * x.shape[2] * x.shape[3]
        total = x.new_zeros(())
        for target, mask in self.targets:
            total = total + (mask * (x - target).pow(2)).sum() / d
        h, w = x.shape[-2:]
        for target, mask, coords in self.reverse:
            grid = torch.stack((coords[..., 0] * (2.0 / max(w - 1, 1)) - 1.0,
                                coords[..., 1] * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
            seen = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                 align_corners=True)
            total = total + (mask * (seen - target).pow(2)).sum() / d
        return self.weight * total


def coords(flow: Tensor) -> Tensor:
    """``[1, H, W, 2]``: where each pixel goes by ``flow`` ``[1, 2, H, W]``, (x, y) in px."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    return torch.stack((xs + flow[:, 0], ys + flow[:, 1]), dim=-1)


def warping_error(a: Tensor, b_warped: Tensor, mask: Tensor) -> float:
    """Lai et al.'s warping error of one frame pair: ``sum M |a - w(b)|^2 / sum M`` (squared
    differences summed over channels, images in [0, 1]); 0 when nothing is trusted."""
    m = mask.float()
    n = float(m.sum())
    if n <= 0:
        return 0.0
    return float((m * (a.float() - b_warped.float()).pow(2).sum(dim=1, keepdim=True)).sum()) / n
