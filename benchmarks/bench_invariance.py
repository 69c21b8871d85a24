"""Invariance of the result to how the weights file scales its layers and channels (issue 32,
"Measure it"): the raw network against Gatys' normalised one (``network: normalised``).

    python benchmarks/bench_invariance.py [--size 96] [--iterations 40] [--levels 1]
        [--layers default|shallow] [--networks raw,normalised] [--seed 3] [--statistic mean]

Each variant is a copy of the random test weights (``nst_engine.testing``, seed 0) that computes
exactly the same thing up to positive factors (undone in the next convolution's input
channels; ReLU and pooling commute with them), except ``init2``:
  layer 1e-2..1e2   each conv's output scaled by one factor, log-uniform in 1e-2..1e2
  channel s=1       each channel scaled by a lognormal factor, sigma 1
  floor 1e-6        the same with sigma 1e-6: the float noise floor (the chaotic optimisation
                    turns rounding into a visible difference; nothing can do better than this)
  init2             another random initialisation (seed 1): a different network
Each is stylised as the unmodified network is (same content, style, seed, settings; float32,
NST_ENGINE_CPU_BF16=0), once with the raw network and once normalised; the figure is the mean
absolute pixel difference from the unmodified network's result, in /255. ``moved``: how far the
stylisation moves the content (the unmodified network's result against the content), for scale.
Results with every layer rescaled should sit at the floor for both networks (the losses are
relative); per-channel rescaling at the floor only for the normalised network.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NST_ENGINE_CPU_BF16", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nst_engine import StyleParams, stylize  # noqa: E402
from nst_engine.model import cache as model_cache  # noqa: E402
from nst_engine.model.layers import CONV_LAYERS  # noqa: E402
from nst_engine.testing import random_vgg19_state, texture  # noqa: E402

#: Layers per ``--layers``: the defaults (to relu5_1), or a shallow set for a quick look.
LAYER_SETS = {
    "default": (None, None),
    "shallow": ({"relu3_1": 1.0}, {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}),
}


def rescaled(convs: dict, factors_of) -> dict:
    """``convs`` (``conv1_1.weight`` …) with each conv's output channels multiplied by
    ``factors_of(name, channels)``, undone in the next conv's input channels."""
    out, prev = {}, None
    for name in CONV_LAYERS:
        w, b = convs[f"{name}.weight"], convs[f"{name}.bias"]
        r = factors_of(name, w.shape[0])
        if prev is not None:
            w = w / prev.view(1, -1, 1, 1)
        out[f"{name}.weight"] = (w * r.view(-1, 1, 1, 1)).contiguous()
        out[f"{name}.bias"] = (b * r).contiguous()
        prev = r
    return out


def variants(seed: int = 7) -> dict[str, dict]:
    """Name -> a conv dict (caffe_names layout, which ``load_weights`` reads)."""
    base = {k: v.double() for k, v in random_vgg19_state(layout="caffe_names").items()}
    gen = torch.Generator().manual_seed(seed)

    def per_layer(name, n):
        return torch.full((n,), 10.0 ** (4 * torch.rand(1, generator=gen).item() - 2),
                          dtype=torch.float64)

    def per_channel(sigma):
        return lambda name, n: torch.exp(sigma * torch.randn(n, generator=gen,
                                                             dtype=torch.float64))

    # Rescaled in float64, stored in float32: the copies differ from the original by the
    # factors and one rounding, as a file with other scales would.
    out = {"base": base,
           "layer 1e-2..1e2": rescaled(base, per_layer),
           "channel s=1": rescaled(base, per_channel(1.0)),
           "floor 1e-6": rescaled(base, per_channel(1e-6)),
           "init2": random_vgg19_state(layout="caffe_names", seed=1)}
    return {k: {n: t.float() for n, t in v.items()} for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--levels", type=int, default=1)
    ap.add_argument("--layers", choices=tuple(LAYER_SETS), default="default")
    ap.add_argument("--networks", default="raw,normalised")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--statistic", choices=("mean", "rms"), default="mean",
                    help="normalised network: Gatys' mean (the engine's) or, as an experiment, "
                    "each channel's root mean square")
    args = ap.parse_args()
    if args.statistic != "mean":  # an experiment: its caches stay in this run's temp folder
        import functools

        from nst_engine.model import normalise
        normalise.normalise_convs = functools.partial(normalise.normalise_convs,
                                                      statistic=args.statistic)

    tmp = Path(tempfile.mkdtemp(prefix="nst-invariance-"))
    os.environ["NST_DATA_DIR"] = str(tmp / "data")  # the normalised caches go there
    files = {}
    for name, convs in variants().items():
        files[name] = tmp / f"{name.split()[0]}.pth"
        torch.save(convs, files[name])
    n = args.size
    content = Image.fromarray((texture((n, n), seed=1) * 255).astype("uint8"))
    style = Image.fromarray((texture((n, n), seed=2, octaves=3) * 255).astype("uint8"))
    content_layers, style_layers = LAYER_SETS[args.layers]
    params = StyleParams(max_size=n, levels=args.levels, iterations=args.iterations,
                         seed=args.seed).with_overrides(content_layers=content_layers,
                                                        style_layers=style_layers)
    c = np.asarray(content, np.float32)
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, float32; "
          f"{n} px, {args.iterations} steps, {args.levels} level(s), layers {args.layers}, "
          f"normalised by the channels' {args.statistic}")
    for network in args.networks.split(","):
        p = params.with_overrides(network=network)
        results, seconds = {}, {}
        for name, path in files.items():
            model_cache.clear()
            t = time.perf_counter()
            img = stylize(content=content, styles=[(style, 1.0)], params=p, device="cpu",
                          weights=path, weights_kind="torchvision")
            seconds[name] = time.perf_counter() - t
            results[name] = np.asarray(img.convert("RGB"), np.float32)
        base = results["base"]
        moved = np.abs(base - c).mean()
        row = "  ".join(f"{k}: {np.abs(v - base).mean():5.2f}" for k, v in results.items()
                        if k != "base")
        print(f"{network:<10}  moved {moved:5.2f}  {row}  (/255; "
              f"{sum(seconds.values()):.0f} s for {len(files)} runs)", flush=True)
    model_cache.clear()
    shutil.rmtree(tmp, ignore_errors=True)  # five weights files and their caches
    return 0


if __name__ == "__main__":
    sys.exit(main())
