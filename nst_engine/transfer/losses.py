"""Content, style and total-variation losses as small ``nn.Module``s.

Every loss is *relative*: the squared error divided by the squared size of its target. That
makes the weights in ``StyleParams`` independent of the image size, of the layer and of the
weights' preprocessing (Caffe features are ~50x larger than torchvision's), so one preset works
for both weight files. Losses are computed in float32 even when the features come from a
reduced-precision forward pass.

Style losses are built from the style images' features once per pyramid level. Several styles
are blended into one target; transparent style pixels (alpha < 0.5) are left out of every
statistic, using the alpha mask downsampled to each layer's size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = 1e-12
#: Style pixels kept per layer for sliced Wasserstein (sorting cost and memory stay bounded).
SW_MAX_PIXELS = 1 << 16


def opaque_pixels(feat: Tensor, mask: Tensor | None) -> Tensor:
    """The feature columns of the counted pixels: ``[C, N]`` (float32).

    ``mask`` is the style's alpha in [0, 1], ``[1, 1, h, w]`` at image size; it is averaged
    down to the layer's size, and a layer pixel counts when at least half of it is opaque.
    """
    c = feat.shape[1]
    cols = feat.detach().float().reshape(c, -1)
    if mask is None:
        return cols
    # Area averaging is adaptive average pooling, which MPS refuses for sizes that do not
    # divide ("input sizes must be divisible by output sizes"): there the mask is averaged on
    # the host (once per level, a few kB).
    src = mask.float().cpu() if mask.device.type == "mps" else mask.float()
    cover = F.interpolate(src, size=feat.shape[-2:], mode="area").reshape(-1)
    keep = cover >= 0.5
    if not bool(keep.any()):  # a small opaque area can vanish at deep layers: keep its core
        keep = cover >= cover.max() * 0.5
    return cols[:, keep.to(cols.device)]


def _normalised(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    return [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)


class ContentLoss(nn.Module):
    """Relative mean squared error between features and the content's features."""

    def __init__(self, target: Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target.detach().float())
        self.scale = float(self.target.pow(2).mean()) + _EPS

    def forward(self, feat: Tensor) -> Tensor:
        return mean_square(feat.float() - self.target) / self.scale


class _MeanSquare(torch.autograd.Function):
    """``d.pow(2).mean()`` with its gradient in ``d``'s layout. Autograd's own comes back in
    the default layout from channels-last features (the mean's expanded gradient is the
    product's first factor), and the convolution's backward then reorders it: its input
    gradient at ``relu4_2`` of a 512 px image took 8 % longer in float32, 50 % in bfloat16
    (CPU, oneDNN)."""

    @staticmethod
    def forward(ctx, d: Tensor) -> Tensor:
        ctx.save_for_backward(d)
        return d.pow(2).mean()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (d,) = ctx.saved_tensors
        return d * (grad * (2.0 / d.numel()))


def mean_square(d: Tensor) -> Tensor:
    """The mean of ``d``'s squares, differentiable with a gradient in ``d``'s layout."""
    return _MeanSquare.apply(d)


class _SelfProduct(torch.autograd.Function):
    """``cols @ cols.T`` with a one-product backward.

    Autograd would differentiate the two factors separately (two ``[C, C] x [C, N]`` products
    and a sum); the gradient is ``(dG + dG.T) @ cols``, one product. It is returned in the
    layout of ``cols`` (channels-last features give ``[C, N]`` with strides ``(1, C)``), so it
    adds to the convolution's gradient without a copy.
    """

    @staticmethod
    def forward(ctx, cols: Tensor) -> Tensor:
        ctx.save_for_backward(cols)
        return cols @ cols.t()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (cols,) = ctx.saved_tensors
        sym = grad + grad.t()
        if cols.stride(0) == 1 and cols.shape[1] > 1:
            return (cols.t() @ sym).t()  # = sym @ cols, as sym is symmetric
        return sym @ cols


def self_product(cols: Tensor) -> Tensor:
    """``cols @ cols.T`` for ``[C, N]`` columns, differentiable with one product."""
    return _SelfProduct.apply(cols)


def gram(feat: Tensor) -> Tensor:
    """Gram matrix normalised by C*H*W, so its size does not depend on the image size."""
    c = feat.shape[1]
    cols = feat.float().reshape(c, -1)
    return self_product(cols) / cols.numel()


class GramLoss(nn.Module):
    """Gatys et al.: match the (blended) Gram matrix of the style features."""

    def __init__(self, feats: Sequence[Tensor], masks: Sequence[Tensor | None],
                 blend: Sequence[float]) -> None:
        super().__init__()
        target = 0
        for f, m, w in zip(feats, masks, _normalised(blend)):
            cols = opaque_pixels(f, m)
            target = target + w * (cols @ cols.t()) / cols.numel()
        self.register_buffer("target", target)
        self.scale = float(target.pow(2).mean()) + _EPS

    def forward(self, feat: Tensor) -> Tensor:
        return (gram(feat) - self.target).pow(2).mean() / self.scale


def _mean_cov(cols: Tensor) -> tuple[Tensor, Tensor]:
    mean = cols.mean(dim=1)
    centred = cols - mean[:, None]
    return mean, self_product(centred) / cols.shape[1]


class MeanCovLoss(nn.Module):
    """Match the mean and covariance of the features (first and second moments).

    Several styles blend as a mixture: the target is the mean and covariance of the union of
    their pixels, each style weighted by its blend weight.
    """

    def __init__(self, feats: Sequence[Tensor], masks: Sequence[Tensor | None],
                 blend: Sequence[float]) -> None:
        super().__init__()
        mean, second = 0, 0
        for f, m, w in zip(feats, masks, _normalised(blend)):
            mu, cov = _mean_cov(opaque_pixels(f, m))
            mean = mean + w * mu
            second = second + w * (cov + torch.outer(mu, mu))
        cov = second - torch.outer(mean, mean)
        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)
        self.mean_scale = float(mean.pow(2).mean()) + _EPS
        self.cov_scale = float(cov.pow(2).mean()) + _EPS

    def forward(self, feat: Tensor) -> Tensor:
        mu, cov = _mean_cov(feat.float().reshape(feat.shape[1], -1))
        return ((mu - self.mean).pow(2).mean() / self.mean_scale
                + (cov - self.cov).pow(2).mean() / self.cov_scale)


def direction_generator(device: torch.device, seed: int,
                        host: torch.Generator) -> torch.Generator:
    """The generator of sliced Wasserstein's directions for a run on ``device``.

    The directions are drawn anew every step for every layer: drawn on the host they would be
    copied to the device with a wait each time. So they come from a generator on the device,
    seeded with the run's seed: the same seed gives the same directions on the same kind of
    device (a CUDA generator's numbers are not the CPU's). On the CPU it is the run's own
    generator, as before, so CPU results do not change. A torch without a generator for the
    device keeps the host's (and its copies).
    """
    if device.type == "cpu":
        return host
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except RuntimeError:
        return host


def random_directions(channels: int, count: int, generator: torch.Generator | None,
                      device: torch.device) -> Tensor:
    """``count`` random unit vectors in ``channels`` dimensions, ``[channels, count]``, on
    ``device``: drawn on the generator's device (no copy when that is ``device``)."""
    gen_device = generator.device if generator is not None else device
    dirs = torch.randn(channels, count, generator=generator, device=gen_device)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    return dirs if dirs.device == device else dirs.to(device)


class SlicedWassersteinLoss(nn.Module):
    """Match the feature distribution along random directions (Heitz et al. 2021).

    Each call projects the generated and the style features onto fresh random unit directions,
    sorts both and compares them quantile by quantile; the style's sorted projections are
    resampled to the generated image's pixel count, so the two may differ in size. Several
    styles blend by pooling pixels drawn in proportion to their weights. The style's pixels
    are picked with ``generator``; the directions come from ``draws`` (default: the same),
    which lives where the image does (``direction_generator``).
    """

    def __init__(self, feats: Sequence[Tensor], masks: Sequence[Tensor | None],
                 blend: Sequence[float], generator: torch.Generator | None = None,
                 directions: int | None = None,
                 draws: torch.Generator | None = None) -> None:
        super().__init__()
        pools = [opaque_pixels(f, m) for f, m in zip(feats, masks)]
        total = min(SW_MAX_PIXELS, max(p.shape[1] for p in pools))
        gen_device = generator.device if generator is not None else torch.device("cpu")
        picked = []
        for cols, w in zip(pools, _normalised(blend)):
            n = max(1, round(w * total)) if w > 0 else 0
            if n == 0:
                continue
            if n <= cols.shape[1]:
                idx = torch.randperm(cols.shape[1], generator=generator, device=gen_device)[:n]
            else:
                idx = torch.randint(cols.shape[1], (n,), generator=generator, device=gen_device)
            picked.append(cols[:, idx.to(cols.device)])
        self.register_buffer("style", torch.cat(picked, dim=1))
        self.generator = generator
        self.draws = draws if draws is not None else generator
        self.directions = directions or self.style.shape[0]
        self.scale = float(self.style.pow(2).mean()) + _EPS

    def forward(self, feat: Tensor) -> Tensor:
        c = feat.shape[1]
        cols = feat.float().reshape(c, -1)
        dirs = random_directions(c, self.directions, self.draws, cols.device)
        mine = torch.sort(cols.t() @ dirs, dim=0).values            # [N, P]
        theirs = torch.sort(self.style.t() @ dirs, dim=0).values    # [M, P]
        if theirs.shape[0] != mine.shape[0]:
            # Quantile resampling: linear interpolation along the sorted axis.
            theirs = F.interpolate(theirs.t()[None], size=mine.shape[0], mode="linear",
                                   align_corners=True)[0].t()
        return (mine - theirs).pow(2).mean() / self.scale


STYLE_LOSSES = {"gram": GramLoss, "mean_cov": MeanCovLoss,
                "sliced_wasserstein": SlicedWassersteinLoss}


def make_style_loss(kind: str, feats: Sequence[Tensor], masks: Sequence[Tensor | None],
                    blend: Sequence[float], generator: torch.Generator | None = None,
                    draws: torch.Generator | None = None) -> nn.Module:
    """The style loss of one layer, from each style's features, alpha mask and blend weight
    (``generator``: the host's, for one-off picks; ``draws``: the device's, for per-step
    draws)."""
    if kind not in STYLE_LOSSES:
        raise ValueError(f"unknown style loss {kind!r}; choose one of {sorted(STYLE_LOSSES)}")
    if kind == "sliced_wasserstein":
        return SlicedWassersteinLoss(feats, masks, blend, generator=generator, draws=draws)
    return STYLE_LOSSES[kind](feats, masks, blend)


class TVLoss(nn.Module):
    """Total variation: mean squared difference of neighbouring pixels (smoothness).

    ``wrap`` (seamless): the last row and column neighbour the first, so the differences
    across the border count like any other."""

    def __init__(self, wrap: bool = False) -> None:
        super().__init__()
        self.wrap = wrap

    def forward(self, img: Tensor) -> Tensor:
        if self.wrap:
            dy = (img.roll(-1, dims=-2) - img).pow(2).mean()
            dx = (img.roll(-1, dims=-1) - img).pow(2).mean()
            return dx + dy
        dy = (img[..., 1:, :] - img[..., :-1, :]).pow(2).mean()
        dx = (img[..., :, 1:] - img[..., :, :-1]).pow(2).mean()
        return dx + dy
