"""Seamless tiles (issue 25): the seam measure, the style loss and the run time, with and
without ``seamless``, on a content that tiles itself.

    python benchmarks/bench_seamless.py [--size 256] [--iterations 60] [--levels 2] [--repeat 2]

Rows (one per setting):
  seam        ``tiles.seam_ratio`` of the result rolled by half its height and width: the
              gradient energy in bands around the two centre lines (where its borders meet),
              an eighth of the side wide (one line alone is noisy: the style's stripes), and
              of 1/2/4 lines each side, against the rest (1.00 = no seam; target within 1 +- 0.05); also of the content itself
  style loss  the style loss of the result at the content's size, measured the same way for
              both (the plain, zero-padded network) and in the network the run optimised
              with (circular padding for seamless), relative to the run without the option
  time        wall time of ``stylize`` (best of --repeat)
Random VGG19 weights (made here unless --weights): real timings, not real images. float32
(NST_ENGINE_CPU_BF16=0) so the two runs differ only by the option.
"""

from __future__ import annotations

import argparse
import os
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
from nst_engine.model.cache import model_for  # noqa: E402
from nst_engine.testing import make_random_vgg19_file  # noqa: E402
from nst_engine.transfer import tiles  # noqa: E402
from nst_engine.transfer.convert import to_tensor  # noqa: E402
from nst_engine.transfer.objective import Objective  # noqa: E402


def tiling_content(n: int, seed: int = 0) -> Image.Image:
    """Waves with whole periods across the image plus noise: a content that tiles itself."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    k = 2 * np.pi / n
    rgb = np.stack([120 + 60 * np.sin(3 * k * xx) + 30 * np.cos(5 * k * yy),
                    120 + 60 * np.cos(4 * k * yy + 2 * k * xx),
                    120 + 50 * np.sin(7 * k * (xx + yy))], -1)
    rgb = rgb + rng.normal(0, 12, rgb.shape)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def style_image(size: int = 128) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = 127 + 120 * np.sin(xx[..., None] / 2.5 + np.array([0, 2, 4])) * np.cos(yy[..., None] / 4)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def seam(img: Image.Image, half: int | None = None) -> float:
    """``half``: the band's half width in lines (None: an eighth of the side in all)."""
    a = np.asarray(img, np.float32) / 255
    h, w = a.shape[:2]
    bh, bw = (half, half) if half else (max(2, h // 16), max(2, w // 16))
    rolled = torch.from_numpy(np.roll(a, (h // 2, w // 2), (0, 1))).permute(2, 0, 1)
    return tiles.seam_ratio(rolled, [(h // 2 - bh, h // 2 + bh)], [(w // 2 - bw, w // 2 + bw)])


def seams(img: Image.Image) -> str:
    return (f"seam {seam(img):.3f} (bands of 1/2/4 lines each side: "
            f"{seam(img, 1):.3f}/{seam(img, 2):.3f}/{seam(img, 4):.3f})")


def style_loss(img: Image.Image, style: Image.Image, params: StyleParams, weights,
               own: bool = False) -> float:
    """The style loss of ``img`` under the plain (zero-padded) network, or (``own``) under the
    network the run optimised with."""
    plain = params if own else params.with_overrides(seamless=False)
    model, _ = model_for(weights, None, plain, torch.device("cpu"))
    objective = Objective(model, plain, [(to_tensor(style)[0], None, 1.0)], None,
                          torch.Generator().manual_seed(0))
    rgb = to_tensor(img)[0]
    objective.set_content(rgb)
    with torch.no_grad():
        _, parts = objective(rgb)
    return float(parts["style"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--weights", help="VGG19 weights (default: random ones made here)")
    args = ap.parse_args()
    weights = args.weights or make_random_vgg19_file(
        Path(tempfile.mkdtemp()) / "vgg19-random.pth")
    content, style = tiling_content(args.size), style_image()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, "
          f"{args.levels} levels, {args.iterations} iterations, float32")
    print(f"content itself: {seams(content)}")
    base = None
    for on in (False, True):
        params = StyleParams().with_overrides(max_size=args.size, levels=args.levels,
                                              iterations=args.iterations, seed=1, seamless=on)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = stylize(content=content, styles=[(style, 1.0)], params=params, device="cpu",
                          weights=weights)
            times.append(time.perf_counter() - t)
        loss = style_loss(out, style, params, weights)
        own = style_loss(out, style, params, weights, own=True)
        base = base or (loss, min(times), own)
        print(f"seamless={str(on):5}  {seams(out)}  style loss {loss:.4f} "
              f"({100 * (loss / base[0] - 1):+.1f} %), in its own network {own:.4f} "
              f"({100 * (own / base[2] - 1):+.1f} %)  time {min(times):.1f} s "
              f"({100 * (min(times) / base[1] - 1):+.1f} %)  runs {[round(x, 1) for x in times]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
