"""VGGFeatures: the same activations as torchvision's vgg19 for the same weights; our own VGG19
stack is torchvision's, module by module and key by key, and the engine loads without it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from nst_engine.model.layers import vgg19_state_shapes
from nst_engine.model.vgg import VGGFeatures, vgg19_features
from nst_engine.model.layers import FEATURE_LAYERS, INDEX
from nst_engine.model.weights import load_weights

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CAFFE_MEAN_BGR = [103.939, 116.779, 123.68]
LAYERS = ["conv1_1", "relu1_1", "relu2_1", "relu3_1", "conv4_2", "relu4_2", "relu5_1", "relu5_4",
          "pool5"]


@pytest.fixture(scope="module")
def tv_weights(random_weights_file):
    return load_weights(random_weights_file)


@pytest.fixture(scope="module")
def caffe_weights(random_caffe_weights_file):
    return load_weights(random_caffe_weights_file)


@pytest.fixture(scope="module")
def reference_features(random_weights_file):
    """torchvision's own vgg19().features with the file's weights, loaded the plain way."""
    model = torchvision.models.vgg19(weights=None).eval()
    state = torch.load(random_weights_file, map_location="cpu", weights_only=True)
    model.features.load_state_dict({k[len("features."):]: v for k, v in state.items()})
    # In the engine's weight layout (channels-last, model.py), so the same kernels run.
    return model.features.to(memory_format=torch.channels_last)


def _run_reference(features: nn.Sequential, x: torch.Tensor, pooling: str) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for i, module in enumerate(features):
            if isinstance(module, nn.MaxPool2d) and pooling == "avg":
                module = nn.AvgPool2d(2, 2)
            if isinstance(module, nn.ReLU):
                module = nn.ReLU(inplace=False)  # keep the captured conv outputs intact
            x = module(x)
            out[i] = x
    return out


def _image(seed=0, size=(40, 56)):
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_matches_torchvision_vgg19(tv_weights, reference_features, pooling):
    x = _image()
    ours = VGGFeatures(tv_weights, LAYERS, pooling)(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = _run_reference(reference_features, (x - mean) / std, pooling)
    assert list(ours) == LAYERS
    for name in LAYERS:
        expected = ref[INDEX[name]]
        assert ours[name].shape == expected.shape, name
        # Same weights, same ops in the same order: bit for bit.
        assert torch.equal(ours[name], expected), name


def test_pooling_choice_changes_the_deep_features(tv_weights):
    x = _image(1)
    a = VGGFeatures(tv_weights, ["relu1_1", "relu3_1"], "max")(x)
    b = VGGFeatures(tv_weights, ["relu1_1", "relu3_1"], "avg")(x)
    assert torch.equal(a["relu1_1"], b["relu1_1"])  # before the first pooling
    assert not torch.allclose(a["relu3_1"], b["relu3_1"])
    pools = {type(m) for m in VGGFeatures(tv_weights, ["relu5_1"], "avg").body}
    assert nn.MaxPool2d not in pools and nn.AvgPool2d in pools


def test_caffe_weights_get_bgr_0_255_mean_subtracted_input(caffe_weights, reference_features):
    x = _image(2)
    ours = VGGFeatures(caffe_weights, ["relu1_1", "relu3_1", "relu5_1"], "max")(x)
    mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    ref = _run_reference(reference_features, x[:, [2, 1, 0]] * 255.0 - mean, "max")
    for name in ours:
        assert torch.equal(ours[name], ref[INDEX[name]]), name
    # and it really differs from the torchvision preprocessing of the same convs
    tv_like = VGGFeatures(load_weights_like(caffe_weights, "torchvision"), ["relu1_1"], "max")(x)
    assert not torch.allclose(tv_like["relu1_1"], ours["relu1_1"])


def load_weights_like(w, kind):
    from dataclasses import replace

    return replace(w, kind=kind)


def test_cut_after_deepest_layer_and_frozen(tv_weights):
    model = VGGFeatures(tv_weights, ["relu3_1", "relu1_1"], "avg")
    assert len(model.body) == INDEX["relu3_1"] + 1
    n_params = sum(p.numel() for p in model.parameters())
    expected = sum(t.numel() for k, t in tv_weights.convs.items()
                   if INDEX[k.split(".")[0]] <= INDEX["relu3_1"])
    assert n_params == expected  # no classifier, nothing past relu3_1
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    model.train()
    assert not model.training
    assert list(model(_image())) == ["relu1_1", "relu3_1"]  # the requested ones, network order


def test_captured_conv_output_is_not_overwritten_by_relu(tv_weights, reference_features):
    x = _image(3)
    out = VGGFeatures(tv_weights, ["conv1_1", "relu1_1"], "max")(x)
    assert (out["conv1_1"] < 0).any()  # a ReLU in place would have zeroed these
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp_min(0))


def test_gradients_flow_to_the_image(tv_weights):
    model = VGGFeatures(tv_weights, ["relu2_1", "relu4_2"], "avg")
    x = _image(4).requires_grad_(True)
    feats = model(x)
    (feats["relu2_1"].square().mean() + feats["relu4_2"].square().mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_buffers_move_with_the_module(tv_weights):
    model = VGGFeatures(tv_weights, ["relu1_1"], "max")
    names = {n for n, _ in model.named_buffers()}
    assert {"in_mean", "in_std"} <= names
    x = _image(5)
    ref = model(x)["relu1_1"]
    model64 = model.to(torch.float64)
    assert model64.in_mean.dtype == torch.float64
    torch.testing.assert_close(model64(x.double())["relu1_1"].float(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["torchvision", "caffe"])
def test_random_weights_stay_finite_to_relu5_4(tv_weights, kind):
    w = load_weights_like(tv_weights, kind)
    for pooling in ("max", "avg"):
        feats = VGGFeatures(w, FEATURE_LAYERS, pooling)(_image(6, (64, 64)))
        for name, t in feats.items():
            assert torch.isfinite(t).all(), name
        deep = feats["relu5_4"]
        assert 1e-4 < deep.std().item() < 1e4  # neither vanished nor exploded


def test_bad_arguments(tv_weights):
    with pytest.raises(ValueError, match="relu9_9"):
        VGGFeatures(tv_weights, ["relu9_9"], "max")
    with pytest.raises(ValueError, match="pooling"):
        VGGFeatures(tv_weights, ["relu1_1"], "median")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        VGGFeatures(tv_weights, ["relu1_1"], "max")(torch.rand(1, 4, 8, 8))


def test_our_vgg19_stack_is_torchvisions():
    """Same module types and settings at the same indices, same state-dict keys and shapes."""
    ours, theirs = vgg19_features(), torchvision.models.vgg19(weights=None).features
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert type(a) is type(b), i
        assert a.extra_repr() == b.extra_repr(), i
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    full = torchvision.models.vgg19(weights=None).state_dict()
    assert list(vgg19_state_shapes().items()) == [(k, tuple(v.shape)) for k, v in full.items()]


def test_our_stack_computes_what_torchvisions_does_with_the_same_random_weights():
    torch.manual_seed(0)
    theirs = torchvision.models.vgg19(weights=None).features.eval()
    ours = vgg19_features().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_loading_weights_and_the_model_does_not_import_torchvision(random_weights_file):
    code = ("import sys, torch\n"
            "from nst_engine.params import StyleParams\n"
            "from nst_engine.model.cache import model_for\n"
            f"model_for({str(random_weights_file)!r}, None, StyleParams(), torch.device('cpu'))\n"
            "from nst_engine.model.weights import known_files\n"
            "known_files()\n"
            "print('torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
