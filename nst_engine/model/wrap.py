"""Padding that wraps around the image's borders, for VGG's 3x3 convolutions (seamless tiles).

Every convolution pads 1 px; with wrapping, that pixel is the opposite border's. PyTorch's
``padding_mode="circular"`` pads with ``F.pad``, which returns the default layout for a
channels-last input (the layout the engine runs in), and concatenating slices copies the whole
activation twice per convolution: 28-100 % slower than zero padding on the CPU. Here the pad is
fused into the ReLU before each convolution: the ReLU writes its result straight into the
interior of a padded buffer (the pass it makes anyway), and only the 1 px border is copied.
``wrap_pad`` (no ReLU) serves the image and the pooled activations, which are 4x smaller or more.

A padded tensor made here is for one convolution: its backward folds the border's gradient into
the gradient it is handed, in place (``_fold_border``), so a caller that hands in a gradient of
its own (``backward(g)``) gets it back changed.
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
    carry the corners). ``select``/``narrow`` rather than indexing: a step runs this 13 times
    and Python's indexing costs more than these copies on the deep layers."""
    h, w = y.shape[-2] - 2, y.shape[-1] - 2
    rows = y.narrow(-1, 1, w)
    rows.select(-2, 0).copy_(rows.select(-2, h))
    rows.select(-2, h + 1).copy_(rows.select(-2, 1))
    y.select(-1, 0).copy_(y.select(-1, w))
    y.select(-1, w + 1).copy_(y.select(-1, 1))


def _fold_border(g: Tensor) -> Tensor:
    """The adjoint of ``_fill_border``: adds the gradient that reached the border to the
    pixels it was copied from (the columns first, full height, so the corners travel on with
    the rows), in place, and returns the interior (a view).

    In place is safe here: a padded tensor feeds one convolution and nothing else
    (``VGGFeatures._forward_wrapping``), so ``g`` is that convolution's fresh input gradient,
    handed to this backward alone. Folding first leaves one pass over the interior (the ReLU's
    mask, or the copy) and no per-border masks."""
    if g.stride(-1) == 0 or g.stride(-2) == 0:  # an expanded gradient (zeros): make it real
        g = g.clone(memory_format=torch.preserve_format)
    h, w = g.shape[-2] - 2, g.shape[-1] - 2
    g.select(-1, w).add_(g.select(-1, 0))
    g.select(-1, 1).add_(g.select(-1, w + 1))
    rows = g.narrow(-1, 1, w)
    rows.select(-2, h).add_(rows.select(-2, 0))
    rows.select(-2, 1).add_(rows.select(-2, h + 1))
    return rows.narrow(-2, 1, h)


class _WrapPad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = _padded_like(x)
        y[..., 1:-1, 1:-1] = x
        _fill_border(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return _fold_border(g).clone(memory_format=torch.preserve_format)


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
        g_inner = _fold_border(g)
        if g_feature is not None and g_feature.numel():
            # Both gradients summed (a new tensor of ours), then the ReLU's mask in place:
            # two passes over the activation, as autograd's own sum and mask would take.
            # In the activation's layout: ``g_feature`` may be strided oddly (a batch of one
            # with any batch stride), and a sum that comes out in the default layout makes the
            # convolution's backward reorder it.
            gx = torch.add(g_inner, g_feature, out=torch.empty_like(inner))
            return torch.ops.aten.threshold_backward.grad_input(gx, inner, 0, grad_input=gx), None
        return torch.ops.aten.threshold_backward(g_inner, inner, 0), None


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
