"""VGG19 feature extractor: torchvision's ``vgg19().features``, cut after the deepest layer used.

The layer stack is defined here with torchvision's layer indices and state-dict keys rather than
taken from torchvision: importing torchvision costs 1.5-6 s on a 2-core CPU and 4.6 s on a GPU
machine (it pulls in ``torch._dynamo`` through ``torchvision.ops``), which was half of the
engine's start. ``tests/test_model.py`` compares this stack with torchvision's, key by key and
activation by activation. Built on the meta device and filled with the cached conv weights (``load_state_dict(assign=
True)``), so no random initialisation is computed and no classifier is ever allocated.
Preprocessing for the weights' kind (see ``weights.PREPROCESS``) happens inside, with buffers,
so ``.to(device)`` moves everything.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..device.resolve import memory_format
from .layers import INDEX, LAYERS, VGG19_CONFIG
from .weights import PREPROCESS, VGGWeights
from .wrap import relu_wrap_pad, relu_wrap_pad_keep, wrap_pad

POOLINGS = ("max", "avg")


def vgg19_features() -> nn.Sequential:
    """``torchvision.models.vgg19().features``: the same modules at the same indices, so the
    same state-dict keys (``N.weight``, ``N.bias``). Build it under ``torch.device("meta")`` to
    skip the random initialisation."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG19_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    def __init__(self, weights: VGGWeights, layers: Iterable[str], pooling: str = "max",
                 circular: bool = False) -> None:
        super().__init__()
        layers = list(dict.fromkeys(layers))
        unknown = [n for n in layers if n not in INDEX]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layer(s) {unknown or layers}; "
                             f"known: {', '.join(LAYERS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.layers = tuple(layers)
        self.pooling = pooling
        self.circular = circular
        self.kind = weights.kind
        wanted = {INDEX[n] for n in layers}
        last = max(wanted)

        with torch.device("meta"):
            full = vgg19_features()
        body = full[: last + 1]
        for i, module in enumerate(body):
            if isinstance(module, nn.MaxPool2d) and pooling == "avg":
                body[i] = nn.AvgPool2d(kernel_size=2, stride=2)
            elif isinstance(module, nn.ReLU):
                # In place is fine (and saves memory) unless it would overwrite a captured conv
                # output.
                module.inplace = (i - 1) not in wanted
        state = {f"{INDEX[name]}.{param}": t
                 for key, t in weights.convs.items()
                 for name, param in [key.split(".")] if INDEX[name] <= last}
        body.load_state_dict(state, strict=True, assign=True)
        # Channels-last weights: the engine feeds channels-last images (``transfer``), and a
        # convolution would otherwise copy its weight into that layout on every call.
        body.to(memory_format=torch.channels_last)
        self.body = body
        self._capture = {INDEX[n]: n for n in layers}  # features index -> layer name

        pre = PREPROCESS[weights.kind]
        self.bgr = pre["bgr"]
        mean = torch.tensor(pre["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(pre["std"], dtype=torch.float32).view(1, 3, 1, 1)
        # Written as (x * scale - mean) / std, the very arithmetic of torchvision's Normalize, so
        # the features match the textbook pipeline bit for bit; it is three cheap ops.
        self.in_scale = float(pre["scale"])
        self.register_buffer("in_mean", mean)
        self.register_buffer("in_std", std)

        self.eval()
        self.requires_grad_(False)

    def preprocess(self, rgb01: torch.Tensor) -> torch.Tensor:
        x = rgb01.flip(1) if self.bgr else rgb01
        if self.in_scale != 1.0:
            x = x * self.in_scale
        return (x - self.in_mean.to(x.dtype)) / self.in_std.to(x.dtype)

    def forward(self, rgb01: torch.Tensor) -> dict[str, torch.Tensor]:
        """The requested layers' activations, in network order, for RGB in [0, 1]."""
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"expected an RGB batch [N, 3, H, W], got {tuple(rgb01.shape)}")
        x = self.preprocess(rgb01)
        if self.circular:
            return self._forward_wrapping(x)
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self._capture:
                out[self._capture[i]] = x
        return out

    def _forward_wrapping(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same layers with every convolution's padding wrapping around the borders
        (seamless tiles): each convolution gets an input padded by ``model.wrap`` and pads
        nothing itself. The poolings keep the wrap on sides that are multiples of 16
        (``levels.level_shape``)."""
        out: dict[str, torch.Tensor] = {}
        body = list(self.body)
        x = wrap_pad(x)
        for i, module in enumerate(body):
            conv_next = i + 1 < len(body) and isinstance(body[i + 1], nn.Conv2d)
            if isinstance(module, nn.Conv2d):
                x = F.conv2d(x, module.weight, module.bias)
                feature = x
            elif isinstance(module, nn.ReLU) and conv_next:
                if i in self._capture:
                    x, feature = relu_wrap_pad_keep(x)
                else:
                    x = relu_wrap_pad(x)
            else:
                x = feature = module(x)
                if conv_next:
                    x = wrap_pad(x)
            if i in self._capture:
                out[self._capture[i]] = feature
        return out

    def to(self, *args, **kwargs) -> "VGGFeatures":
        moved = super().to(*args, **kwargs)
        device = moved.in_mean.device
        if memory_format(device) != torch.channels_last:
            # MPS: the default layout (``device.resolve.memory_format``), which the engine's
            # images have there too; channels-last convolution backward is unreliable on MPS.
            moved.body.to(memory_format=memory_format(device))
        return moved

    def train(self, mode: bool = True) -> "VGGFeatures":
        # Always eval: there is no dropout/batch-norm here, but keep the promise explicit.
        return super().train(False)
