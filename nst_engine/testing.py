"""Random-weight VGG19 files with the real key names and shapes, for tests and demos.

The pretrained weights cannot be downloaded everywhere the tests run, so tests generate files
that pass every layout check but hold random numbers. They have an unknown checksum, so the
engine accepts them with a notice and never reports them as the real VGG19.

    python -m nst_engine.testing PATH [--layout torchvision|caffe_names] [--seed N] [--classifier]

Kept compatible with torch >= 2.2 (it runs inside Debian trees with python3-torch 2.6).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

LAYOUTS = ("torchvision", "caffe_names")


def random_vgg19_state(*, layout: str = "torchvision", seed: int = 0,
                       classifier: bool = False) -> dict:
    """The state dict: He-initialised convs, so activations stay O(1) down to relu5_4.

    The same seed gives the same conv values in both layouts. Classifier tensors (optional)
    have the real shapes but share one element of storage, so the file stays small.
    """
    import torch

    from .model.layers import INDEX, vgg19_state_shapes
    from .model.weights import conv_shapes

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in conv_shapes().items():
        name, param = key.split(".")
        if param == "weight":
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            value = torch.randn(shape, generator=gen) * 0.01
        out_key = key if layout == "caffe_names" else f"features.{INDEX[name]}.{param}"
        state[out_key] = value
    if classifier and layout == "torchvision":
        for key, shape in vgg19_state_shapes().items():
            if key.startswith("classifier."):
                state[key] = torch.zeros(1).expand(shape)
    return state


def make_random_vgg19_file(path: str | os.PathLike, *, layout: str = "torchvision",
                           seed: int = 0, classifier: bool = False) -> Path:
    """Write a random VGG19 weights file (see ``random_vgg19_state``); returns its path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_vgg19_state(layout=layout, seed=seed, classifier=classifier), path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nst_engine.testing",
                                description="Write a random-weight VGG19 file with the real key "
                                            "layout (for tests; NOT the real VGG19).")
    p.add_argument("path")
    p.add_argument("--layout", choices=LAYOUTS, default="torchvision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classifier", action="store_true",
                   help="add classifier.* keys (real shapes, tiny storage)")
    a = p.parse_args(argv)
    out = make_random_vgg19_file(a.path, layout=a.layout, seed=a.seed, classifier=a.classifier)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
