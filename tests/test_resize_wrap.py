"""The seamless resize (``convert.resize(..., wrap=True)``, issue 31 item 3): one period of the
resized repeating pattern, computed without padding the image by a period.

The reference is the old way, spelled out: the image repeated 3x3 (a whole period each side,
more than any kernel here reaches), resized by the factor, the centre period cut out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nst_engine.transfer.convert import resize


def _periodic(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    down = hw[0] * hw[1] < t.shape[-2] * t.shape[-1]
    big = F.interpolate(t.repeat(1, 1, 3, 3), size=(3 * hw[0], 3 * hw[1]),
                        mode="bilinear" if down else "bicubic", align_corners=False,
                        antialias=down)
    return big[..., hw[0]:2 * hw[0], hw[1]:2 * hw[1]].clamp(0, 1)


# Odd sides sharing no factor with the source's (the case that padded by a whole period),
# up, down, one side each way, and sides far smaller than the antialiasing filter.
@pytest.mark.parametrize("src,hw", [
    ((37, 53), (75, 107)), ((37, 53), (19, 27)), ((45, 31), (23, 61)), ((45, 31), (91, 16)),
    ((33, 47), (7, 5)), ((9, 11), (3, 2)), ((5, 7), (13, 17)), ((64, 96), (31, 47)),
])
def test_wrapping_resize_equals_the_periodic_resize(src, hw):
    t = torch.rand(1, 3, *src, generator=torch.Generator().manual_seed(sum(src + hw)))
    got, ref = resize(t, hw, wrap=True), _periodic(t, hw)
    assert got.shape == ref.shape
    # Float noise only: PyTorch's kernels place the taps in float32, these in float64.
    assert torch.allclose(got, ref, atol=2e-5, rtol=0), (got - ref).abs().max()
    # ... and it is the wrap that makes it so: the plain resize differs at the borders.
    assert not torch.allclose(resize(t, hw), ref, atol=1e-3)


class _Allocations(TorchDispatchMode):
    """Every tensor an operation returns: how many elements each."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {a.data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for o in out if isinstance(out, (tuple, list)) else (out,):
            # New memory only: not a view, not an input written in place.
            if isinstance(o, torch.Tensor) and o._base is None and o.data_ptr() not in given:
                self.sizes.append(o.numel())
        return out


@pytest.mark.parametrize("src,hw", [((96, 128), (191, 257)), ((191, 257), (96, 128))])
def test_wrapping_resize_holds_about_the_output(src, hw):
    """No tensor bigger than the output (or the input) is made, and all it makes together
    is a few outputs' worth: the old pad of a whole period interpolated 9x the output when
    the sides shared no factor (here gcd = 1 on both sides)."""
    t = torch.rand(1, 3, *src)
    out_px = 3 * hw[0] * hw[1]
    with _Allocations() as seen:
        resize(t, hw, wrap=True)
    assert max(seen.sizes) <= out_px
    # The interpolation, the clamp, the border strips (a few lines each side, a copy per tap).
    assert sum(seen.sizes) <= 4 * out_px, sum(seen.sizes) / out_px
