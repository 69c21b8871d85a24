"""The function the optimiser minimises: content, style and TV losses, weighted."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..device.resolve import memory_format
from ..params import StyleParams
from .losses import ContentLoss, TVLoss, make_style_loss


class Objective:
    """The weighted sum of content, style and TV losses at one pyramid level.

    The style targets come from the whole style image, once per level; the content target is
    set per tile (``set_content``), so all tiles of a level share one set of style statistics.
    """

    def __init__(self, model, params: StyleParams,
                 styles: Sequence[tuple[Tensor, Tensor | None, float]],
                 amp: torch.dtype | None, generator: torch.Generator,
                 draws: torch.Generator | None = None) -> None:
        self.model, self.params, self.amp = model, params, amp
        self.content_w = normalised_layers(params.content_layers)
        self.style_w = normalised_layers(params.style_layers)
        with torch.no_grad():
            sfs = [self.features(img) for img, _, _ in styles]
            masks = [m for _, m, _ in styles]
            blend = [w for _, _, w in styles]
            self.style = {l: make_style_loss(params.style_loss, [sf[l] for sf in sfs], masks,
                                             blend, generator=generator, draws=draws)
                          for l in self.style_w}
        self.content: dict[str, ContentLoss] = {}
        #: An extra term of the image (animations: ``warp.TemporalTerm``), set per tile.
        self.extra = None
        self.tv = TVLoss(wrap=params.seamless)

    def set_content(self, content: Tensor) -> None:
        self.content = {}  # the previous tile's targets go before the next ones are made
        with torch.no_grad():
            cf = self.features(content)
            self.content = {l: ContentLoss(cf[l]) for l in self.content_w}

    def features(self, img: Tensor) -> dict[str, Tensor]:
        # The model's layout on this device (``memory_format``): channels-last where it is
        # oneDNN's and the tensor cores' native layout (no reorder per convolution; CPU float32:
        # 0.80x the time of the default layout per layer; bfloat16 on AMX 0.53 vs 0.87 s per
        # iteration at 512 px, benchmarks/README.md), the default layout on MPS.
        img = img.contiguous(memory_format=memory_format(img.device))
        if self.amp is None:
            return self.model(img)
        with torch.autocast(img.device.type, dtype=self.amp):
            return self.model(img)

    def __call__(self, img: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        feats = self.features(img)
        content = sum(w * self.content[l](feats[l]) for l, w in self.content_w.items())
        style = sum(w * self.style[l](feats[l]) for l, w in self.style_w.items())
        tv = self.tv(img.float())
        total = (p.content_weight * content + p.style_weight * p.strength * style
                 + p.tv_weight * tv)
        parts = {"content": content, "style": style, "tv": tv}
        if self.extra is not None:
            parts["temporal"] = self.extra(img)
            total = total + parts["temporal"]
        return total, parts


def normalised_layers(layers: Mapping[str, float]) -> dict[str, float]:
    """Layer weights divided by their sum, so style_weight means the same for any layer set."""
    total = sum(float(w) for w in layers.values())
    return {l: float(w) / total for l, w in layers.items() if w} if total > 0 else {}
