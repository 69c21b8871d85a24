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


#: Where the border is filled and folded by index operations (``index_copy_`` /
#: ``index_add_`` with cached indices): on CUDA, where every dispatched operation is a host
#: round of work and a kernel launch, and a seamless step at 512 px may be host-bound (issue
#: 31). Elsewhere line copies on views: the CPU's index kernels take 10-30x a line copy on
#: channels-last activations (benchmarks/README.md, "Seamless tiles"), and MPS lacks a
#: verified ``index_copy_`` on every supported torch.
INDEXED_DEVICES = ("cuda",)
#: Cached index tensors: per padded shape, two int64 offsets per border element (a 2048 px
#: level's first layers: 64 x 8200 x 16 B, 8 MB; the deeper ones less), and two per padded
#: side. A step uses ~20 (fewer would rebuild them every step); beyond this many the cache
#: starts again. The levels run coarse to fine, so the coarser levels' entries add at most
#: about a third to the finest's (tens of MB on the device at most, next to a level's GBs).
_INDEX_CACHE_SIZE = 48
_index_cache: dict[tuple, Tensor | tuple[Tensor, Tensor]] = {}


def _indexed(t: Tensor) -> bool:
    """Whether ``t``'s border goes by index operations: on ``INDEXED_DEVICES``, sides of at
    least 2 (a side of 1 would add twice to one element: an order left to CUDA's atomics)."""
    return t.device.type in INDEXED_DEVICES and min(t.shape[-2:]) >= 4


def _cached(key: tuple, make):
    found = _index_cache.get(key)
    if found is None:
        if len(_index_cache) >= _INDEX_CACHE_SIZE:
            _index_cache.clear()
        found = _index_cache[key] = make()
    return found


def _flat_border(y: Tensor) -> tuple[Tensor, Tensor]:
    """``(to, from)``: the memory offsets (from ``y``'s storage offset) of every border
    element of the padded ``y`` and of the interior element it copies, each border pixel
    straight from the opposite interior (the corners from the opposite corner), so one
    ``index_copy_`` fills all of it."""
    def make() -> tuple[Tensor, Tensor]:
        n, c, hp, wp = y.shape
        h, w = hp - 2, wp - 2
        rows = torch.arange(hp)
        cols = torch.arange(wp)
        edge = ((rows == 0) | (rows == hp - 1))[:, None] | ((cols == 0) | (cols == wp - 1))
        r, q = edge.nonzero(as_tuple=True)
        # Interior rows 1..h; row 0 is row h's copy, row h + 1 row 1's (columns alike).
        r_src = torch.where(r == 0, h, torch.where(r == hp - 1, 1, r))
        q_src = torch.where(q == 0, w, torch.where(q == wp - 1, 1, q))
        s_n, s_c, s_h, s_w = y.stride()
        lead = (torch.arange(n)[:, None] * s_n + torch.arange(c)[None] * s_c).reshape(-1, 1)
        to = (lead + r * s_h + q * s_w).flatten()
        frm = (lead + r_src * s_h + q_src * s_w).flatten()
        return to.to(y.device), frm.to(y.device)
    return _cached(("flat", tuple(y.shape), y.stride(), str(y.device)), make)


def _flat(y: Tensor) -> Tensor:
    """``y``'s memory as one dimension, from its first element to its last."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(y.shape, y.stride()))
    return y.as_strided((span,), (1,), y.storage_offset())


def _line_index(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``([0, n + 1], [n, 1])``: a padded side's border lines and the lines they copy."""
    return _cached(("line", n, str(device)), lambda: (
        torch.tensor([0, n + 1], device=device), torch.tensor([n, 1], device=device)))


def _fill_border(y: Tensor) -> None:
    """Sets ``y``'s 1 px border from its interior, wrapping.

    Indexed (CUDA, ``_indexed``): one gather and one scatter over the whole border, 2
    operations and 1 view. Else rows first, then the columns full height (they carry the
    corners): 4 line copies and 9 views. ``select``/``narrow`` rather than Python indexing:
    a step runs this 13 times and indexing costs more than these copies on the deep
    layers."""
    if _indexed(y):
        to, frm = _flat_border(y)
        flat = _flat(y)
        flat.index_copy_(0, to, flat.index_select(0, frm))
        return
    h, w = y.shape[-2] - 2, y.shape[-1] - 2
    rows = y.narrow(-1, 1, w)
    rows.select(-2, 0).copy_(rows.select(-2, h))
    rows.select(-2, h + 1).copy_(rows.select(-2, 1))
    y.select(-1, 0).copy_(y.select(-1, w))
    y.select(-1, w + 1).copy_(y.select(-1, 1))


def _fold_border(g: Tensor) -> Tensor:
    """The adjoint of ``_fill_border``: adds the gradient that reached the border to the
    pixels it was copied from (the columns first, full height, so the corners travel on with
    the rows), in place, and returns the interior (a view). Indexed (``_indexed``): an
    ``index_add_`` per side, 4 operations as before but 2 views instead of 10 (PyTorch lists
    ``index_add_`` as deterministic on CUDA; here each element gets one addition anyway).

    In place is safe here: a padded tensor feeds one convolution and nothing else
    (``VGGFeatures._forward_wrapping``), so ``g`` is that convolution's fresh input gradient,
    handed to this backward alone. Folding first leaves one pass over the interior (the ReLU's
    mask, or the copy) and no per-border masks."""
    if g.stride(-1) == 0 or g.stride(-2) == 0:  # an expanded gradient (zeros): make it real
        g = g.clone(memory_format=torch.preserve_format)
    h, w = g.shape[-2] - 2, g.shape[-1] - 2
    if _indexed(g):  # one addition per element (the indices differ): no order to decide
        for dim in (-1, -2):  # the rows full width: the corners travel with them
            to, frm = _line_index(g.shape[dim] - 2, g.device)
            g.index_add_(dim, frm, g.index_select(dim, to))
        return g.narrow(-2, 1, h).narrow(-1, 1, w)
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
