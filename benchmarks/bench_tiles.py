"""Tiles on the CPU: peak memory of a full-resolution run in tiles against the same run whole,
the seam measure, and the memory model's bytes per pixel.

    python benchmarks/bench_tiles.py [--size 768] [--tile 256] [--iterations 4]
    python benchmarks/bench_tiles.py --calibrate [--sizes 256,512,768,1024] [--style-losses gram]

Every run is a fresh subprocess, so its peak is its own: ``getrusage`` maxrss of the whole
process, and what the style transfer adds on top of what was resident when it started
(Linux: VmHWM reset through /proc/self/clear_refs at the "preparing" report, minus VmRSS then).

Rows:
  memory   one level at the content's own size (``--max-size full``), whole and in tiles of
           ``--tile`` px: peak memory and time
  seam     a 2-level run up to the content's own size, whole and with the finest level in
           tiles: ``tiles.seam_ratio`` (gradient energy in the blended bands / elsewhere) of
           each, and their quotient (1.00 = no seam; target within 2 %)
  --calibrate  bytes per pixel of one level in float32 and bfloat16 (the growth of the
           peak between sizes) for each ``--style-losses`` entry, the figures
           ``nst_engine/device/memory.py`` uses
Random VGG19 weights (made here unless --weights): real timings and memory, not real images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_iteration import _reset_peak, _rss_at_reset, _status_mb  # noqa: E402


def _photo(w: int, h: int):
    """A synthetic photo: smooth shapes and fine noise, so a seam would show."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([90 + 60 * np.sin(xx / 23.0), 90 + 60 * np.cos(yy / 17.0),
                    120 + 50 * np.sin((xx + yy) / 29.0)], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def _style(size: int = 256):
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    rgb = 127 + 120 * np.sin(xx[..., None] / 3.0 + np.array([0, 2, 4])) * np.cos(yy[..., None] / 5)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def worker(spec: dict) -> dict:
    """One stylize() run as ``spec`` says; peak memory, time, tiles and the seam measure."""
    import numpy as np
    import torch

    from nst_engine import StyleParams
    from nst_engine.transfer import tiles
    from nst_engine.transfer import stylize

    seen: dict = {"tiles": 0}
    start: list[float] = []

    def progress(p):
        if p.stage == "preparing":
            _reset_peak()
            start.append(time.perf_counter())
        if p.stage == "optimizing":
            seen["tiles"] = max(seen["tiles"], p.tiles)
            seen["hw"] = (p.width, p.height)

    w, h = spec["size"], spec["size"] * 3 // 4
    params = StyleParams().with_overrides(**spec["params"])
    out = stylize(content=_photo(w, h), styles=[(_style(), 1.0)], params=params, device="cpu",
                  weights=spec["weights"], progress=progress)
    result = {"seconds": time.perf_counter() - start[0], "tiles": seen["tiles"],
              "hw": seen.get("hw"),
              "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    hwm = _status_mb("VmHWM")
    if hwm is not None and _rss_at_reset and _rss_at_reset[0] is not None:
        result["extra_mb"] = hwm - _rss_at_reset[0]
    if spec.get("seam_tile"):
        img = torch.from_numpy(np.asarray(out, np.float32) / 255).permute(2, 0, 1)
        rows, cols = tiles.seams(tiles.grid((h, w), spec["seam_tile"]))
        result["seam_ratio"] = tiles.seam_ratio(img, rows, cols)
    return result


def _run(spec: dict, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine() -> str:
    import platform

    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, Python "
            f"{platform.python_version()}; load average at start {load:.2f}")


def memory_rows(args, weights: str) -> None:
    full = {"max_size": args.size, "levels": 1, "iterations": args.iterations, "seed": 0,
            "full_resolution": "always"}
    print(f"\n| run ({args.size}x{args.size * 3 // 4}, one level, {args.iterations} steps) | "
          "tiles | peak RSS MB (process) | MB added by the run | seconds |")
    print("|---|---|---|---|---|")
    for name, extra in (("whole", {}), (f"tiles of {args.tile} px", {"tile_size": args.tile})):
        r = _run({"size": args.size, "weights": weights, "params": {**full, **extra}})
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | |", flush=True)
            continue
        print(f"| {name} | {r['tiles']} | {r['maxrss_mb']:.0f} | {r.get('extra_mb', 0):.0f} | "
              f"{r['seconds']:.1f} |", flush=True)


def seam_rows(args, weights: str) -> None:
    params = {"max_size": args.size // 2, "levels": 2, "iterations": args.seam_iterations,
              "seed": 0, "full_resolution": "always"}
    tile = args.seam_tile
    whole = _run({"size": args.size, "weights": weights, "params": params, "seam_tile": tile})
    tiled = _run({"size": args.size, "weights": weights, "seam_tile": tile,
                  "params": {**params, "tile_size": tile}})
    print(f"\n| seam ({args.size}x{args.size * 3 // 4}, 2 levels, {args.seam_iterations} steps, "
          f"finest in tiles of {tile} px) | seam ratio | seconds |")
    print("|---|---|---|")
    for name, r in (("whole", whole), ("tiled", tiled)):
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | |")
        else:
            print(f"| {name} ({r['tiles']} tiles) | {r['seam_ratio']:.4f} | {r['seconds']:.1f} |")
    if "error" not in whole and "error" not in tiled:
        q = tiled["seam_ratio"] / whole["seam_ratio"]
        print(f"| **tiled / whole** | **{q:.4f}** ({(q - 1) * 100:+.1f} %) | |", flush=True)


def calibrate(args, weights: str) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print("\n| style loss | precision | size | pixels | MB added by the run | "
          "bytes/px vs the previous size |")
    print("|---|---|---|---|---|---|")
    for loss in args.style_losses.split(","):
        for bf16 in ("0", "1"):
            prev = None
            for size in sizes:
                r = _run({"size": size, "weights": weights,
                          "params": {"max_size": size, "levels": 1, "iterations": 3, "seed": 0,
                                     "full_resolution": "never", "style_scale": 0.1,
                                     "style_loss": loss}},
                         env={"NST_ENGINE_CPU_BF16": bf16})
                px = size * (size * 3 // 4)
                precision = "bfloat16" if bf16 == "1" else "float32"
                if "error" in r:
                    print(f"| {loss} | {precision} | {size} | failed: {r['error']} | | |")
                    continue
                slope = "" if prev is None else \
                    f"{(r['extra_mb'] - prev[1]) * 2**20 / (px - prev[0]):.0f}"
                print(f"| {loss} | {precision} | {size} | {px} | {r['extra_mb']:.0f} | "
                      f"{slope} |", flush=True)
                prev = (px, r["extra_mb"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=768, help="content width (4:3)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--seam-tile", type=int, default=256)
    ap.add_argument("--seam-iterations", type=int, default=40)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--only", choices=("memory", "seam"), help="one kind of row")
    ap.add_argument("--sizes", default="256,512,768,1024")
    ap.add_argument("--style-losses", default="gram",
                    help="--calibrate: comma-separated style losses (gram,mean_cov,"
                         "sliced_wasserstein)")
    ap.add_argument("--weights")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    print(f"# {_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            from nst_engine.testing import make_random_vgg19_file
            weights = str(make_random_vgg19_file(Path(tmp) / "random-vgg19.pth"))
        if args.calibrate:
            calibrate(args, weights)
        else:
            if args.only in (None, "memory"):
                memory_rows(args, weights)
            if args.only in (None, "seam"):
                seam_rows(args, weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
