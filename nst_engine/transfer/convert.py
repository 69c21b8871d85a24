"""Images between PIL and torch: 8-bit pixels in, float ``[1, C, H, W]`` in [0, 1] inside,
8-bit out; the resize between pyramid levels, on whatever device the image is (or on the
host where that device lacks the operation: ``resize_on_host``)."""

from __future__ import annotations

import math

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
    pattern (``wrap_margin``: pad circularly, resize, crop)."""
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    down = hw[0] * hw[1] < t.shape[-2] * t.shape[-1]
    if resize_on_host(t.device, down):
        return resize(t.cpu(), hw, wrap).to(t.device)
    if wrap:
        (h, w), (oh, ow) = t.shape[-2:], hw
        ph, qh = wrap_margin(h, oh)
        pw, qw = wrap_margin(w, ow)
        padded = F.pad(t, (pw, pw, ph, ph), mode="circular")
        out = F.interpolate(padded, size=(oh + 2 * qh, ow + 2 * qw),
                            mode="bilinear" if down else "bicubic", align_corners=False,
                            antialias=down)
        return out[..., qh:qh + oh, qw:qw + ow].clamp(0, 1)
    out = F.interpolate(t, size=hw, mode="bilinear" if down else "bicubic",
                        align_corners=False, antialias=down)
    return out.clamp(0, 1)


def wrap_margin(n: int, m: int) -> tuple[int, int]:
    """``(p, q)``: pad a side of ``n`` px by ``p`` on each end so that resized to ``m`` it
    gains exactly ``q = p * m / n`` (whole) px each end: the padded image's resize then maps
    every pixel as the unpadded one does, shifted by ``q``. ``p`` covers the kernel's reach
    (bicubic: 2 px; antialiased down: 2 px scaled by ``n / m``), in steps of ``n / gcd(n, m)``
    (the smallest pad with a whole ``q``), at most ``n`` (one whole period)."""
    step = n // math.gcd(n, m)
    need = math.ceil(2 * max(1.0, n / m)) + 1
    p = min(n, step * math.ceil(need / step))
    return p, p * m // n
