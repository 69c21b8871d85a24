"""Gatys' normalised VGG19 (issue 32, ``model/normalise.py``): channel means of 1 on the reference
set, the same network up to per-channel factors, invariance to how the weights file scales its
channels, the cache beside the weights, and the ``network`` setting."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine import StyleParams, stylize
from nst_engine.errors import InvalidInput
from nst_engine.model import cache as model_cache
from nst_engine.model import normalise as N
from nst_engine.model import weights as W
from nst_engine.model.layers import CONV_LAYERS, LAYERS
from nst_engine.model.vgg import VGGFeatures
from nst_engine.params import check_params
from nst_engine.testing import random_vgg19_state, texture

RELUS = tuple(n for n in LAYERS if n.startswith("relu"))
#: The layers a run uses by default, and the convs before them.
USED = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1", "conv3_1", "conv5_1")


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    """Each test its own weights folder: the normalised caches must not leak between them."""
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def raw() -> W.VGGWeights:
    convs = W._validated_convs(random_vgg19_state(layout="caffe_names"), "caffe_names",
                               Path("random"))
    return W.VGGWeights(convs=convs, kind="torchvision", source=Path("random"), verified=False,
                        notice=None, sha256="0" * 64)


def _rescaled(convs: dict, sigma: float, seed: int = 1) -> dict:
    """The same network with each conv's channels multiplied by lognormal(0, sigma) factors,
    undone in the next conv's input channels (ReLU and pooling commute with them)."""
    gen = torch.Generator().manual_seed(seed)
    out, prev = {}, None
    for name in CONV_LAYERS:
        w, b = convs[f"{name}.weight"], convs[f"{name}.bias"]
        r = torch.exp(sigma * torch.randn(w.shape[0], generator=gen))
        if prev is not None:
            w = w / prev.view(1, -1, 1, 1)
        out[f"{name}.weight"] = w * r.view(-1, 1, 1, 1)
        out[f"{name}.bias"] = b * r
        prev = r
    return out


def _features(weights: W.VGGWeights, layers, image, pooling="avg") -> dict:
    with torch.no_grad():
        return VGGFeatures(weights, layers, pooling)(image)


def _image(size: int = 64, seed: int = 5) -> torch.Tensor:
    return torch.from_numpy(texture((size, size), seed=seed)).permute(2, 0, 1)[None].float()


def test_reference_set_is_made_the_same_way_each_time_and_looks_natural():
    a, b = N.reference_images(), N.reference_images()
    assert a.shape == (N.REFERENCE_COUNT, 3, N.REFERENCE_SIZE, N.REFERENCE_SIZE)
    assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, N.reference_images(seed=N.REFERENCE_SEED + 1))
    # Colour channels correlated, as in photographs; images differ from each other.
    flat = a.permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.corrcoef(flat)[0, 1:].min() > 0.5
    assert (a[0] - a[1]).abs().mean() > 0.05
    # More energy at low spatial frequencies than white noise has (1/f spectrum).
    spec = torch.fft.rfft2(a - a.mean(dim=(2, 3), keepdim=True)).abs().mean(dim=(0, 1))
    assert spec[1:4, 1:4].mean() > 10 * spec[30:45, 30:45].mean()


@pytest.mark.parametrize("kind", ["torchvision", "caffe"])
def test_every_channel_mean_is_one_on_the_reference_set(raw, kind):
    w = replace(raw, kind=kind)
    convs, _, dead_of = N.normalise_convs(w.convs, kind)
    got = _features(replace(w, convs=convs), RELUS, N.reference_images())
    raw_means = _features(w, RELUS, N.reference_images())
    for layer, act in got.items():
        means = act.mean(dim=(0, 2, 3))
        dead = dead_of[layer.replace("relu", "conv")]
        assert torch.all(means[dead] < 0.01), layer  # they do not fire
        live = means[~dead]
        assert live.numel() > 0.8 * means.numel(), layer
        assert torch.allclose(live, torch.ones_like(live), rtol=0, atol=0.01), \
            (layer, live.min().item(), live.max().item())
    # The raw network's means are not 1: the test would notice a normalisation left out.
    assert not torch.allclose(raw_means["relu3_1"].mean(dim=(0, 2, 3)), torch.ones(256),
                              atol=0.1)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_it_computes_what_the_raw_network_does_up_to_the_factors(raw, pooling):
    convs, factors, _ = N.normalise_convs(raw.convs, raw.kind)
    x = _image()
    a = _features(raw, USED, x, pooling)
    b = _features(replace(raw, convs=convs), USED, x, pooling)
    for layer in USED:
        f = factors[layer.replace("relu", "conv")].view(1, -1, 1, 1)
        scale = a[layer].abs().amax()
        assert (b[layer] * f - a[layer]).abs().amax() <= 1e-4 * scale, layer
        if layer.startswith("relu"):
            assert not torch.allclose(a[layer], b[layer], rtol=0.1)  # it did change


def test_a_per_channel_rescaled_copy_normalises_to_the_same_network(raw):
    copy = replace(raw, convs=_rescaled(raw.convs, sigma=1.0))
    x = _image()
    raw_a, raw_b = _features(raw, USED, x), _features(copy, USED, x)
    # The copy computes the same thing up to the factors, yet its raw features differ a lot.
    assert (raw_a["relu3_1"] - raw_b["relu3_1"]).abs().amax() > raw_a["relu3_1"].abs().amax()
    na = replace(raw, convs=N.normalise_convs(raw.convs, raw.kind)[0])
    nb = replace(raw, convs=N.normalise_convs(copy.convs, raw.kind)[0])
    fa, fb = _features(na, USED, x), _features(nb, USED, x)
    for layer in USED:
        # Float rounding only (sparse channels' means are the least well conditioned).
        diff = (fa[layer] - fb[layer]).abs()
        assert diff.amax() <= 1e-4 * fa[layer].abs().amax(), layer
        assert diff.mean() <= 1e-5 * fa[layer].abs().mean(), layer


def _write(convs: dict, path: Path) -> Path:
    torch.save({k: v.clone() for k, v in convs.items()}, path)
    return path


def test_a_rescaled_copy_gives_the_same_stylised_result(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("NST_ENGINE_CPU_BF16", "0")  # float32: the two runs differ only by it
    model_cache.clear()
    a = _write(raw.convs, tmp_path / "a.pth")
    b = _write(_rescaled(raw.convs, sigma=1.0), tmp_path / "b.pth")
    content = Image.fromarray((texture((64, 64), seed=1) * 255).astype("uint8"))
    style = Image.fromarray((texture((64, 64), seed=2) * 255).astype("uint8"))

    def run(path, network):
        # Up to relu3_1 only: a short network, so the four runs take seconds.
        p = StyleParams(max_size=64, levels=1, iterations=8, seed=3, network=network,
                        content_layers={"relu3_1": 1.0},
                        style_layers={"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0})
        img = stylize(content=content, styles=[(style, 1.0)], params=p, device="cpu",
                      weights=path, weights_kind="torchvision")
        return torch.from_numpy(np.asarray(img, dtype="float32"))

    normalised = (run(a, "normalised") - run(b, "normalised")).abs().mean().item()
    raw_diff = (run(a, "raw") - run(b, "raw")).abs().mean().item()
    assert normalised < 0.5, normalised  # /255: float rounding only
    assert raw_diff > 4 * max(normalised, 0.1), (raw_diff, normalised)
    model_cache.clear()


def test_normalised_is_cached_beside_the_weights_and_read_back(raw, monkeypatch):
    first = N.normalised(raw)
    path = W.normalised_cache_path(raw.sha256, raw.kind)
    assert first.network == "normalised" and path.is_file()
    monkeypatch.setattr(N, "normalise_convs", lambda *a, **k: pytest.fail("recomputed"))
    again = N.normalised(raw)
    assert all(torch.equal(first.convs[k], again.convs[k]) for k in first.convs)


@pytest.fixture(scope="module")
def expected(raw) -> dict:
    return N.normalise_convs(raw.convs, raw.kind)[0]


@pytest.mark.parametrize("stale", ["older_version", "raw_cache", "other_weights", "garbage"])
def test_a_cache_not_made_by_this_version_for_these_weights_is_rebuilt(raw, expected, stale):
    path = W.normalised_cache_path(raw.sha256, raw.kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrong = {k: torch.zeros_like(v) for k, v in raw.convs.items()}
    data = {"format": W.NORMALISED_FORMAT, "version": W.NORMALISE_VERSION, "kind": raw.kind,
            "source_sha256": raw.sha256, "convs": wrong}
    if stale == "older_version":  # a cache made before the rule or reference set changed
        data["version"] = W.NORMALISE_VERSION - 1
    elif stale == "raw_cache":    # the compact cache's own format: raw convs, never normalised
        data = {"format": W.CACHE_FORMAT, "kind": raw.kind, "source_sha256": raw.sha256,
                "source_name": "x.pth", "convs": dict(raw.convs)}
    elif stale == "other_weights":
        data["source_sha256"] = "1" * 64
    if stale == "garbage":
        path.write_bytes(b"not a torch file")
    else:
        torch.save(data, path)
    got = N.normalised(raw)
    assert all(torch.allclose(got.convs[k], expected[k]) for k in expected)
    now = torch.load(path, weights_only=True)
    assert (now["format"], now["version"]) == (W.NORMALISED_FORMAT, W.NORMALISE_VERSION)


def test_writing_a_new_version_removes_the_older_versions_files(raw):
    old = W.normalised_cache_path(raw.sha256, raw.kind, version=W.NORMALISE_VERSION - 1)
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"old")
    other = W.normalised_cache_path("2" * 64, raw.kind, version=W.NORMALISE_VERSION - 1)
    other.write_bytes(b"another weights file's")
    N.normalised(raw)
    assert not old.exists() and other.exists()


def test_a_compact_cache_made_before_the_change_loads_raw_and_normalises(random_weights_file):
    W.convert(random_weights_file)  # the compact cache's format is unchanged by issue 32
    data = torch.load(W.default_weights_path(), weights_only=True)
    assert data["format"] == W.CACHE_FORMAT and "network" not in data
    loaded = W.load_weights()
    assert loaded.network == "raw"
    direct = W.load_weights(random_weights_file)
    assert all(torch.equal(loaded.convs[k], direct.convs[k]) for k in direct.convs)
    n = N.normalised(loaded)
    assert W.normalised_cache_path(direct.sha256, "torchvision").is_file()
    assert not torch.equal(n.convs["conv3_1.weight"], direct.convs["conv3_1.weight"])


def test_model_for_keeps_the_raw_and_the_normalised_network_apart(random_weights_file):
    model_cache.clear()
    cpu = torch.device("cpu")
    params = StyleParams()
    assert params.network == "raw"  # until the presets are re-tuned (issue 32)
    raw_model, raw_info = model_cache.model_for(random_weights_file, None, params, cpu)
    n_model, n_info = model_cache.model_for(random_weights_file, None,
                                            replace(params, network="normalised"), cpu)
    assert (raw_info.network, n_info.network) == ("raw", "normalised")
    assert raw_model is not n_model
    assert model_cache.model_for(random_weights_file, None, params, cpu)[0] is raw_model
    x = _image()
    assert not torch.allclose(raw_model(x)["relu3_1"], n_model(x)["relu3_1"], rtol=0.1)
    model_cache.clear()


def test_the_network_setting_is_checked():
    check_params(StyleParams(network="normalised"))
    with pytest.raises(InvalidInput, match="network"):
        check_params(StyleParams(network="normalized"))


def test_preset_key_network_resolves():
    from nst_engine.presets import resolve

    assert resolve(None, {"network": "normalised"}).network == "normalised"


def test_only_the_two_statistics_are_accepted(raw):
    with pytest.raises(ValueError, match="mean or rms"):
        N.normalise_convs(raw.convs, raw.kind, statistic="median")
