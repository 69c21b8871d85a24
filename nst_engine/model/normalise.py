"""Gatys' normalised VGG19 (issue 32): every convolution's filters rescaled so each channel's
mean activation (after its ReLU) over a fixed reference set is 1, the next convolution's input
channels compensated, so the network computes the same thing up to one positive factor per
channel (ReLU and max/average pooling commute with a positive scale).

Why: the engine's losses are relative errors, so a whole layer's scale does not matter, but the
Gram matrix is dominated by the loudest channels, and trained and random networks differ there
by orders of magnitude; Gatys et al. (CVPR 2016) ran their algorithm on exactly this normalised
network. Normalising makes the result independent of how the weights file happens to scale its
channels (tests/test_normalise.py: a per-channel rescaled copy normalises to the same network).

How: one pass through the network, layer by layer, in order. For conv k, its input channels are
first multiplied by the previous layer's factors (the previous layer's outputs were divided by
them, so conv k's pre-activation is the raw network's exactly); then the mean of relu(conv k) per
channel over the reference set (every image and position) is measured, and conv k's filters
and bias are divided by it. So the normalised activation of conv/relu k is the raw one divided
by ``factors[k]`` (per layer, not cumulative). A dead channel, one whose ReLU does not fire on
the reference set (its mean is below ``DEAD`` times its own mean |pre-activation|: zero, or
a few values at the level of float rounding), is divided by that mean |pre-activation|
instead: dividing by a rounding error would make it the loudest channel on real images, and a
factor of 1 would keep the weights file's arbitrary scale; both measures scale with the
channel, so a per-channel rescaled copy of the weights still normalises to the same network.
An all-zero channel keeps factor 1. Sparse channels (firing on a few reference pixels) are
normalised like the others, as Gatys' rule has it: their mean is 1, their peaks high.

The measurement uses average pooling, the engine's default (``params.pooling``): with it the
channel means are 1 on the reference set; with max pooling the layers after a pool are close
to 1 but not exactly (the factors are the network's, one set per weights file).

The reference set (``reference_images``) is made here, deterministically, from a fixed seed, so
nothing has to be shipped and the factors are the same on every machine up to float rounding:
``REFERENCE_COUNT`` RGB images of ``REFERENCE_SIZE`` px with natural-image statistics, because
the factors must reflect the activations real pictures give (white noise would excite the
high-frequency filters far more than photographs do): a 1/f amplitude spectrum (the power law
of natural scenes), colour channels strongly correlated (as in photographs: mostly luminance
variation), a random mean colour and contrast per image, and a few smooth-edged discs and
rectangles with flat or graded colours (occlusion edges and uniform regions, which 1/f noise
alone lacks). They go through the weights' own preprocessing (``weights.PREPROCESS``).

The result is cached once per weights file beside the compact cache (``normalised``,
``weights.normalised_cache_path``): its name and its metadata carry ``NORMALISE_VERSION``, so
a cache made by another version (another reference set or rule) is rebuilt, never misread.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..errors import EngineError
from .layers import LAYERS
from .weights import (NORMALISE_VERSION, NORMALISED_FORMAT, PREPROCESS, VGGWeights,
                      _torch_load, _validated_convs, normalised_cache_path, sha256_of)

log = logging.getLogger(__name__)

#: The reference set: how many images, their side in px and the seed they are made from.
REFERENCE_COUNT = 8
REFERENCE_SIZE = 96
REFERENCE_SEED = 32
#: A channel whose mean activation is below this fraction of its own mean |pre-activation|
#: counts as dead (it fires nowhere, or only by rounding, on the reference set).
DEAD = 1e-3
#: Pooling used while measuring (see the module's doc).
MEASURE_POOLING = "avg"


def reference_images(count: int = REFERENCE_COUNT, size: int = REFERENCE_SIZE,
                     seed: int = REFERENCE_SEED) -> torch.Tensor:
    """``[count, 3, size, size]`` RGB in [0, 1]; the same numbers for the same arguments."""
    gen = torch.Generator().manual_seed(seed)
    # float64 throughout: the images, hence the factors, should not depend on float32 rounding.
    fy = torch.fft.fftfreq(size, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.rfftfreq(size, dtype=torch.float64).view(1, -1)
    f = torch.sqrt(fx * fx + fy * fy)
    amplitude = torch.where(f > 0, 1.0 / f.clamp_min(1e-9), torch.zeros_like(f))
    # Colour covariance: correlation 0.85 between channels, as in photographs' RGB.
    cov = torch.full((3, 3), 0.85, dtype=torch.float64).fill_diagonal_(1.0)
    mix = torch.linalg.cholesky(cov)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                            torch.arange(size, dtype=torch.float64), indexing="ij")
    out = []
    for _ in range(count):
        def u(*shape):
            return torch.rand(shape, generator=gen, dtype=torch.float64)

        phase = u(3, *amplitude.shape) * (2 * math.pi)
        spectrum = amplitude * torch.polar(torch.ones_like(phase), phase)
        noise = torch.fft.irfft2(spectrum, s=(size, size))
        noise = noise / noise.std(dim=(1, 2), keepdim=True)
        noise = torch.einsum("ij,jhw->ihw", mix, noise)
        img = _colour(u) + (0.08 + 0.17 * u(1, 1, 1)) * noise
        for _ in range(int(2 + 4 * u(1).item())):
            cy, cx, r = (u(3) * torch.tensor([size, size, size * 0.3]) + torch.tensor(
                [0, 0, size * 0.06])).tolist()
            if u(1).item() < 0.5:  # a disc
                dist = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r
            else:                  # a rectangle (its signed distance's outside part)
                ry = r * (0.4 + u(1).item())
                dist = torch.maximum((yy - cy).abs() - ry, (xx - cx).abs() - r)
            alpha = torch.sigmoid(-dist / (0.5 + 1.5 * u(1).item()))  # soft to sharp edges
            colour = _colour(u)
            grade = (u(3, 1, 1) - 0.5) * 0.6 * (yy - cy) / size  # a smooth shading
            img = img * (1 - alpha) + (colour + grade) * alpha
        out.append(img.clamp(0, 1))
    return torch.stack(out).float()


def _colour(u) -> torch.Tensor:
    """A mean colour as photographs have them: a grey level and a weaker tint."""
    return 0.2 + 0.6 * u(1, 1, 1) + 0.3 * (u(3, 1, 1) - 0.5)


def preprocess(rgb01: torch.Tensor, kind: str) -> torch.Tensor:
    """The weights' own input transform, as ``vgg.VGGFeatures.preprocess`` does it."""
    pre = PREPROCESS[kind]
    x = rgb01.flip(1) if pre["bgr"] else rgb01
    x = x * float(pre["scale"])
    mean = torch.tensor(pre["mean"], dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"], dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def normalise_convs(convs: dict[str, torch.Tensor], kind: str,
                    images: torch.Tensor | None = None, *, statistic: str = "mean"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                               dict[str, torch.Tensor]]:
    """``(normalised convs, factors, dead)``: ``factors["conv3_1"]`` holds each channel's
    divisor, so the normalised network's conv3_1/relu3_1 output is the raw one divided by it;
    ``dead["conv3_1"]`` marks the channels scaled by their pre-activation's magnitude instead.
    ``convs`` is the engine's 16-conv dict (``conv1_1.weight`` …); ``images`` (RGB in [0, 1])
    defaults to the reference set. ``statistic="rms"`` (benchmarks only, never cached) divides
    by each channel's root mean square instead of its mean: each channel's Gram diagonal is then
    1 on the reference set, so sparse channels get no high peaks (bench_invariance.py)."""
    if statistic not in ("mean", "rms"):
        raise ValueError(f"statistic must be mean or rms, not {statistic!r}")
    x = preprocess(reference_images() if images is None else images, kind)
    out: dict[str, torch.Tensor] = {}
    factors: dict[str, torch.Tensor] = {}
    dead: dict[str, torch.Tensor] = {}
    carry: torch.Tensor | None = None  # the previous conv's factors
    last = max(i for i, n in enumerate(LAYERS) if n.startswith("conv"))
    for i, name in enumerate(LAYERS[: last + 1]):
        if name.startswith("pool"):
            x = F.avg_pool2d(x, 2) if MEASURE_POOLING == "avg" else F.max_pool2d(x, 2)
            continue
        if not name.startswith("conv"):
            continue  # relu: applied with its conv below
        w, b = convs[f"{name}.weight"].float(), convs[f"{name}.bias"].float()
        if carry is not None:
            w = w * carry.view(1, -1, 1, 1)
        y = F.conv2d(x, w, b, padding=1)
        magnitude = y.abs().mean(dim=(0, 2, 3), dtype=torch.float64)
        x = F.relu(y)
        del y
        mean = x.mean(dim=(0, 2, 3), dtype=torch.float64)
        if statistic == "rms":
            mean = x.square().mean(dim=(0, 2, 3), dtype=torch.float64).sqrt()
        alive = mean > DEAD * magnitude
        s = torch.where(alive, mean, torch.where(magnitude > 0, magnitude, 1.0)).float()
        dead[name] = ~alive
        out[f"{name}.weight"] = (w / s.view(-1, 1, 1, 1)).contiguous()
        out[f"{name}.bias"] = (b / s).contiguous()
        factors[name] = s
        x = x / s.view(1, -1, 1, 1)
        carry = s
    return out, factors, dead


def normalised(weights: VGGWeights, *, cache: bool = True) -> VGGWeights:
    """``weights`` as the normalised network (``network="normalised"``), read from its cache
    file when one of this version exists, else computed and cached (``cache``)."""
    if weights.network == "normalised":
        return weights
    sha = weights.sha256 or sha256_of(weights.source)
    path = normalised_cache_path(sha, weights.kind)
    convs = _read_cache(path, sha, weights.kind) if cache else None
    if convs is None:
        convs = normalise_convs(weights.convs, weights.kind)[0]
        if cache:
            _write_cache(path, sha, weights.kind, convs)
    return replace(weights, convs=convs, network="normalised", sha256=sha)


def _read_cache(path, sha: str, kind: str) -> dict[str, torch.Tensor] | None:
    """The cached convs, or None when there is no cache or it is not this version's cache for
    these weights (then it is rebuilt: a stale or foreign file must never be read as one)."""
    if not path.is_file():
        return None
    try:
        data = _torch_load(path)
        if not (isinstance(data, dict) and data.get("format") == NORMALISED_FORMAT
                and data.get("version") == NORMALISE_VERSION and data.get("kind") == kind
                and data.get("source_sha256") == sha and isinstance(data.get("convs"), dict)):
            log.info("%s is not this version's normalised cache for these weights: rebuilt",
                     path)
            return None
        return _validated_convs(data["convs"], "caffe_names", path)
    except EngineError as e:
        log.warning("normalised cache %s unreadable (%s): rebuilt", path, e.message)
        return None


def _write_cache(path, sha: str, kind: str, convs: dict[str, torch.Tensor]) -> None:
    """Atomically; a folder that cannot be written only costs the next run the few seconds."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = {"format": NORMALISED_FORMAT, "version": NORMALISE_VERSION, "kind": kind,
            "source_sha256": sha, "reference": [REFERENCE_COUNT, REFERENCE_SIZE, REFERENCE_SEED],
            "pooling": MEASURE_POOLING, "convs": convs}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, tmp)
        os.replace(tmp, path)
        # Other versions' caches of these weights are never read again.
        for old in path.parent.glob(f"vgg19-normalised-v*-{kind}-{sha[:16]}.pt"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not cache the normalised network in %s: %s", path, e)
    finally:
        tmp.unlink(missing_ok=True)
