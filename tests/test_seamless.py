"""Seamless tiles (issue 25): with ``seamless`` the result wraps around exactly.

The network's convolutions pad circularly, the TV loss and the resizes between levels wrap and
the level sides are multiples of 16, so the whole engine commutes with shifts by multiples of
VGG's stride (16 px at relu5_1): styling a content rolled by 64 px gives the result rolled by
64 px. Without the option the borders are edges and the same checks fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nst_engine import StyleParams, stylize
from nst_engine.cli import SETTING_FLAGS
from nst_engine.device.memory import Budget
from nst_engine.model.layers import LAYERS
from nst_engine.model.vgg import VGGFeatures
from nst_engine.model.weights import load_weights
from nst_engine.model.wrap import relu_wrap_pad, relu_wrap_pad_keep, wrap_pad
from nst_engine.transfer import levels, tiles
from nst_engine.transfer.convert import resize
from nst_engine.testing import stripes, tiling_content
from nst_engine.transfer.losses import TVLoss

SHIFT = 64  # px at the content's size: 32 px at the 64 px level, two strides of relu5_1


def seam(a: np.ndarray) -> float:
    """The seam measure of a wrapped result: rolled by half its height and width, the gradient
    energy in bands an eighth of the side wide around the two centre lines (where its borders
    now meet; one line alone is as noisy as +-10 % on an exact wrap: the style's stripes)
    against the rest."""
    h, w = a.shape[:2]
    rolled = np.roll(a, (h // 2, w // 2), (0, 1))
    return tiles.centre_seam(torch.from_numpy(rolled).permute(2, 0, 1))


# ---------------------------------------------------------------- the parts

@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 1, 4), (1, 2, 3, 1)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_wrap_pad_is_circular_padding_with_its_gradient(shape, layout):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=layout).requires_grad_()
    circular = F.pad(x, (1, 1, 1, 1), mode="circular")
    assert torch.equal(wrap_pad(x), circular)
    assert torch.equal(relu_wrap_pad(x), F.pad(x.relu(), (1, 1, 1, 1), mode="circular"))
    assert torch.autograd.gradcheck(wrap_pad, (x,))
    assert torch.autograd.gradcheck(relu_wrap_pad, (x,))
    padded, feature = relu_wrap_pad_keep(x)  # the activation too, for the losses
    assert torch.equal(padded, circular.relu()) and torch.equal(feature, x.relu())
    assert torch.autograd.gradcheck(lambda t: relu_wrap_pad_keep(t)[0] * 2, (x,))
    assert torch.autograd.gradcheck(lambda t: sum(v.sum() * (i + 1) for i, v in
                                                  enumerate(relu_wrap_pad_keep(t))), (x,))
    # The convolution after it runs in the layout it was given (channels-last: the engine's).
    assert (wrap_pad(x).is_contiguous(memory_format=torch.channels_last)
            == (layout == torch.channels_last))


def test_a_kept_activations_gradient_comes_back_channels_last():
    # The losses' gradient may come in another layout (the content loss's did); the sum with
    # the convolution's is made in the activation's, which the convolution before wants.
    x = torch.randn(1, 4, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    padded, feature = relu_wrap_pad_keep(x)
    g_feature = torch.randn(1, 4, 6, 5)  # the default layout
    (g,) = torch.autograd.grad([padded, feature], x, [torch.randn_like(padded), g_feature])
    assert g.is_contiguous(memory_format=torch.channels_last)


def test_circular_vgg_is_pytorchs_circular_padding(random_weights_file):
    model = VGGFeatures(load_weights(random_weights_file), ["relu1_1", "conv3_1", "relu4_1"],
                        "max", circular=True)
    reference = torch.nn.Sequential(*[
        torch.nn.Conv2d(m.in_channels, m.out_channels, 3, padding=1, padding_mode="circular")
        if isinstance(m, torch.nn.Conv2d) else m for m in model.body])
    reference.load_state_dict(model.body.state_dict())
    x = torch.rand(1, 3, 48, 32, generator=torch.Generator().manual_seed(2),
                   requires_grad=True)
    got = model(x)
    h, want = model.preprocess(x), {}
    for i, module in enumerate(reference):
        h = module(h.clone())
        if i in model._capture:
            want[model._capture[i]] = h
    def close(a, b):  # float32 rounding, relative to the largest value
        return (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert all(close(got[name], want[name]) for name in got)
    g1, = torch.autograd.grad(sum(v.square().sum() for v in got.values()), x)
    g2, = torch.autograd.grad(sum(v.square().sum() for v in want.values()), x)
    assert close(g1, g2)


@pytest.mark.parametrize("circular", [True, False])
def test_circular_vgg_commutes_with_shifts_by_its_stride(random_weights_file, circular):
    model = VGGFeatures(load_weights(random_weights_file), ["relu3_1", "relu5_1"], "avg",
                        circular)
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    a, b = model(x), model(x.roll((32, 48), (-2, -1)))
    same = all(torch.allclose(a[name].roll((32 // s, 48 // s), (-2, -1)), b[name], atol=1e-4,
                              rtol=1e-4)
               for name, s in (("relu3_1", 4), ("relu5_1", 16)))
    assert same is circular


def test_wrapping_resize_is_one_period_of_the_resized_pattern():
    t = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    repeated = t.repeat(1, 1, 3, 3)
    for hw in [(96, 160), (24, 40), (37, 61), (100, 33)]:
        down = hw[0] * hw[1] < 48 * 80
        ref = F.interpolate(repeated, size=(3 * hw[0], 3 * hw[1]),
                            mode="bilinear" if down else "bicubic", align_corners=False,
                            antialias=down)[..., hw[0]:2 * hw[0], hw[1]:2 * hw[1]].clamp(0, 1)
        assert torch.allclose(resize(t, hw, wrap=True), ref, atol=1e-5), hw
        assert not torch.allclose(resize(t, hw), ref, atol=1e-3), hw


def test_tv_loss_wraps_across_the_border():
    img = torch.zeros(1, 3, 8, 8)
    img[..., :, -1] = 1.0  # an edge only where the last column meets the first
    img[..., :, -2] = 1.0
    assert TVLoss()(img) == pytest.approx(1 / 7)            # one edge in 7 column pairs
    assert TVLoss(wrap=True)(img) == pytest.approx(2 / 8)   # and the one across the border
    flat = torch.rand(1, 3, 1, 8).expand(1, 3, 8, 8)  # rows identical: no vertical change
    assert TVLoss(wrap=True)(flat.roll(3, -1)) == pytest.approx(TVLoss(wrap=True)(flat))


def test_seamless_levels_are_multiples_of_16_and_their_tiles_wrap():
    params = StyleParams().with_overrides(max_size=300, levels=3, tile_size=64, seamless=True)
    cpu = torch.device("cpu")
    plan = levels.plan(params, (237, 411), cpu, Budget(cpu, None))
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in (lvl.hw for lvl in plan))
    assert all(lvl.wrap and lvl.tile == 64 for lvl in plan)
    assert any(t.wraps for t in plan[-1].tiles)
    assert levels.level_shape(237, 411, 300) == (173, 300)   # unchanged without the option


@pytest.mark.parametrize("hw, tile", [((176, 304), 64), ((96, 400), 128), ((64, 64), 64),
                                      ((48, 80), 64)])
def test_wrapping_tiles_cover_a_torus_and_share_every_border(hw, tile):
    grid = tiles.grid(hw, tile, wrap=True)
    if max(hw) <= tile:  # fits one tile: the whole, as without the option
        assert grid == tiles.grid(hw, tile)
        return
    cover = torch.zeros(hw)
    for t in grid:
        assert t.bottom - t.top < hw[0] and t.right - t.left < hw[1]  # a crop, never a period
        assert max(t.bottom - t.top, t.right - t.left) <= tile
        cover += _mark(hw, t)
    assert bool((cover >= 1).all())
    rows = sorted({(t.top, t.bottom) for t in grid})
    cols = sorted({(t.left, t.right) for t in grid})
    # Each row of tiles shares rows with the next; the last with the first, across the border.
    for (a, b), (c, _) in zip(rows, rows[1:] + [(rows[0][0] + hw[0], None)]):
        assert b - c >= min(tiles.overlap_for(tile), hw[0] // 4)
    for (a, b), (c, _) in zip(cols, cols[1:] + [(cols[0][0] + hw[1], None)]):
        assert b - c >= min(tiles.overlap_for(tile), hw[1] // 4)


def _mark(hw, t):
    m = torch.zeros(hw)
    ys = torch.arange(t.top, t.bottom) % hw[0]
    xs = torch.arange(t.left, t.right) % hw[1]
    m[ys[:, None], xs[None, :]] = 1
    return m


def test_wrapping_tiles_read_and_blend_around_the_border():
    hw = (96, 160)
    img = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(3))
    grid = tiles.grid(hw, 64, wrap=True)
    last = grid[-1]
    assert last.wraps and last.overlap_bottom > 0 and last.overlap_right > 0
    expect = img.roll((-last.top, -last.left), (-2, -1))[..., :last.bottom - last.top,
                                                         :last.right - last.left]
    assert torch.equal(tiles.crop(img, last), expect)
    # Tiles that each return their own pixels rebuild the image, across the border too (to
    # the two-band blend's own rounding: 0.0025 at most without the wrap on this image).
    canvas = torch.zeros_like(img)
    for t in grid:
        tiles.blend_into(canvas, t, tiles.crop(img, t))
    assert float((canvas - img).abs().max()) < 0.01
    # A constant per tile: every border between tiles, the wrap included, is a smooth ramp
    # (no jump anywhere, so the rolled image has no seam at its centre lines either).
    canvas = torch.zeros_like(img)
    for k, t in enumerate(grid):
        tiles.blend_into(canvas, t, torch.full_like(tiles.crop(img, t), k / len(grid)))
    jumps = canvas.diff(dim=-1).abs().max(), canvas.diff(dim=-2).abs().max()
    wrap_jumps = ((canvas[..., 0] - canvas[..., -1]).abs().max(),
                  (canvas[..., 0, :] - canvas[..., -1, :]).abs().max())
    step = 1 / len(grid)
    assert max(jumps + wrap_jumps) < step, (jumps, wrap_jumps)


def test_the_setting_has_a_cli_flag_and_a_preset_key():
    assert ("--seamless", "seamless", None) in SETTING_FLAGS
    assert StyleParams().seamless is False
    assert "relu5_1" in LAYERS


# ---------------------------------------------------------------- the whole engine

@pytest.fixture(scope="module")
def runs(random_weights_file):
    """Results (float HxWx3) for the content and the content rolled by SHIFT, without and
    with the option: 128 px content, one 64 px level, 20 Adam steps."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NST_ENGINE_CPU_BF16", "0")  # float32: the comparison is about the wrap
    content = tiling_content()
    rolled = Image.fromarray(np.roll(np.asarray(content), (SHIFT, SHIFT), (0, 1)))
    out = {}
    try:
        for on in (False, True):
            params = StyleParams().with_overrides(max_size=64, levels=1, iterations=20, seed=1,
                                                  seamless=on)
            out[on] = [np.asarray(stylize(content=img, styles=[(stripes(64), 1.0)], params=params,
                                          device="cpu", weights=random_weights_file),
                                  np.float32) / 255 for img in (content, rolled)]
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("on", [True, False])
def test_styling_a_rolled_content_gives_the_result_rolled(runs, on):
    plain, rolled = runs[on]
    diff = np.abs(np.roll(plain, (SHIFT, SHIFT), (0, 1)) - rolled)
    # Float rounding differs with the order of the sums over positions, and Adam's normalised
    # steps amplify it where a gradient is near zero: a few pixels differ by a few levels.
    # Without the option the borders move with the content: differences everywhere near them.
    equivariant = bool(diff.mean() < 0.005 and np.mean(diff <= 2.5 / 255) > 0.95)
    assert equivariant is on, (diff.mean(), np.mean(diff <= 2.5 / 255))


@pytest.mark.parametrize("on", [True, False])
def test_the_wrapped_result_shows_no_seam(runs, on):
    # 128 px, one 64 px level of 20 steps: 1.05 with the option and 2.65 without (float32, this
    # Xeon); 1.03-1.10 were seen with the option as the code changed, so the bound sits well
    # between the two and clear of other CPUs' rounding. The issue's 1 +- 0.05 is measured at
    # 256 px (benchmarks/bench_seamless.py).
    ratio = seam(runs[on][0])
    assert bool(abs(ratio - 1) <= 0.25) is on, ratio


@pytest.mark.parametrize("around", [True, False])
def test_in_tiles_the_wrapped_result_shows_no_seam(random_weights_file, monkeypatch, around):
    # A 96 px level in 64 px tiles, 2 x 2 around the torus: the wrap is a blended band.
    # Checked against the same run with the tiles laid out as without the option (``around``
    # False): its borders are edges.
    monkeypatch.setenv("NST_ENGINE_CPU_BF16", "0")
    if not around:
        grid = tiles.grid
        monkeypatch.setattr(tiles, "grid", lambda hw, tile, wrap=False: grid(hw, tile))
    params = StyleParams().with_overrides(max_size=96, levels=1, iterations=20, seed=1,
                                          tile_size=64, seamless=True)
    out = np.asarray(stylize(content=tiling_content(96), styles=[(stripes(64), 1.0)],
                             params=params, device="cpu", weights=random_weights_file),
                     np.float32) / 255
    # Measured (float32, 2-core Xeon): 0.952 around the torus (a blended band is a little
    # flatter: two textures averaged), 1.212 with the tiles laid out as without the option.
    ratio = seam(out)
    assert bool(abs(ratio - 1) <= 0.15) is around, ratio


def test_the_preview_shows_a_seamless_result_repeated_2x2():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"
                           / "nst-style-transfer"))
    import nst_preview

    a = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(2, 3, 4)   # 3 wide, 2 high, RGBA
    out = np.frombuffer(nst_preview.repeat_2x2(a.tobytes(), 3, 2), np.uint8).reshape(4, 6, 4)
    assert np.array_equal(out, np.tile(a, (2, 2, 1)))
