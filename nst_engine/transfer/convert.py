"""Images between PIL and torch: 8-bit pixels in, float ``[1, C, H, W]`` in [0, 1] inside,
8-bit out; the resize between pyramid levels, on whatever device the image is (or on the
host where that device lacks the operation: ``resize_on_host``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..imageio import has_alpha


def to_tensor(img: Image.Image) -> tuple[Tensor, Tensor | None]:
    """PIL image -> (RGB ``[1, 3, H, W]`` in [0, 1], alpha ``[1, 1, H, W]`` in [0, 1] or None)."""
    alpha = has_alpha(img)
    # Converted to float by torch, not by np.asarray(..., dtype=float32): numpy's path from a
    # PIL image to float takes ~2 s at 12 MP, torch's ~0.15 s, with the same float32 values.
    u8 = torch.from_numpy(np.array(img.convert("RGBA" if alpha else "RGB"))).permute(2, 0, 1)[None]

    def unit(t: Tensor) -> Tensor:
        return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    return unit(u8[:, :3]), (unit(u8[:, 3:]) if alpha else None)


def to_rgb_image(rgb: Tensor) -> Image.Image:
    """``[1, 3, H, W]`` in [0, 1] (on any device) -> an 8-bit RGB PIL image."""
    # Rounded in torch (the same float32 arithmetic as numpy's, several times faster at 12 MP),
    # where the image is: a GPU converts while the host would wait, and a quarter of the
    # bytes cross to the host.
    rgb8 = rgb[0].mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return Image.fromarray(rgb8.permute(1, 2, 0).contiguous().cpu().numpy(), "RGB")


def fill_transparent(rgb: Tensor, alpha: Tensor | None) -> tuple[Tensor, Tensor | None]:
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


#: The first torch whose MPS backend has bicubic upsampling (a Metal kernel, pytorch#136123;
#: before it ``aten::upsample_bicubic2d.out`` raises NotImplementedError on MPS).
MPS_BICUBIC_TORCH = (2, 6)


def resize_on_host(device: torch.device, down: bool,
                   version: tuple[int, int] | None = None) -> bool:
    """Whether a resize of an image on ``device`` must run on the host (the CPU).

    MPS: bicubic up needs torch >= 2.6; antialiased bilinear down (``_upsample_bilinear2d_aa``)
    was still missing from MPS in 2.6-2.7 (pytorch#141287) and no torch version with it was
    verified here, so down always runs on the host there. Both move the same pixels the CPU
    path computes, so the result is the CPU's; the cost is one copy each way per level.
    """
    if device.type != "mps":
        return False
    if down:
        return True
    from ..device.resolve import torch_version

    return (version or torch_version()) < MPS_BICUBIC_TORCH


def resize(t: Tensor, hw: tuple[int, int], wrap: bool = False) -> Tensor:
    """Bilinear with antialiasing down, bicubic up; clamped to [0, 1]. Returns a tensor on
    ``t``'s device.

    ``wrap`` (seamless): the image is a period of a repeating pattern, so the pixels past each
    border are those of the opposite side; the result is exactly one period of the resized
    pattern (``_wrap_borders``)."""
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    down = hw[0] * hw[1] < t.shape[-2] * t.shape[-1]
    if resize_on_host(t.device, down):
        return resize(t.cpu(), hw, wrap).to(t.device)
    out = F.interpolate(t, size=hw, mode="bilinear" if down else "bicubic",
                        align_corners=False, antialias=down)
    if wrap:
        _wrap_borders(out, t, cubic=not down)
    return out.clamp(0, 1)


#: Bicubic's constant in PyTorch's kernel (``upsample_bicubic2d``: Keys' cubic, a = -0.75).
_CUBIC_A = -0.75


def _taps(n: int, m: int, cubic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The source pixels and weights of each of ``m`` outputs when a side of ``n`` px is
    resized to ``m`` on a pattern that repeats every ``n`` px: ``(index [m, K] in [0, n),
    weight [m, K] float64, border [m] bool)``. ``border``: the outputs whose taps cross the
    side's ends, the only ones ``F.interpolate`` gets wrong there (it clamps the index, or
    cuts the antialiasing filter and renormalises).

    The same arithmetic as PyTorch's CPU and CUDA kernels (``align_corners=False``, the scale
    ``n / m``): bicubic samples at ``scale * (i + 0.5) - 0.5`` with 4 taps;
    antialiased bilinear (``_upsample_bilinear2d_aa``) spreads a triangle of half width
    ``max(scale, 1)`` around ``scale * (i + 0.5)`` over the pixels ``floor(c -+ support +
    0.5)`` and normalises it. Where the kernels truncate toward zero this floors: the taps
    past the start are the previous period's, as a pattern padded by whole periods has them.
    """
    scale = n / m
    i = torch.arange(m, dtype=torch.float64)
    if cubic:
        real = scale * (i + 0.5) - 0.5
        base = real.floor()
        t = real - base

        def near(x: Tensor) -> Tensor:  # |x| <= 1
            return ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1

        def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
            return ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A
        weight = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1)
        index = base.long()[:, None] + torch.arange(-1, 3)
    else:
        support = max(scale, 1.0)
        centre = scale * (i + 0.5)
        lo = (centre - support + 0.5).floor().long()
        hi = (centre + support + 0.5).floor().long()
        index = lo[:, None] + torch.arange(int((hi - lo).max()))
        weight = (1 - ((index - centre[:, None] + 0.5) / support).abs()).clamp(min=0)
        weight[index >= hi[:, None]] = 0
        weight /= weight.sum(1, keepdim=True)
    border = ((index < 0) | (index >= n)).any(1)
    return index.remainder(n), weight, border


def _gather(x: Tensor, dim: int, index: Tensor, weight: Tensor) -> Tensor:
    """Resample ``x`` along ``dim``: output ``i`` is ``sum_k weight[i, k] *
    x[index[i, k]]``. One pass over the output per tap; the output and one gathered copy
    are all it holds."""
    shape = [1] * x.dim()
    shape[dim] = index.shape[0]
    index, weight = index.to(x.device), weight.to(x.device, x.dtype)
    out = x.index_select(dim, index[:, 0]).mul_(weight[:, 0].view(shape))
    for k in range(1, index.shape[1]):
        out.addcmul_(x.index_select(dim, index[:, k]), weight[:, k].view(shape))
    return out


def _wrap_borders(out: Tensor, src: Tensor, cubic: bool) -> None:
    """Makes ``out`` (``F.interpolate`` of ``src``) one period of the resized repeating
    pattern, in place: only the outputs within the kernel's reach of a border differ, and
    those strips are resampled here from taps that wrap around (``_taps``), one side after
    the other (the kernels are separable). Holds the strips only: no padded copy of the image
    (a period's pad interpolated 9x the output when the sides share no factor, issue 31)."""
    (n_h, n_w), (m_h, m_w) = src.shape[-2:], out.shape[-2:]
    index_h, weight_h, border_h = _taps(n_h, m_h, cubic)
    index_w, weight_w, border_w = _taps(n_w, m_w, cubic)
    rows = border_h.nonzero().flatten()
    cols = border_w.nonzero().flatten()
    if len(rows):  # top and bottom strips: their source rows across the whole width
        used, inverse = index_h[rows].unique(return_inverse=True)
        strip = _gather(src.index_select(-2, used.to(src.device)), -1, index_w, weight_w)
        # index_copy_, not ``out[..., rows, :] =``: its index_put took a quarter of the time
        # of the whole resize (1001x1335 -> 512x688 on the CPU).
        out.index_copy_(-2, rows.to(out.device), _gather(strip, -2, inverse, weight_h[rows]))
    if len(cols):  # left and right strips, all rows (the corners again, the same values)
        # Their source columns picked once: a gather per tap across the whole image's rows
        # on the last dimension is the slow kind of gather on the CPU.
        used, inverse = index_w[cols].unique(return_inverse=True)
        picked = src.index_select(-1, used.to(src.device))
        strip = _gather(picked, -1, inverse, weight_w[cols])
        out.index_copy_(-1, cols.to(out.device), _gather(strip, -2, index_h, weight_h))
