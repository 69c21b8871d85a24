"""Padding that wraps around the image's borders, for VGG's 3x3 convolutions (seamless tiles).

Every convolution pads 1 px; with wrapping, that pixel is the opposite border's. PyTorch's
``padding_mode="circular"`` pads with ``F.pad``, which returns the default layout for a
channels-last input (the layout the engine runs in), and concatenating slices copies the whole
activation twice per convolution: 28-100 % slower than zero padding on the CPU. Here the pad is
fused into the ReLU before each convolution: the ReLU writes its result straight into the
interior of a padded buffer (the pass it makes anyway), and only the 1 px border is copied.
``wrap_pad`` (no ReLU) serves the image and the pooled activations, which are 4x smaller or more.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _padded_like(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    fmt = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
           and not x.is_contiguous() else torch.contiguous_format)
    return torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=fmt)


def _fill_border(y: Tensor) -> None:
    """Sets ``y``'s 1 px border from its interior, wrapping (rows first; the columns then
    carry the corners)."""
    y[..., 0, 1:-1] = y[..., -2, 1:-1]
    y[..., -1, 1:-1] = y[..., 1, 1:-1]
    y[..., :, 0] = y[..., :, -2]
    y[..., :, -1] = y[..., :, 1]


def _add_border_grads(gx: Tensor, g: Tensor, relu_out: Tensor | None = None) -> None:
    """Adds the gradient that reached the padded border (``g``, padded) to the pixels it was
    copied from (``gx``, unpadded, in place); ``relu_out`` (unpadded): where a ReLU before the
    pad was off (0), the gradient stops."""
    def add(target: tuple, source: Tensor) -> None:
        if relu_out is not None:
            source = source * (relu_out[target] > 0)
        gx[target] += source
    e = Ellipsis
    add((e, -1, slice(None)), g[..., 0, 1:-1])
    add((e, 0, slice(None)), g[..., -1, 1:-1])
    add((e, slice(None), -1), g[..., 1:-1, 0])
    add((e, slice(None), 0), g[..., 1:-1, -1])
    add((e, -1, -1), g[..., 0, 0])
    add((e, -1, 0), g[..., 0, -1])
    add((e, 0, -1), g[..., -1, 0])
    add((e, 0, 0), g[..., -1, -1])


class _WrapPad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = _padded_like(x)
        y[..., 1:-1, 1:-1] = x
        _fill_border(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        gx = g[..., 1:-1, 1:-1].clone(memory_format=torch.preserve_format)
        _add_border_grads(gx, g)
        return gx


class _ReluWrapPad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, keep: bool) -> tuple[Tensor, Tensor]:
        y = _padded_like(x)
        inner = y[..., 1:-1, 1:-1]
        if keep:  # the activation itself too, in ``x``'s layout (a feature the losses read)
            feature = torch.relu(x)
            inner.copy_(feature)
        else:
            torch.clamp(x, min=0, out=inner)
            feature = x.new_empty(0)
        _fill_border(y)
        ctx.save_for_backward(y)
        ctx.mark_non_differentiable(*(() if keep else (feature,)))
        return y, feature

    @staticmethod
    def backward(ctx, g: Tensor, g_feature: Tensor | None) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        inner = y[..., 1:-1, 1:-1]
        if g_feature is not None and g_feature.numel():
            # Both gradients summed first (a new tensor of ours), the border's added unmasked,
            # then the ReLU's mask in place: two passes over the activation, not three.
            gx = g_feature + g[..., 1:-1, 1:-1]
            _add_border_grads(gx, g)
            return torch.ops.aten.threshold_backward.grad_input(gx, inner, 0, grad_input=gx), None
        gx = torch.ops.aten.threshold_backward(g[..., 1:-1, 1:-1], inner, 0)
        _add_border_grads(gx, g, inner)
        return gx, None


def wrap_pad(x: Tensor) -> Tensor:
    """``x`` ``[N, C, H, W]`` padded by 1 px with the opposite borders' pixels."""
    return _WrapPad.apply(x)


def relu_wrap_pad(x: Tensor) -> Tensor:
    """``wrap_pad(relu(x))`` in one pass over ``x``."""
    return _ReluWrapPad.apply(x, False)[0]


def relu_wrap_pad_keep(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(wrap_pad(relu(x)), relu(x))``: for an activation the losses read too. (A view into
    the padded tensor would do in the forward pass, but the losses' reshapes would copy it
    across layouts, and its gradient would come back as a full padded tensor of zeros.)"""
    return _ReluWrapPad.apply(x, True)
