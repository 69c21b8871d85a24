"""Every setting the optimiser uses, with its default, its range and what it means: one place.

A preset is a set of values for these fields (the YAML keys are the field names); the command
line and the plug-in override some of them. Torch-free, so presets can be listed and validated
without loading PyTorch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

from .bridge.wire import excerpt
from .errors import InvalidInput
from .model.layers import FEATURE_LAYERS
from .wording import cut, did_you_mean_tail, shown

#: What an error about a setting tells the user to read.
SETTINGS_HINT = ("The settings, their ranges and a preset's values: "
                 "`python -m nst_engine presets --show NAME`.")
# YAML 1.1 (PyYAML) reads a plain ``1e4`` as a string; for a float key we take it as written.
_PLAIN_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
#: ``full_resolution`` values (see its doc below).
FULL_RESOLUTION_CHOICES = ("gpu", "always", "never")
#: ``network`` values (see its doc below; ``model/normalise.py``).
NETWORK_CHOICES = ("raw", "normalised")


def _key(default: Any, doc: str, *, kind: type | tuple[type, ...], lo: float | None = None,
         hi: float | None = None, choices: tuple[str, ...] | None = None,
         layers: bool = False, nullable: bool = False) -> Any:
    """A dataclass field whose metadata drives preset validation and the docs."""
    meta = {"doc": doc, "kind": kind, "min": lo, "max": hi, "choices": choices,
            "layers": layers, "nullable": nullable}
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StyleParams:
    max_size: int = _key(512, "longest side, in px, of the last (finest) pyramid level (see "
                         "full_resolution)", kind=int, lo=64, hi=8192)
    full_resolution: str = _key(
        "gpu", "when the finest level is the image's own size instead of max_size: gpu = on "
        "CUDA/MPS, as large as fits in memory without tiles; always = on every device, in "
        "tiles beyond memory; never = max_size everywhere (an explicit max_size means never)",
        kind=str, choices=FULL_RESOLUTION_CHOICES)
    tile_size: int | None = _key(None, "longest side, in px, of the tiles a level too large "
                                 "for memory runs in; null = chosen from the memory budget",
                                 kind=int, lo=64, hi=32768, nullable=True)
    levels: int = _key(3, "pyramid levels; each is half the size of the next, coarsest first",
                       kind=int, lo=1, hi=6)
    iterations: int = _key(300, "optimiser steps in all, split evenly over the levels (each "
                           "level added above max_size gets as many as one of them)",
                           kind=int, lo=1, hi=20000)
    optimizer: str = _key("adam", "adam (iterate-averaged) or lbfgs", kind=str,
                          choices=("adam", "lbfgs"))
    learning_rate: float = _key(0.05, "Adam step size, in units of the [0, 1] pixel range",
                                kind=float, lo=1e-5, hi=1.0)
    average_decay: float = _key(0.9, "Adam iterate averaging: decay of the running mean of "
                                "the image (0 = off)", kind=float, lo=0.0, hi=0.999)
    content_layers: Mapping[str, float] = _key({"relu4_2": 1.0}, "content layers and weights",
                                               kind=dict, layers=True)
    style_layers: Mapping[str, float] = _key(
        {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0},
        "style layers and weights", kind=dict, layers=True)
    content_weight: float = _key(1.0, "weight of the content loss (losses are relative errors, "
                                 "so no weight depends on image size or weights file)",
                                 kind=float, lo=0.0, hi=1e9)
    style_weight: float = _key(10.0, "weight of the style loss (times strength)", kind=float,
                               lo=0.0, hi=1e12)
    tv_weight: float = _key(0.1, "weight of the total-variation (smoothness) loss", kind=float,
                            lo=0.0, hi=1e9)
    style_loss: str = _key("gram", "gram, mean_cov (mean + covariance) or sliced_wasserstein",
                           kind=str, choices=("gram", "mean_cov", "sliced_wasserstein"))
    pooling: str = _key("avg", "VGG pooling: max or avg", kind=str, choices=("max", "avg"))
    network: str = _key(
        "raw", "VGG19 as the weights file has it (raw, neural-style's look) or Gatys' normalised "
        "network (normalised: each channel's mean activation over a fixed reference set is 1, "
        "so no channel dominates the Gram matrix by its scale alone; made once per weights "
        "file, a few seconds, and cached). The default is to become normalised once the "
        "presets are re-tuned on it (issue 32)", kind=str, choices=NETWORK_CHOICES)
    init: str = _key("content", "start from the content image or from noise", kind=str,
                     choices=("content", "noise"))
    style_scale: float = _key(1.0, "size of the style image relative to the content",
                              kind=float, lo=0.05, hi=8.0)
    preserve_colors: bool = _key(False, "keep the content's colours; transfer luminance only",
                                 kind=bool)
    seamless: bool = _key(False, "the result tiles: its left edge continues its right edge and "
                          "its top its bottom (circular padding, wrapping TV loss and resizes; "
                          "tiles, when a level needs them, go around the border too); a content "
                          "that does not tile itself "
                          "keeps its own seam", kind=bool)
    seed: int | None = _key(None, "random seed; null = a new one each run", kind=int,
                            lo=0, hi=2**63 - 1, nullable=True)
    strength: float = _key(1.0, "multiplies style_weight", kind=float, lo=0.0, hi=10.0)
    temporal_weight: float = _key(
        100.0, "animations: weight of the temporal loss that ties each frame to the earlier "
        "results warped by the optical flow (Ruder et al.); 0 = every frame styled on its own; "
        "higher = steadier but the style loss rises (benchmarks/README.md)",
        kind=float, lo=0.0, hi=1e9)

    def with_overrides(self, **overrides: Any) -> "StyleParams":
        """A copy with the given fields replaced; ``None`` values mean "keep this one"."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def level_sizes(self, finest: int | None = None) -> list[int]:
        """Longest side of each pyramid level, coarsest first (never below 64 px).

        ``finest`` (default ``max_size``) larger than ``max_size`` adds a level per doubling,
        so the coarsest level stays about the preset's coarsest: where the style is laid out.
        """
        finest = finest or self.max_size
        added = max(0, round(math.log2(finest / self.max_size)))
        sizes = sorted({max(64, round(finest / 2 ** i)) for i in range(self.levels + added)})
        # A level raised to the 64 px floor right under the next adds steps but no coarseness.
        return [s for s, bigger in zip(sizes, sizes[1:]) if bigger >= 1.5 * s] + sizes[-1:]

    def level_iterations(self, finest: int | None = None) -> list[int]:
        """Steps per level: ``iterations`` split evenly over the preset's levels, the remainder
        going to the finest; each level added for a larger ``finest`` gets one level's share."""
        n, m = len(self.level_sizes()), len(self.level_sizes(finest))
        base, extra = divmod(self.iterations, min(n, m))
        return [base] * (m - 1) + [base + extra]


#: Field name -> dataclass field, for validation and docs.
PARAM_FIELDS = {f.name: f for f in fields(StyleParams)}
#: Layer names a preset may use in ``content_layers`` / ``style_layers``.
ALLOWED_LAYERS = FEATURE_LAYERS


# --- checks ------------------------------------------------------------------------------------

def check_params(params: StyleParams) -> None:
    """Every field within its type and range, as a preset's would be: for StyleParams built
    in Python (the API), which no preset file or override check has seen. InvalidInput."""
    for key, spec in PARAM_FIELDS.items():
        problem, _ = check_value(spec.metadata, getattr(params, key))
        if problem:
            raise InvalidInput(f"The setting '{key}' {problem}.", SETTINGS_HINT)


def check_value(meta: Mapping[str, Any], value: Any, *,
                plain: bool = False) -> tuple[str | None, Any]:
    """``(problem, value)`` for one field (``meta``: its dataclass metadata): problem is None
    when ``value`` fits the field, else why not, in words that follow the key's name.
    ``plain``: the value is a plain YAML scalar, where ``1e4`` arrives as a string."""
    kind = meta["kind"]
    if value is None:
        return (None, None) if meta["nullable"] else ("must have a value (it cannot be null)",
                                                      None)
    if meta["layers"]:
        return _check_layers(value)
    if kind is bool:
        if not isinstance(value, bool):
            return f"must be true or false, not {shown(value)}", None
        return None, value
    if kind is str:
        if not isinstance(value, str):
            return f"must be one of {_choices(meta)}, not {shown(value)}", None
        if meta["choices"] and value not in meta["choices"]:
            return (f"is '{cut(value)}'; it must be one of {_choices(meta)}"
                    + did_you_mean_tail(value, meta["choices"])), None
        return None, value
    if kind is float and plain and isinstance(value, str) and _PLAIN_FLOAT.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        want = "a number" if kind is float else "a whole number"
        return f"must be {want}, not {shown(value)}", None
    lo, hi = meta["min"], meta["max"]
    if kind is float:
        try:
            value = float(value)
        except OverflowError:  # an integer with hundreds of digits
            return f"is {excerpt(value)}, out of range: it must be {describe_range(meta)}", None
        if not math.isfinite(value):
            return f"must be a finite number, not {value}", None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"is {excerpt(value)}, out of range: it must be {describe_range(meta)}", None
    return None, value


def _check_layers(value: Any) -> tuple[str | None, Any]:
    if not isinstance(value, Mapping) or not value:
        return ("must map layer names to weights, e.g. {relu4_2: 1.0}, not "
                f"{shown(value)}"), None
    out: dict[str, float] = {}
    for layer, weight in value.items():
        if layer not in ALLOWED_LAYERS:
            return (f"names an unknown layer '{cut(str(layer))}'"
                    + did_you_mean_tail(str(layer), ALLOWED_LAYERS)
                    + f" (VGG19 layers: {ALLOWED_LAYERS[0]} ... {ALLOWED_LAYERS[-1]})"), None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight < 0:
            return (f"gives layer '{layer}' the weight {shown(weight)}; weights are numbers "
                    ">= 0"), None
        out[layer] = float(weight)
    if not any(out.values()):
        # Nothing to measure: the loss would be empty. Switching a loss off is what
        # content_weight / style_weight 0 are for.
        return ("gives every layer the weight 0; at least one needs a weight above 0 (to "
                "leave this loss out, set content_weight or style_weight to 0 instead)"), None
    return None, MappingProxyType(out)


def _choices(meta: Mapping[str, Any]) -> str:
    return ", ".join(meta["choices"] or ())


def describe_range(meta: Mapping[str, Any]) -> str:
    """A field's range in words: ``from 0 to 10``, ``>= 64``."""
    lo, hi = meta["min"], meta["max"]
    if lo is not None and hi is not None:
        return f"from {lo:g} to {hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"
