"""Losses and colour conversion, on small synthetic feature maps (no VGG needed)."""

from __future__ import annotations

import pytest
import torch

from nst_engine.transfer import color, losses


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gram_is_normalised_by_size():
    f = torch.rand(1, 8, 16, 16, generator=_gen())
    tiled = f.repeat(1, 1, 2, 2)  # same statistics, four times the pixels
    assert torch.allclose(losses.gram(f), losses.gram(tiled), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gram", "mean_cov", "sliced_wasserstein"])
def test_style_loss_zero_on_target_and_positive_elsewhere(kind):
    target = torch.rand(1, 8, 16, 16, generator=_gen(1))
    other = torch.rand(1, 8, 16, 16, generator=_gen(2)) ** 3
    loss = losses.make_style_loss(kind, [target], [None], [1.0], generator=_gen())
    assert float(loss(target)) < 1e-6
    assert float(loss(other)) > 1e-3


@pytest.mark.parametrize("kind", ["gram", "mean_cov", "sliced_wasserstein"])
def test_losses_do_not_depend_on_feature_scale(kind):
    # Caffe features are ~50x torchvision's: relative losses keep one set of weights for both.
    target = torch.rand(1, 8, 12, 12, generator=_gen(1))
    x = torch.rand(1, 8, 12, 12, generator=_gen(2))
    small = losses.make_style_loss(kind, [target], [None], [1.0], generator=_gen(5))(x)
    large = losses.make_style_loss(kind, [50 * target], [None], [1.0], generator=_gen(5))(50 * x)
    assert float(large) == pytest.approx(float(small), rel=1e-3)
    assert float(losses.ContentLoss(50 * target)(50 * x)) == pytest.approx(
        float(losses.ContentLoss(target)(x)), rel=1e-4)


def test_sliced_wasserstein_handles_different_pixel_counts():
    target = torch.rand(1, 8, 10, 10, generator=_gen(1))
    same_distribution = target.repeat(1, 1, 3, 2)  # 6x the pixels, identical histogram
    loss = losses.make_style_loss("sliced_wasserstein", [target], [None], [1.0], generator=_gen())
    shifted = float(loss(same_distribution + 0.5))
    assert float(loss(same_distribution)) < 0.05 * shifted


@pytest.mark.parametrize("kind", ["gram", "mean_cov"])
def test_transparent_style_pixels_do_not_count(kind):
    opaque = torch.rand(1, 8, 16, 8, generator=_gen(1))
    garbage = 5 * torch.rand(1, 8, 16, 8, generator=_gen(2))
    style = torch.cat([opaque, garbage], dim=-1)
    # Alpha at "image" size (4x the layer): left half opaque, right half transparent.
    alpha = torch.cat([torch.ones(1, 1, 64, 32), torch.zeros(1, 1, 64, 32)], dim=-1)
    masked = losses.make_style_loss(kind, [style], [alpha], [1.0])
    alone = losses.make_style_loss(kind, [opaque], [None], [1.0])
    unmasked = losses.make_style_loss(kind, [style], [None], [1.0])
    x = torch.rand(1, 8, 16, 16, generator=_gen(3))
    assert float(masked(x)) == pytest.approx(float(alone(x)), rel=1e-5)
    assert abs(float(unmasked(x)) - float(alone(x))) > 0.1 * float(alone(x))


def test_mask_smaller_than_a_layer_pixel_still_counts():
    style = torch.rand(1, 4, 4, 4, generator=_gen(1))
    alpha = torch.zeros(1, 1, 64, 64)
    alpha[..., :4, :4] = 1  # opaque area under half of one layer pixel
    assert losses.opaque_pixels(style, alpha).shape[1] >= 1


def test_blend_of_two_styles_is_the_mixture():
    a = torch.rand(1, 6, 8, 8, generator=_gen(1))
    b = torch.rand(1, 6, 8, 8, generator=_gen(2)) + 1.0
    both = torch.cat([a, b], dim=-1)
    for kind in ("gram", "mean_cov"):
        blended = losses.make_style_loss(kind, [a, b], [None, None], [0.5, 0.5])
        pooled = losses.make_style_loss(kind, [both], [None], [1.0])
        for got, want in zip(blended.buffers(), pooled.buffers()):
            assert torch.allclose(got, want, atol=1e-5)
    # Weight 1 on one style is that style alone.
    only_a = losses.make_style_loss("gram", [a, b], [None, None], [1.0, 0.0])
    assert torch.allclose(only_a.target, losses.make_style_loss("gram", [a], [None], [1]).target)


def test_sliced_wasserstein_blend_draws_pixels_by_weight():
    a = torch.zeros(1, 4, 16, 16)
    b = torch.ones(1, 4, 16, 16)
    loss = losses.make_style_loss("sliced_wasserstein", [a, b], [None, None], [0.75, 0.25],
                                  generator=_gen())
    assert float(loss.style.mean()) == pytest.approx(0.25, abs=0.01)


def test_tv_loss():
    assert float(losses.TVLoss()(torch.full((1, 3, 8, 8), 0.3))) == 0.0
    assert float(losses.TVLoss()(torch.rand(1, 3, 8, 8, generator=_gen()))) > 0.05


def test_yiq_round_trip_and_recombine_keeps_chroma():
    content = torch.rand(1, 3, 16, 16, generator=_gen(1)) * 0.5 + 0.25
    result = torch.rand(1, 3, 16, 16, generator=_gen(2)) * 0.5 + 0.25
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(content)), content, atol=1e-5)
    mixed = color.recombine(result, content)
    yiq_mixed, yiq_c, yiq_r = map(color.rgb_to_yiq, (mixed, content, result))
    assert torch.allclose(yiq_mixed[:, 1:], yiq_c[:, 1:], atol=1e-4)
    assert torch.allclose(yiq_mixed[:, :1], yiq_r[:, :1], atol=1e-4)


def test_style_luminance_matched_to_content_statistics():
    content = torch.rand(1, 3, 16, 16, generator=_gen(1)) * 0.2 + 0.6
    style = torch.rand(1, 3, 16, 16, generator=_gen(2))
    mask = torch.ones(1, 1, 16, 16)
    mask[..., 8:] = 0
    style[..., 8:] = 0  # transparent black must not drag the mean down
    y = color.matched_style_luminance(style, content, mask)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    yc = color.rgb_to_yiq(content)[:, 0]
    opaque = y[:, 0][..., :8]
    assert float(opaque.mean()) == pytest.approx(float(yc.mean()), abs=0.01)
    assert float(opaque.std()) == pytest.approx(float(yc.std()), rel=0.1)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_gradient_is_the_textbook_one_in_the_features_layout(layout):
    f = torch.rand(1, 6, 5, 7, dtype=torch.float64, generator=_gen(3))
    f = f.contiguous(memory_format=layout).requires_grad_(True)
    assert torch.autograd.gradcheck(losses.self_product, (f.reshape(6, -1),))
    f32 = f.detach().float().contiguous(memory_format=layout).requires_grad_(True)
    target = torch.rand(6, 6, generator=_gen(4))
    (grad,) = torch.autograd.grad((losses.gram(f32) - target).pow(2).sum(), f32)
    cols = f32.reshape(6, -1)
    plain = (cols @ cols.t() / cols.numel() - target).pow(2).sum()  # autograd's own
    (expected,) = torch.autograd.grad(plain, f32)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert grad.is_contiguous(memory_format=layout)  # adds to the conv's gradient, no copy


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_content_loss_gradient_is_the_textbook_one_in_the_features_layout(layout):
    # Autograd's own gradient of ``pow(2).mean()`` comes back in the default layout from
    # channels-last features, and the convolution's backward then reorders it.
    f = torch.rand(1, 6, 5, 7, dtype=torch.float64, generator=_gen(8))
    assert torch.autograd.gradcheck(losses.mean_square, (f.requires_grad_(True),))
    f = f.detach().float().contiguous(memory_format=layout).requires_grad_(True)
    target = torch.rand(1, 6, 5, 7, generator=_gen(9))
    loss = losses.ContentLoss(target)
    (grad,) = torch.autograd.grad(loss(f), f)
    expected = 2 * (f.detach() - target) / f.numel() / loss.scale
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-9)
    assert grad.is_contiguous(memory_format=layout)


def test_mean_cov_gradient_matches_autograd():
    f = torch.rand(1, 5, 4, 6, generator=_gen(6)).requires_grad_(True)
    loss = losses.MeanCovLoss([torch.rand(1, 5, 4, 6, generator=_gen(7))], [None], [1.0])
    (grad,) = torch.autograd.grad(loss(f), f)
    cols = f.reshape(5, -1)
    mu = cols.mean(dim=1)
    centred = cols - mu[:, None]
    cov = centred @ centred.t() / cols.shape[1]  # autograd's own products
    plain = ((mu - loss.mean).pow(2).mean() / loss.mean_scale
             + (cov - loss.cov).pow(2).mean() / loss.cov_scale)
    (expected,) = torch.autograd.grad(plain, f)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-8)
