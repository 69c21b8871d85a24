"""bfloat16 and float32 convolutions reach the same losses; each is deterministic per seed.

The CPU's precision is chosen for speed alone (``cpu_precision``), so both must give the same
result quality. The losses of each result are evaluated independently, in float32, with the
losses module on the model's float32 features (not the optimiser's own numbers). Random VGG19
weights: this checks the arithmetic, not how good a style transfer looks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine import stylize
from nst_engine.device.cpu_precision import ENV
from nst_engine.transfer.losses import ContentLoss, GramLoss, TVLoss
from nst_engine.model.vgg import VGGFeatures
from nst_engine.params import StyleParams
from nst_engine.model.weights import load_weights

PARAMS = StyleParams().with_overrides(max_size=64, levels=1, iterations=20, seed=3)


def _images() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64] / 64.0
    content = np.stack([x, y, 1 - x * y], -1)
    content[((x - 0.4) ** 2 + (y - 0.35) ** 2) < 0.03] = (0.9, 0.2, 0.1)
    sy, sx = np.mgrid[0:64, 0:64] / 64.0
    style = np.stack([np.sin(40 * sx) * 0.5 + 0.5, np.sin(25 * (sx + sy)) * 0.5 + 0.5,
                      rng.random((64, 64))], -1)
    return (Image.fromarray((content * 255).astype(np.uint8)),
            Image.fromarray((style * 255).astype(np.uint8)))


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def evaluate(random_weights_file):
    """The weighted total loss of an image, as the default objective defines it, in float32."""
    content, style = _images()
    layers = sorted(set(PARAMS.content_layers) | set(PARAMS.style_layers))
    model = VGGFeatures(load_weights(random_weights_file), layers, PARAMS.pooling)
    with torch.no_grad():
        cf, sf = model(_tensor(content)), model(_tensor(style))
    content_losses = {l: ContentLoss(cf[l]) for l in PARAMS.content_layers}
    style_losses = {l: GramLoss([sf[l]], [None], [1.0]) for l in PARAMS.style_layers}

    def total(img: Image.Image) -> float:
        x = _tensor(img)
        with torch.no_grad():
            f = model(x)
            c = sum(content_losses[l](f[l]) for l in content_losses) / len(content_losses)
            s = sum(style_losses[l](f[l]) for l in style_losses) / len(style_losses)
            tv = TVLoss()(x)
        return float(PARAMS.content_weight * c + PARAMS.style_weight * PARAMS.strength * s
                     + PARAMS.tv_weight * tv)
    return total


def _run(monkeypatch, weights, bf16: bool) -> Image.Image:
    monkeypatch.setenv(ENV, "1" if bf16 else "0")
    content, style = _images()
    return stylize(content=content, styles=[(style, 1.0)], params=PARAMS, device="cpu",
                   weights=weights)


def test_bfloat16_and_float32_reach_the_same_losses_and_repeat_per_seed(
        monkeypatch, random_weights_file, evaluate):
    runs = {bf16: [_run(monkeypatch, random_weights_file, bf16) for _ in range(2)]
            for bf16 in (False, True)}
    for bf16, (first, second) in runs.items():
        # The same seed gives the same image, pixel for pixel, in either precision.
        assert np.array_equal(np.asarray(first), np.asarray(second)), f"bf16={bf16}"
    fp32, bf16 = runs[False][0], runs[True][0]
    assert not np.array_equal(np.asarray(fp32), np.asarray(bf16))  # both precisions really ran

    start = evaluate(_images()[0])  # the content image: where the optimisation begins
    l32, l16 = evaluate(fp32), evaluate(bf16)
    assert l32 < 0.8 * start and l16 < 0.8 * start  # both optimised
    assert abs(l16 - l32) / l32 < 0.05, (start, l32, l16)
