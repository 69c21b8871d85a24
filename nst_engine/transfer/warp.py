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

Where each runs (issue 31): ``grid_sample`` with border padding or bicubic is refused by the
MPS grid sampler of every released torch this was written against (pytorch#174343), and it has
no MPS backward (pytorch#179756): ``warp_device`` sends the once-per-frame warps and masks of an
MPS run to the host. The reverse term differentiates a bilinear sample at every step; on CUDA
``grid_sample``'s backward adds with atomics (a seed would not repeat) and on MPS it has none,
so there it is a ``BilinearMap`` (indices + weights; its backward a gather on the transposed
map, in passes whose indices are unique: no atomics, the same sums every run).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..device.resolve import torch_version

#: The paper's constants for the forward-backward check and the motion boundaries.
DISOCCLUSION = (0.01, 0.5)
MOTION_BOUNDARY = (0.01, 0.002)
#: Rejected pixels grow by this many px: DIS's flow is smooth across a motion edge, so a thin
#: disoccluded strip passes the check in part without it (a 3 px strip: 20-30 % of it on the
#: synthetic clips of tests/test_animation.py; with it, under 4 %).
MARGIN = 1
#: The first torch whose MPS grid sampler takes border padding and bicubic and has a backward.
#: None: no release was known to have pytorch#174343 and #179756 when this was written, so MPS
#: is treated as lacking them (set it once a release is verified on a Mac).
MPS_GRID_SAMPLE_TORCH: tuple[int, int] | None = None


def grid_sample_works(device: torch.device, version: tuple[int, int] | None = None) -> bool:
    """Whether ``grid_sample`` (border padding, bicubic, backward) runs on ``device``."""
    if device.type != "mps":
        return True
    return MPS_GRID_SAMPLE_TORCH is not None and \
        (version or torch_version()) >= MPS_GRID_SAMPLE_TORCH


def warp_device(device: torch.device, version: tuple[int, int] | None = None) -> torch.device:
    """Where an animation frame's warps and masks run: ``device``, or the host where its grid
    sampler refuses them (MPS; the results, 3-4 images a frame, then travel to the device)."""
    return device if grid_sample_works(device, version) else torch.device("cpu")


def reverse_by_gather(device: torch.device) -> bool:
    """Whether the reverse term samples by ``BilinearMap`` on ``device``: on CUDA (no atomics in
    its backward, so a seed repeats) and MPS (``grid_sample`` has no backward there). The CPU
    keeps ``grid_sample``: its backward is serial there (repeats) and it is faster
    (``benchmarks/bench_animation.py --sampler``: the figures in its doc)."""
    return device.type in ("cuda", "mps")


def upload(flows: Sequence[np.ndarray], device: torch.device) -> list[Tensor]:
    """``[H, W, 2]`` numpy flows -> ``[1, 2, H, W]`` float32 tensors on ``device``, in one
    copy; on CUDA from pinned memory without waiting (a pageable copy would stop the host
    until it is done, once per flow)."""
    host = torch.from_numpy(np.ascontiguousarray(np.stack(flows), dtype=np.float32))
    host = host.permute(0, 3, 1, 2).contiguous()
    if device.type == "cuda":
        moved = _copy(host.pin_memory(), device, True)
    else:
        moved = _copy(host, device, False)
    return [moved[i:i + 1] for i in range(len(flows))]


def _copy(host: Tensor, device: torch.device, non_blocking: bool) -> Tensor:
    return host.to(device, non_blocking=non_blocking)


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
    if not grid_sample_works(img.device):  # MPS: on the host, the same pixels the CPU gives
        return warp(img.cpu(), flow.cpu(), mode).to(img.device)
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


class BilinearMap:
    """Bilinear sampling of ``[1, C, H, W]`` images at ``coords`` (``[1, h, w, 2]``, (x, y) in
    px, clamped to the frame: ``grid_sample``'s border padding with align_corners=True) as the
    4 source indices and weights of each output pixel, made once and applied by a gather.

    Its backward (``sample``'s, through ``_Sample``) is the transposed map: the entries sorted
    by source pixel and split into passes by their rank among their source's entries, so each
    pass adds into distinct pixels (``index_add_`` without two writes to one place: no atomic
    races on CUDA, the same sums in the same order every run). ``mask`` (``[1, 1, h, w]``)
    leaves out the entries of output pixels whose gradient is zero (masked out of the loss).
    """

    def __init__(self, coords: Tensor, hw: tuple[int, int], mask: Tensor | None = None) -> None:
        h, w = hw
        c = coords.detach().reshape(-1, 2)  # float32 in the engine; float64 in tests
        x, y = c[:, 0].clamp(0, w - 1), c[:, 1].clamp(0, h - 1)
        x0, y0 = x.floor().clamp(max=max(w - 2, 0)), y.floor().clamp(max=max(h - 2, 0))
        fx, fy = x - x0, y - y0
        x0i, y0i = x0.long(), y0.long()
        x1i, y1i = (x0i + 1).clamp(max=w - 1), (y0i + 1).clamp(max=h - 1)
        self.hw, self.out = (h, w), tuple(coords.shape[1:3])
        self.index = torch.stack((y0i * w + x0i, y0i * w + x1i, y1i * w + x0i, y1i * w + x1i))
        self.weight = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy))
        # The transposed map, for the backward: only entries that carry a gradient.
        q = self.index.shape[1]
        carry = self.weight > 0
        if mask is not None:
            carry &= mask.detach().reshape(1, -1) > 0
        dst = torch.arange(q, device=c.device).expand(4, q)[carry]
        src, wts = self.index[carry], self.weight[carry]
        order = torch.sort(src, stable=True).indices
        src, dst, wts = src[order], dst[order], wts[order]
        n = src.numel()
        pos = torch.arange(n, device=c.device)
        first = torch.ones(n, dtype=torch.bool, device=c.device)
        first[1:] = src[1:] != src[:-1]
        rank = pos - torch.cummax(torch.where(first, pos, 0), 0).values
        order = torch.sort(rank, stable=True).indices
        counts = torch.bincount(rank).tolist() if n else []
        src, dst, wts = src[order], dst[order], wts[order]
        self.passes, at = [], 0
        for k in counts:  # rank r: the r-th entry of every source that has one; all distinct
            self.passes.append((src[at:at + k], dst[at:at + k], wts[at:at + k]))
            at += k

    def to(self, device: torch.device) -> "BilinearMap":
        """The map on ``device`` (built on the host for MPS: its sort and cummax vary there)."""
        m = object.__new__(BilinearMap)
        m.hw, m.out = self.hw, self.out
        m.index, m.weight = self.index.to(device), self.weight.to(device)
        m.passes = [tuple(t.to(device) for t in p) for p in self.passes]
        return m

    def apply(self, flat: Tensor) -> Tensor:
        """``[C, H*W]`` -> ``[C, h*w]`` (no autograd of its own: ``sample`` gives it one)."""
        c = flat.shape[0]
        picked = flat.index_select(1, self.index.reshape(-1)).view(c, 4, -1)
        return (picked * self.weight).sum(dim=1)

    def transpose(self, grad: Tensor) -> Tensor:
        """``[C, h*w]`` -> ``[C, H*W]``: the adjoint of ``apply`` on the carried entries."""
        out = grad.new_zeros(grad.shape[0], self.hw[0] * self.hw[1])
        for src, dst, wts in self.passes:
            out.index_add_(1, src, grad.index_select(1, dst) * wts)
        return out

    def sample(self, img: Tensor) -> Tensor:
        """``img`` ``[1, C, H, W]`` sampled: ``[1, C, h, w]``, differentiable in ``img``."""
        c = img.shape[1]
        out = _Sample.apply(img.reshape(c, -1), self)
        return out.view(1, c, *self.out)


class _Sample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat: Tensor, bmap: BilinearMap) -> Tensor:  # noqa: D102
        ctx.bmap = bmap
        return bmap.apply(flat)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return ctx.bmap.transpose(grad.contiguous()), None


class TemporalTerm:
    """The temporal loss against warped earlier results, at one level's size.

    ``targets``: ``(warped result, mask)`` pairs ``[1, C, H, W]`` / ``[1, 1, H, W]``, all of one
    size; ``weight`` multiplies the sum. ``reverse``: ``(result, mask, coords)`` of earlier
    frames in their own pixels, tied the other way round: the image is sampled at ``coords``
    (``[1, h, w, 2]``, (x, y) in its pixels: where each of their pixels went) and compared
    there, so a pixel the earlier frame shows and this one hides behind a flow the check
    rejected is tied too (the warping error measures both ways). ``crop`` gives the term of
    one tile. ``gather``: sample by ``BilinearMap`` (None: ``reverse_by_gather`` of the
    device the term is used on).
    """

    def __init__(self, targets: Sequence[tuple[Tensor, Tensor]], weight: float,
                 reverse: Sequence[tuple[Tensor, Tensor, Tensor]] = (),
                 gather: bool | None = None) -> None:
        self.targets = [(t.detach().float(), m.detach().float()) for t, m in targets]
        self.reverse = [(t.detach().float(), m.detach().float(), c.detach().float())
                        for t, m, c in reverse]
        self.weight = float(weight)
        self.gather = gather
        self._maps: dict[int, BilinearMap] = {}  # per reverse term, made on first use

    def crop(self, ys: slice, xs: slice, device: torch.device | None = None) -> "TemporalTerm":
        def cut(t: Tensor) -> Tensor:
            t = t[..., ys, xs]
            return t if device is None else t.to(device)

        def move(t: Tensor) -> Tensor:
            return t if device is None else t.to(device)
        reverse = []
        for target, mask, coords in self.reverse:
            y0, x0 = ys.start or 0, xs.start or 0
            # Python numbers, not a tensor: no host-to-device copy (and wait) per tile.
            local = torch.stack((coords[..., 0] - x0, coords[..., 1] - y0), dim=-1)
            h, w = ys.stop - y0, xs.stop - x0
            inside = ((local[..., 0] >= 0) & (local[..., 0] <= w - 1) & (local[..., 1] >= 0)
                      & (local[..., 1] <= h - 1))
            reverse.append((move(target), move(mask * inside[:, None].float()), move(local)))
        return TemporalTerm([(cut(t), cut(m)) for t, m in self.targets], self.weight, reverse,
                            self.gather)

    def _map(self, i: int, coords: Tensor, mask: Tensor, hw: tuple[int, int]) -> BilinearMap:
        bmap = self._maps.get(i)
        if bmap is None or bmap.hw != tuple(hw):
            if coords.device.type == "mps":  # made on the host (sort, cummax), used there
                bmap = BilinearMap(coords.cpu(), hw, mask.cpu()).to(coords.device)
            else:
                bmap = BilinearMap(coords, hw, mask)
            self._maps[i] = bmap
        return bmap

    def __call__(self, img: Tensor) -> Tensor:
        x = img.float()
        d = x.shape[1] * x.shape[2] * x.shape[3]
        total = x.new_zeros(())
        for target, mask in self.targets:
            total = total + (mask * (x - target).pow(2)).sum() / d
        h, w = x.shape[-2:]
        gather = reverse_by_gather(x.device) if self.gather is None else self.gather
        for i, (target, mask, coords) in enumerate(self.reverse):
            if gather:
                seen = self._map(i, coords, mask, (h, w)).sample(x)
            else:
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
