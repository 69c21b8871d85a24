"""Every GPU figure of the full-resolution work, in one command on a CUDA machine.

    python benchmarks/bench_gpu.py [--sizes 512,1024,2048] [--device cuda] [--weights PATH]

Each row runs in a fresh subprocess (its own peak memory, its own CUDA context); random VGG19
weights unless --weights (same time and memory as real ones). Prints markdown tables:

  s/iter      one pyramid level at each size: the engine (losses read back every
              READBACK_STEPS steps) and the plain tutorial loop of bench_iteration.py (reads
              nothing back but syncs each step to time it). Engine s/iter = time between two
              read-backs / steps between them (each read-back waits for the device), the
              fastest such stretch after the first; plain = its fastest step.
              Also: the read-back cadence reached (steps between two reads: fewest, median,
              most; READBACK_STEPS is the most, READBACK_SECONDS cuts it shorter on a slow
              step) and the allocator's retries and out-of-memory errors
              (``torch.cuda.memory_stats``: num_alloc_retries, num_ooms; retries mean the
              caching allocator had to free and retry: the plan is near the memory's edge).
  sync        torch.cuda.set_sync_debug_mode("warn") around the Adam loop, off only while the
              losses are read back: the number of synchronising calls between read-backs
              (target 0), for every style loss (gram, mean_cov, sliced_wasserstein).
  balanced    the balanced preset on a 1600x1200 photo, in process, model loaded and one warm-up
              run first: as shipped (on a GPU: the photo's own size) and at 512 px (as before
              full resolution; before this work: 1.45 s on an H100, target <= 0.7 s).
  4000x3000   the balanced preset at full resolution (--max-size full) end to end, in process
              after a warm-up at 512 px (target <= 15 s on an H100), with its tiles if any.
  memory      peak torch.cuda.max_memory_allocated of one level per megapixel, against the
              table in nst_engine/device/memory.py.
  seamless    s/iter of one level at each size with and without ``seamless`` (issue 25: the
              run time within 5 %), each in a fresh subprocess, and the sync check with it on;
              also seamless with the wrap pad's line copies instead of its indexed border
              (``model.wrap.INDEXED_DEVICES`` emptied: the path before issue 31), the peaks'
              quotient (``memory.SEAMLESS_FACTOR``: 1.3 float32, 1.25 bf16/fp16) and the
              operations one step dispatches on the device (compute = kernel launches +
              views, ``bench_seamless.OpCounter``, at 256 px).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


#: The style losses the sync row checks: each has its own ops in the step loop.
STYLE_LOSSES = ("gram", "mean_cov", "sliced_wasserstein")


def cadence(stamps: list[tuple[int, float]]) -> dict:
    """Steps between read-backs from the progress reports' (iteration, time) stamps: every
    report follows a read-back. The first read counts from step 0."""
    steps = [b - a for a, b in zip([0] + [i for i, _ in stamps], [i for i, _ in stamps])
             if b > a]
    if not steps:
        return {"reads": 0}
    ordered = sorted(steps)
    return {"reads": len(steps), "steps_min": ordered[0],
            "steps_median": ordered[len(ordered) // 2], "steps_max": ordered[-1]}


def allocator(stats: dict) -> dict:
    """The caching allocator's retries and out-of-memory errors from ``memory_stats()``."""
    return {"alloc_retries": int(stats.get("num_alloc_retries", 0)),
            "ooms": int(stats.get("num_ooms", 0))}


def _images(w: int, h: int):
    """A synthetic photo (shapes and fine noise) and a 512 px style image."""
    from bench_tiles import _photo, _style

    return _photo(w, h), _style(512)


def _one_level(size: int, steps: int, **kw):
    from nst_engine import StyleParams

    return StyleParams().with_overrides(max_size=size, levels=1, iterations=steps, seed=0,
                                        full_resolution="never", **kw)


def w_engine(a: dict) -> dict:
    """s/iter of one level and its peak memory."""
    import torch

    from nst_engine.transfer import stylize

    size = a["size"]
    content, style = _images(size, size * 3 // 4)
    stamps = []

    def progress(p):
        if p.stage == "optimizing":
            stamps.append((p.iteration, time.perf_counter()))  # read-backs have synced
    kw = dict(content=content, styles=[(style, 1.0)], device=a["device"], weights=a["weights"])
    seamless = a.get("seamless", False)
    if a.get("lines"):  # the wrap pad as before issue 31: line copies on views
        from nst_engine.model import wrap
        wrap.INDEXED_DEVICES = ()
    stylize(params=_one_level(size, 30, seamless=seamless), **kw)  # warm-up: cuDNN's choice
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    stylize(params=_one_level(size, a["steps"], seamless=seamless), progress=progress, **kw)
    rates = [(t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(stamps[1:], stamps[2:])
             if i1 > i0]
    peak = torch.cuda.max_memory_allocated() - before
    from bench_seamless import step_ops
    ops = step_ops(256, seamless, a["weights"], a["device"])
    return {"sec_per_iter": min(rates), "peak_mb": peak / 2**20, "ops": ops,
            "mb_per_mp": peak / 2**20 / (size * (size * 3 // 4) / 1e6),
            "cadence": cadence(stamps), **allocator(torch.cuda.memory_stats())}


def w_plain(a: dict) -> dict:
    from bench_iteration import worker_plain

    return worker_plain(a["size"], a["steps"], a["weights"], a["device"])


def w_sync(a: dict) -> dict:
    """Synchronising calls inside the Adam loop, between read-backs."""
    import torch

    from nst_engine.transfer import optimise, pipeline

    content, style = _images(a["size"], a["size"] * 3 // 4)
    kw = dict(content=content, styles=[(style, 1.0)], device=a["device"], weights=a["weights"])
    loss = a.get("style_loss", "gram")
    one = dict(style_loss=loss, seamless=a.get("seamless", False))
    pipeline.stylize(params=_one_level(a["size"], 10, **one), **kw)  # warm-up
    real_read, real_adam = optimise.Readback.read, optimise.adam

    def read(self):
        torch.cuda.set_sync_debug_mode(0)  # the read-back is the one intended wait
        try:
            return real_read(self)
        finally:
            torch.cuda.set_sync_debug_mode("warn")

    def adam(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            return real_adam(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    optimise.Readback.read, optimise.adam = read, adam
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline.stylize(params=_one_level(a["size"], a["steps"], **one), **kw)
    syncs = [str(w.message).splitlines()[0] for w in caught
             if "synchroniz" in str(w.message).lower()]
    return {"syncs": len(syncs), "first": syncs[:3]}


def _timed(a: dict, content_hw: tuple[int, int], overrides: dict, repeats: int) -> dict:
    import torch

    from nst_engine.presets import resolve
    from nst_engine.transfer import stylize

    content, style = _images(content_hw[1], content_hw[0])
    kw = dict(content=content, styles=[(style, 1.0)], device=a["device"], weights=a["weights"])
    stylize(params=resolve("balanced", {"max_size": 512}), **kw)  # load the model, warm cuDNN
    seen = {"tiles": 0, "hw": None}

    def progress(p):
        if p.stage == "optimizing":
            seen["tiles"], seen["hw"] = max(seen["tiles"], p.tiles), (p.width, p.height)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        stylize(params=resolve("balanced", overrides), progress=progress, **kw)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"seconds": min(times), "all": times, "working_size": seen["hw"],
            "tiles": seen["tiles"], "peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def w_balanced(a: dict) -> dict:
    return {"shipped": _timed(a, (1200, 1600), {}, 3),
            "512px": _timed(a, (1200, 1600), {"max_size": 512}, 3)}


def w_full(a: dict) -> dict:
    return _timed(a, (3000, 4000), {"full_resolution": "always"}, 1)


WORKERS = {"engine": w_engine, "plain": w_plain, "sync": w_sync, "balanced": w_balanced,
           "full": w_full}


def _run(name: str, a: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", name, "--spec", json.dumps(a)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="512,1024,2048")
    ap.add_argument("--steps", type=int, default=150, help="steps per timed level")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--weights")
    ap.add_argument("--only", help="comma-separated: siter,sync,balanced,full,seamless")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(args.spec))))
        return 0

    import platform

    import torch

    from nst_engine.device.memory import BYTES_PER_PIXEL
    from nst_engine.device.resolve import device_precision
    from nst_engine.transfer.optimise import READBACK_STEPS

    if not torch.cuda.is_available():
        print("bench_gpu.py needs CUDA (no GPU here).", file=sys.stderr)
        return 1
    only = set((args.only or "siter,sync,balanced,full,seamless").split(","))
    precision = device_precision(torch.device(args.device))
    print(f"# GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}, Python {platform.python_version()}; read-back every "
          f"{READBACK_STEPS['cuda']} steps; {precision.name} convolutions"
          f"{' with loss scaling' if precision.loss_scale else ''} ({precision.reason}); "
          f"cuDNN deterministic during runs; TF32 off; {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            from nst_engine.testing import make_random_vgg19_file
            weights = str(make_random_vgg19_file(Path(tmp) / "random-vgg19.pth"))
        base = {"device": args.device, "weights": weights, "steps": args.steps}
        if "siter" in only:
            table = BYTES_PER_PIXEL["gram"][str(precision.dtype or "float32")]
            print(f"\n| size | engine s/iter | plain s/iter | engine / plain | engine peak MB | "
                  f"MB per MP (table: {table / 2**20 * 1e6:.0f}) | steps per read-back "
                  "(min/median/max) | alloc retries | OOMs |")
            print("|---|---|---|---|---|---|---|---|---|")
            for size in [int(s) for s in args.sizes.split(",")]:
                e = _run("engine", {**base, "size": size})
                p = _run("plain", {**base, "size": size, "steps": 20})
                if "error" in e or "error" in p:
                    print(f"| {size} | {e.get('error', '')} | {p.get('error', '')} "
                          "| | | | | | |")
                    continue
                c = e["cadence"]
                print(f"| {size} | {e['sec_per_iter'] * 1e3:.2f} ms | "
                      f"{p['sec_per_iter'] * 1e3:.2f} ms | "
                      f"{e['sec_per_iter'] / p['sec_per_iter']:.2f} | {e['peak_mb']:.0f} | "
                      f"{e['mb_per_mp']:.0f} | {c.get('steps_min')}/{c.get('steps_median')}/"
                      f"{c.get('steps_max')} | {e['alloc_retries']} | {e['ooms']} |",
                      flush=True)
        if "sync" in only:
            for loss in STYLE_LOSSES:
                r = _run("sync", {**base, "size": 512, "steps": 100, "style_loss": loss})
                print(f"\nsync debug mode, {loss}, 100 steps at 512 px: {r}", flush=True)
        if "balanced" in only:
            r = _run("balanced", base)
            print(f"\nbalanced on 1600x1200, in process (min of 3): {json.dumps(r)}", flush=True)
        if "full" in only:
            r = _run("full", base)
            print(f"\n4000x3000 at full resolution, end to end: {json.dumps(r)}", flush=True)
        if "seamless" in only:
            print("\n| size | s/iter | seamless s/iter | seamless / plain (bar <= 1.05) | "
                  "seamless, line pads | peak MB | seamless peak MB | peak quotient | "
                  "ops/step plain | seamless | seamless, line pads |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for size in [int(s) for s in args.sizes.split(",")]:
                off = _run("engine", {**base, "size": size})
                on = _run("engine", {**base, "size": size, "seamless": True})
                lines = _run("engine", {**base, "size": size, "seamless": True, "lines": True})
                if any("error" in r for r in (off, on, lines)):
                    print(f"| {size} | {off.get('error', '')} | {on.get('error', '')} | | "
                          f"{lines.get('error', '')} | | | | | | |")
                    continue

                def ops(r: dict) -> str:
                    return f"{r['ops'][0]} + {r['ops'][1]} views"
                print(f"| {size} | {off['sec_per_iter'] * 1e3:.2f} ms | "
                      f"{on['sec_per_iter'] * 1e3:.2f} ms | "
                      f"{on['sec_per_iter'] / off['sec_per_iter']:.3f} | "
                      f"{lines['sec_per_iter'] * 1e3:.2f} ms | {off['peak_mb']:.0f} | "
                      f"{on['peak_mb']:.0f} | {on['peak_mb'] / off['peak_mb']:.3f} | "
                      f"{ops(off)} | {ops(on)} | {ops(lines)} |", flush=True)
            r = _run("sync", {**base, "size": 512, "steps": 100, "seamless": True})
            print(f"\nsync debug mode, seamless, 100 steps at 512 px: {r}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
