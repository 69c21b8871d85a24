"""Seamless tiles (issue 25): the seam measure, the style loss and the run time, with and
without ``seamless``, on a content that tiles itself.

    python benchmarks/bench_seamless.py [--size 256] [--iterations 60] [--levels 2]
        [--seeds 1,2,3] [--tile N] [--device cpu|cuda|mps] [--weights FILE]

For each seed, the run without the option and the one with it, one after the other (so a
busy machine slows both alike; every other seed in the other order); then per row:
  seam        ``tiles.seam_ratio`` of the result rolled by half its height and width: the
              gradient energy in bands around the two centre lines (where its borders meet),
              an eighth of the side wide (one line alone is noisy: the style's stripes), and
              of 1/2/4 lines each side, against the rest (1.00 = no seam; target 1 +- 0.05).
              ``null``: the same measure on lines that are not a seam (the result rolled by a
              quarter instead): how far the measure strays with no seam at all.
  style loss  the style loss of each result, judged by a network neither run optimised with:
              zero padding, the image extended by a reflection of a quarter of its side, and
              only the feature pixels over the image itself compared (``neutral``); also by
              the plain zero-padded network (which the run without the option optimised
              against) and by each run's own network; relative to the run without the option
              (target within 2 %).
  time        wall and CPU time of ``stylize``, both models loaded before (target within 5 %).
Random VGG19 weights (made here unless --weights): real timings, not real images. float32
(NST_ENGINE_CPU_BF16=0) unless set otherwise, so the two runs differ only by the option.
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
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from nst_engine import StyleParams, stylize  # noqa: E402
from nst_engine.model.cache import model_for  # noqa: E402
from nst_engine.testing import make_random_vgg19_file, stripes, tiling_content  # noqa: E402
from nst_engine.transfer import tiles  # noqa: E402
from nst_engine.transfer.convert import resize, to_tensor  # noqa: E402
from nst_engine.transfer.objective import Objective  # noqa: E402


def seam(img: Image.Image, half: int | None = None, roll: int = 2) -> float:
    """``half``: the band's half width in lines (None: an eighth of the side in all).
    ``roll``: rolled by 1/roll of the side (2: the borders meet at the centre lines; 4: the
    centre lines are ordinary lines of the image)."""
    a = np.asarray(img, np.float32) / 255
    h, w = a.shape[:2]
    rolled = torch.from_numpy(np.roll(a, (h // roll, w // roll), (0, 1))).permute(2, 0, 1)
    return tiles.centre_seam(rolled, half)


def seams(img: Image.Image) -> str:
    return (f"seam {seam(img):.3f} (1/2/4 lines each side: "
            f"{seam(img, 1):.3f}/{seam(img, 2):.3f}/{seam(img, 4):.3f}; "
            f"null {seam(img, roll=4):.3f})")


def joins(img: Image.Image, tile: int, wrap: bool) -> float:
    """``tiles.seam_ratio`` of the blended bands between the finest level's tiles (the
    wrap's band left out: the seam row measures it)."""
    a = torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)
    grid = tiles.grid(tuple(a.shape[-2:]), tile, wrap)
    rows, cols = tiles.seams(grid)
    h, w = a.shape[-2:]
    return tiles.seam_ratio(a, [r for r in rows if r[1] <= h], [c for c in cols if c[1] <= w])


def neutral_style_loss(img: Image.Image, style: Image.Image, params: StyleParams,
                       weights) -> float:
    """The style loss under a network neither run optimised with: zero padding, the image
    extended by a reflection of a quarter of its side, Gram matrices of the feature pixels
    over the image only; the mean over the style layers of ``|G - G_style|^2 / |G_style|^2``."""
    plain = params.with_overrides(seamless=False)
    model, _ = model_for(weights, None, plain, torch.device("cpu"))

    def grams(rgb: torch.Tensor, pad: int) -> dict[str, torch.Tensor]:
        x = F.pad(rgb, (pad, pad, pad, pad), mode="reflect") if pad else rgb
        out = {}
        with torch.no_grad():
            feats = model(x.contiguous(memory_format=torch.channels_last))
        for name in plain.style_layers:
            f = feats[name].float()
            h, w = f.shape[-2:]
            k = round(pad * h / x.shape[-2])
            f = f[..., k:h - k, k:w - k].flatten(2)[0]
            out[name] = f @ f.T / f.shape[1]
        return out
    rgb = to_tensor(img)[0]
    target = grams(to_tensor(style)[0], 0)
    got = grams(rgb, max(rgb.shape[-2:]) // 4)
    return float(np.mean([float((got[n] - target[n]).square().sum()
                                / target[n].square().sum()) for n in target]))


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


class OpCounter(TorchDispatchMode):
    """The operations a step dispatches: compute (a kernel launch on a GPU) and views (host
    work only: shape and stride bookkeeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.compute = self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.is_view or func in _ALIASES:
            self.views += 1
        else:
            self.compute += 1
        return func(*args, **(kwargs or {}))


_ALIASES = {torch.ops.aten.detach.default, torch.ops.aten.alias.default}


def one_step(size: int, seamless: bool, weights, device: str = "cpu",
             amp: torch.dtype | None = None):
    """A function running one optimisation step's forward and backward at ``size`` px
    (square, gram loss), as the engine runs it (the engine's objective and model)."""
    dev = torch.device(device)
    params = StyleParams().with_overrides(seamless=seamless)
    model, _ = model_for(weights, None, params, dev)
    g = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 128, 128, generator=g).to(dev)
    objective = Objective(model, params, [(style, None, 1.0)], amp, torch.Generator().manual_seed(0))
    objective.set_content(torch.rand(1, 3, size, size, generator=g).to(dev))
    x = torch.rand(1, 3, size, size, generator=g).to(dev).requires_grad_()

    def step():
        x.grad = None
        total, _ = objective(x)
        total.backward()
    return step, x


def step_ops(size: int, seamless: bool, weights, device: str = "cpu") -> tuple[int, int]:
    """(compute, view) operations of one step in the engine's precision on ``device``
    (autocast's casts included), counted after a warm-up step."""
    from nst_engine.device.resolve import device_precision

    amp = device_precision(torch.device(device)).dtype
    step, _ = one_step(size, seamless, weights, device, amp)
    step()
    with OpCounter() as c:
        step()
    return c.compute, c.views


def saved_bytes(size: int, seamless: bool, weights, amp: torch.dtype | None) -> int:
    """Bytes the forward pass keeps for the backward pass (each storage once)."""
    step, x = one_step(size, seamless, weights, amp=amp)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        kept[st.data_ptr()] = st.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    kept.pop(x.untyped_storage().data_ptr(), None)  # the image itself: not the step's
    return sum(kept.values())


def step_rows(size: int, repeats: int, weights) -> None:
    """``--step``: one step's dispatched operations with and without the option, the CPU
    time of a step (pairs alternated, median), and the bytes kept for the backward pass."""
    steps = {on: one_step(size, on, weights)[0] for on in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for on in (False, True):
        steps[on]()
    for i in range(repeats):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            t = time.perf_counter()
            steps[on]()
            times[on].append(time.perf_counter() - t)
    for on in (False, True):
        compute, views = step_ops(size, on, weights)
        print(f"seamless={str(on):5} {size} px: {compute} compute + {views} view operations "
              f"a step; CPU step median {1000 * float(np.median(times[on])):.1f} ms "
              f"({repeats} steps, min {1000 * min(times[on]):.1f})", flush=True)
    for amp in (None, torch.bfloat16):
        b = {on: saved_bytes(size, on, weights, amp) for on in (False, True)}
        print(f"{str(amp or 'float32'):15} {size} px: kept for backward "
              f"{b[False] / size**2:.0f} B/px plain, {b[True] / size**2:.0f} seamless "
              f"(x{b[True] / b[False]:.3f})", flush=True)


def resize_rows(repeats: int = 5) -> None:
    """``--resize``: the seamless resize against the plain one, and against the old pad of a
    whole period (kept here as it was, for the comparison): the cases of issue 31."""
    import math

    def period_padded(t, hw):
        down = hw[0] * hw[1] < t.shape[-2] * t.shape[-1]

        def margin(n, m):
            step = n // math.gcd(n, m)
            need = math.ceil(2 * max(1.0, n / m)) + 1
            p = min(n, step * math.ceil(need / step))
            return p, p * m // n
        (h, w), (oh, ow) = t.shape[-2:], hw
        (ph, qh), (pw, qw) = margin(h, oh), margin(w, ow)
        out = F.interpolate(F.pad(t, (pw, pw, ph, ph), mode="circular"),
                            size=(oh + 2 * qh, ow + 2 * qw),
                            mode="bilinear" if down else "bicubic", align_corners=False,
                            antialias=down)
        return out[..., qh:qh + oh, qw:qw + ow].clamp(0, 1)
    for src, dst in (((1001, 1335), (512, 688)), ((1536, 2048), (3001, 4001))):
        t = torch.rand(1, 3, *src, generator=torch.Generator().manual_seed(0))
        ways = {"plain": lambda: resize(t, dst), "wrap": lambda: resize(t, dst, wrap=True),
                "old period pad": lambda: period_padded(t, dst)}
        best = {}
        for name, f in ways.items():
            f()
            ts = []
            for _ in range(repeats):
                s = time.perf_counter()
                f()
                ts.append(time.perf_counter() - s)
            best[name] = min(ts)
        diff = (resize(t, dst, wrap=True) - period_padded(t, dst)).abs().max().item()
        print(f"{src} -> {dst}: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in best.items())
              + f" (best of {repeats}); wrap vs old: max difference {diff:.1e}", flush=True)


def calibrate(sizes: str, weights: str) -> None:
    """``--calibrate``: bytes per pixel of one level with and without the option, measured as
    ``bench_tiles.py --calibrate`` measures the table's figures (its worker: a fresh process
    per row, the peak's growth above the resident memory at "preparing"), gram loss, float32
    and bfloat16. The quotient is ``memory.SEAMLESS_FACTOR``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_tiles import _run

    print("\n| precision | size | pixels | MB plain | MB seamless | B/px plain | "
          "B/px seamless | seamless / plain (slope) |")
    print("|---|---|---|---|---|---|---|---|")
    for bf16 in ("0", "1"):
        prev: dict[bool, tuple[int, float]] = {}
        for size in (int(s) for s in sizes.split(",")):
            px, row = size * (size * 3 // 4), {}
            for on in (False, True):
                r = _run({"size": size, "weights": weights,
                          "params": {"max_size": size, "levels": 1, "iterations": 3,
                                     "seed": 0, "full_resolution": "never",
                                     "style_scale": 0.1, "seamless": on}},
                         env={"NST_ENGINE_CPU_BF16": bf16})
                row[on] = r.get("extra_mb", float("nan"))
            slopes = {on: (row[on] - prev[on][1]) * 2**20 / (px - prev[on][0])
                      for on in row if on in prev}
            ratio = f"{slopes[True] / slopes[False]:.3f}" if len(slopes) == 2 else ""
            fmt = {on: f"{slopes[on]:.0f}" if on in slopes else "" for on in row}
            print(f"| {'bfloat16' if bf16 == '1' else 'float32'} | {size} | {px} | "
                  f"{row[False]:.0f} | {row[True]:.0f} | {fmt[False]} | {fmt[True]} | "
                  f"{ratio} |", flush=True)
            prev = {on: (px, row[on]) for on in row}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--seeds", default="1,2,3", help="one pair of runs per seed")
    ap.add_argument("--tile", type=int, help="run in tiles of this side (seamless: around a "
                    "torus); the seam row then also gives the joins between tiles")
    ap.add_argument("--device", default="cpu", help="where the runs execute (the style "
                    "losses are judged on the CPU)")
    ap.add_argument("--weights", help="VGG19 weights (default: random ones made here)")
    ap.add_argument("--calibrate", metavar="SIZES", help="only the memory rows: bytes per "
                    "pixel with and without the option at these widths (e.g. 256,512,768)")
    ap.add_argument("--step", type=int, metavar="PX", help="only one step at this size: "
                    "its operations, CPU time and bytes kept for the backward pass")
    ap.add_argument("--repeats", type=int, default=10, help="--step: timed steps")
    ap.add_argument("--resize", action="store_true", help="only the seamless resize's time")
    args = ap.parse_args()
    if args.resize:
        resize_rows()
        return 0
    weights = args.weights or make_random_vgg19_file(
        Path(tempfile.mkdtemp()) / "vgg19-random.pth")
    if args.calibrate:
        calibrate(args.calibrate, str(weights))
        return 0
    if args.step:
        step_rows(args.step, args.repeats, weights)
        return 0
    style = stripes(128)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"{args.size} px, "
          f"{args.levels} levels, {args.iterations} iterations, "
          f"NST_ENGINE_CPU_BF16={os.environ.get('NST_ENGINE_CPU_BF16')}")
    for on in (False, True):  # both models loaded before anything is timed
        stylize(content=tiling_content(64), styles=[(style, 1.0)], device=args.device,
                weights=weights, params=StyleParams().with_overrides(
                    max_size=64, levels=1, iterations=1, seamless=on))
    ratios: dict[str, list[float]] = {"seam": [], "seam_off": [], "null": [], "neutral": [],
                                      "plain": [], "own": [], "time": [], "cpu": []}
    for i, seed in enumerate(int(v) for v in args.seeds.split(",")):
        content = tiling_content(args.size, seed)  # the seed changes the content's noise too
        print(f"seed {seed}, the content itself: {seams(content)}")
        row = {}
        # Every other pair in the other order, so a machine that speeds up or slows down
        # over the benchmark favours neither.
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            params = StyleParams().with_overrides(max_size=args.size, levels=args.levels,
                                                  iterations=args.iterations, seed=seed,
                                                  seamless=on, tile_size=args.tile)
            t, cpu = time.perf_counter(), time.process_time()
            out = stylize(content=content, styles=[(style, 1.0)], params=params,
                          device=args.device, weights=weights)
            row[on] = {"time": time.perf_counter() - t, "cpu": time.process_time() - cpu,
                       "seam": seam(out),
                       "null": seam(out, roll=4),
                       "neutral": neutral_style_loss(out, style, params, weights),
                       "plain": style_loss(out, style, params, weights),
                       "own": style_loss(out, style, params, weights, own=True)}
            if args.tile:
                print(f"  joins between tiles: {joins(out, args.tile, on):.3f}")
            print(f"seed {seed} seamless={str(on):5} {seams(out)}  style loss neutral "
                  f"{row[on]['neutral']:.4f}, plain network {row[on]['plain']:.4f}, own "
                  f"network {row[on]['own']:.4f}  time {row[on]['time']:.1f} s (CPU "
                  f"{row[on]['cpu']:.1f} s)", flush=True)
        off, on_ = row[False], row[True]
        ratios["seam"].append(on_["seam"])
        ratios["seam_off"].append(off["seam"])
        ratios["null"].append(on_["null"])
        for key in ("neutral", "plain", "own", "time", "cpu"):
            ratios[key].append(on_[key] / off[key])

    def span(v: list[float], pct: bool = False) -> str:
        f = (lambda x: f"{100 * (x - 1):+.1f} %") if pct else (lambda x: f"{x:.3f}")
        return f"median {f(float(np.median(v)))} ({f(min(v))} .. {f(max(v))})"
    print(f"\nover {len(ratios['seam'])} seeds, with the option against without it:")
    print(f"  seam ratio with the option   {span(ratios['seam'])}; without it "
          f"{span(ratios['seam_off'])}; null (no seam there) {span(ratios['null'])}")
    print(f"  style loss, neutral judge    {span(ratios['neutral'], True)}")
    print(f"  style loss, plain network    {span(ratios['plain'], True)}")
    print(f"  style loss, own networks     {span(ratios['own'], True)}")
    print(f"  time                         {span(ratios['time'], True)}")
    print(f"  CPU time                     {span(ratios['cpu'], True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
