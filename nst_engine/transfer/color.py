"""Colour preservation by luminance-only transfer (Gatys et al. 2016, "Preserving Color in
Neural Artistic Style Transfer", section 3).

The optimisation runs on greyscale images: the content's luminance, and the style's luminance
shifted and scaled to the content's mean and standard deviation (so the style brings texture,
not a brightness change). The result's luminance is then recombined with the content's own
chroma (YIQ), so the colours are the content's by construction.
"""

from __future__ import annotations

import torch
from torch import Tensor

# NTSC YIQ, the colour space the paper uses.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.595716, -0.274453, -0.321263],
                            [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: Tensor, img: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(img), img)


def rgb_to_yiq(img: Tensor) -> Tensor:
    """``[N, 3, H, W]`` RGB in [0, 1] to YIQ (Y in [0, 1])."""
    return _apply(_RGB_TO_YIQ, img)


def yiq_to_rgb(img: Tensor) -> Tensor:
    return _apply(_YIQ_TO_RGB, img)


def luminance(img: Tensor) -> Tensor:
    """The Y channel as a grey RGB image (3 equal channels), which VGG takes as input."""
    return rgb_to_yiq(img)[:, :1].expand(-1, 3, -1, -1).contiguous()


def _masked_stats(y: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    vals = y.reshape(-1) if mask is None else y.reshape(-1)[mask.reshape(-1) >= 0.5]
    if vals.numel() < 2:
        vals = y.reshape(-1)
    return vals.mean(), vals.std()


def matched_style_luminance(style: Tensor, content: Tensor,
                            style_mask: Tensor | None = None) -> Tensor:
    """The style's luminance with the content's mean and std, as a grey RGB image.

    ``style_mask`` (alpha in [0, 1], ``[1, 1, H, W]`` at the style's size) keeps transparent
    pixels out of the statistics.
    """
    ys = rgb_to_yiq(style)[:, :1]
    yc = rgb_to_yiq(content)[:, :1]
    mu_s, sd_s = _masked_stats(ys, style_mask)
    mu_c, sd_c = _masked_stats(yc, None)
    y = ((ys - mu_s) * (sd_c / (sd_s + 1e-6)) + mu_c).clamp(0, 1)
    return y.expand(-1, 3, -1, -1).contiguous()


def recombine(result: Tensor, content: Tensor) -> Tensor:
    """The result's luminance with the content's chroma, as RGB in [0, 1]."""
    y = rgb_to_yiq(result)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0, 1)
