"""Seconds per iteration and peak memory: the engine vs a plain tutorial-style loop.

    python benchmarks/bench_iteration.py [--sizes 256,512,1024] [--iterations 4] [--rounds 1]
                                         [--threads N] [--device auto] [--extra]

Every measurement runs in a fresh subprocess, so peak memory is that run's alone: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident set size
(``getrusage`` maxrss, whole process: interpreter, torch, model, loading) and what the
iterations add on top of the memory resident when they start (Linux: VmHWM, reset through
/proc/self/clear_refs just before the loop, minus VmRSS at that moment).

s/iter is the fastest measured iteration (the machine is shared: the minimum is the least
disturbed figure); the JSON of each worker also has the median. ``--rounds N`` runs every row N
times, the rows interleaved (plain, engine, ..., plain, engine, ...), and keeps each row's best,
so a burst of load from other processes hits all rows alike; each row's time over the plain
loop's in the same round is also printed (median and range over the rounds): the steadier
figure on a machine whose speed drifts. "CPU s/iter" is the process's CPU
time per iteration (best iteration): with ``--threads 1`` it is what the work costs whatever
else the machine runs (on a busy machine wall time also counts the waits for a core). Rows,
all at the same longest side (content 4:3, style square) and on the same random-weight VGG19:
  plain     the classic tutorial loop: torchvision ``vgg19().features`` whole (all 37 layers,
            max pooling), frozen, Gram matrices, Adam on the image, float32; targets computed
            once, as the PyTorch tutorial does
  engine    ``stylize()`` with the default parameters at one pyramid level of that size, in
            the precision the engine chooses here (CUDA: reduced; CPU: measured,
            ``nst_engine.device.cpu_precision``; ``NST_ENGINE_CPU_BF16`` is honoured)
  pyramid   ``stylize()`` as users run it: the default 3-level pyramid up to that size;
            seconds per iteration = optimisation time / iterations (most run on smaller levels)
  --extra adds, on the CPU: engine-float32 and engine-bf16 (each precision forced),
  engine-float32-nchw (float32 in the default memory format and autograd's Gram products: the
  engine before channels-last, for comparison), engine-float32-sysheap (float32 with glibc's
  heap as it is by default: freed large blocks go back to the kernel, ``nst_engine.device.heap``)
  and pyramid-float32.
Random weights cost the same time as real ones; the timings are real, the images are not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


def _images(size: int):
    """A content (4:3) and a style image of the given longest side, synthetic but textured."""
    import numpy as np
    from PIL import Image

    h = size * 3 // 4
    yy, xx = np.mgrid[0:h, 0:size]
    content = np.stack([xx * 255 // size, yy * 255 // h, 255 * ((xx // 32 + yy // 32) % 2)], -1)
    yy, xx = np.mgrid[0:size, 0:size]
    style = 127 + 120 * np.sin(xx[..., None] / 3.0 + np.array([0, 2, 4])) * np.cos(yy[..., None] / 5)
    return (Image.fromarray(content.astype(np.uint8)), Image.fromarray(style.astype(np.uint8)))


_rss_at_reset: list[float] = []


def _status_mb(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Start measuring the iterations' own peak (Linux: reset VmHWM to the current RSS)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _rss_at_reset.append(_status_mb("VmRSS"))
    except OSError:
        pass


def _peaks(device) -> dict:
    import torch

    out = {"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    hwm = _status_mb("VmHWM")
    if hwm is not None and _rss_at_reset and _rss_at_reset[-1] is not None:
        # Memory the iterations add on top of what was resident when they started.
        out["loop_extra_mb"] = hwm - _rss_at_reset[-1]
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def worker_plain(size: int, iterations: int, weights: str, device_name: str) -> dict:
    """The classic tutorial loop, nothing cut or cached beyond the targets."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from nst_engine.device.resolve import resolve_device
    from nst_engine.model.layers import INDEX

    device = resolve_device(device_name)
    cnn = torchvision.models.vgg19().features  # tutorials: vgg19(weights=...).features
    state = torch.load(weights, weights_only=True)
    cnn.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    del state
    cnn = cnn.to(device).eval().requires_grad_(False)
    for m in cnn:
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    wanted = {INDEX[n]: n for n in (*STYLE_LAYERS, CONTENT_LAYER)}

    def features(x):
        out, x = {}, (x - mean) / std
        for i, layer in enumerate(cnn):  # the whole of features, every time
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out

    def gram(f):
        b, c, h, w = f.shape
        f = f.view(b * c, h * w)
        return f @ f.t() / (b * c * h * w)

    from nst_engine.transfer.convert import to_tensor as _to_tensor
    content_img, style_img = _images(size)
    content = _to_tensor(content_img)[0].to(device)
    style = _to_tensor(style_img)[0].to(device)
    _sync(device)
    _reset_peak()  # like the engine rows: targets and iterations, not loading
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        c_target = features(content)[CONTENT_LAYER]
        s_targets = {n: gram(f) for n, f in features(style).items() if n in STYLE_LAYERS}
    x = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.02)
    times, cpu = [], []
    for _ in range(iterations + 1):
        t, c = time.perf_counter(), time.process_time()
        opt.zero_grad()
        f = features(x)
        loss = F.mse_loss(f[CONTENT_LAYER], c_target)
        loss = loss + 1e6 * sum(F.mse_loss(gram(f[n]), s_targets[n]) for n in STYLE_LAYERS)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        _sync(device)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"sec_per_iter": min(times[1:]), "median": statistics.median(times[1:]),
            "cpu_per_iter": min(cpu[1:]), **_peaks(device)}


def _default_layout() -> None:
    """The engine as it was before channels-last: default memory format for the image and the
    weights, and autograd's own Gram products (whose gradient comes back row-major)."""
    import torch

    from nst_engine.transfer import losses
    from nst_engine.transfer.objective import Objective

    real = Objective.features

    def features(self, img):
        self.model.to(memory_format=torch.contiguous_format)
        if self.amp is None:
            return self.model(img.contiguous())
        return real(self, img)

    Objective.features = features
    losses.self_product = lambda cols: cols @ cols.t()


def worker_engine(size: int, iterations: int, weights: str, device_name: str, *,
                  levels: int = 1, precision: str | None = None, nchw: bool = False,
                  system_heap: bool = False) -> dict:
    import torch

    from nst_engine import StyleParams
    from nst_engine.device.resolve import autocast_dtype
    from nst_engine.transfer import stylize
    from nst_engine.device.cpu_precision import ENV
    from nst_engine.device.resolve import resolve_device

    device = resolve_device(device_name)
    if precision is not None:
        os.environ[ENV] = {"float32": "0", "bf16": "1"}[precision]
    if nchw:
        _default_layout()
    if system_heap:
        from nst_engine.device import heap
        heap._libc = None  # glibc's own settings: blocks above 32 MB mmapped, unmapped when freed
    params = StyleParams().with_overrides(max_size=size, levels=levels, iterations=iterations,
                                          seed=0)
    content, style = _images(size)
    stamps: list[tuple[str, int, float, float]] = []

    def progress(p):
        _sync(device)
        if p.stage == "preparing":
            _reset_peak()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
        stamps.append((p.stage, p.level, time.perf_counter(), time.process_time()))

    stylize(content=content, styles=[(style, 1.0)], params=params,
                           device=device_name, weights=weights, progress=progress)
    opt = [(t, c) for stage, _, t, c in stamps if stage == "optimizing"]
    amp = autocast_dtype(device)
    info = {"precision": str(amp).replace("torch.", "") if amp else "float32",
            **_peaks(device)}
    if levels == 1:
        steps = [b[0] - a[0] for a, b in zip(opt, opt[1:])]
        cpu = [b[1] - a[1] for a, b in zip(opt, opt[1:])]
        return {"sec_per_iter": min(steps), "median": statistics.median(steps),
                "cpu_per_iter": min(cpu), **info}
    start = next((t, c) for stage, _, t, c in stamps if stage == "preparing")
    sec = (opt[-1][0] - start[0]) / iterations
    return {"sec_per_iter": sec, "median": sec,
            "cpu_per_iter": (opt[-1][1] - start[1]) / iterations, **info}


MODES = {
    "plain": worker_plain,
    "engine": worker_engine,
    "pyramid": lambda *a: worker_engine(*a, levels=3),
    "engine-float32": lambda *a: worker_engine(*a, precision="float32"),
    "engine-bf16": lambda *a: worker_engine(*a, precision="bf16"),
    "engine-float32-nchw": lambda *a: worker_engine(*a, precision="float32", nchw=True),
    "engine-float32-sysheap": lambda *a: worker_engine(*a, precision="float32",
                                                       system_heap=True),
    "pyramid-float32": lambda *a: worker_engine(*a, levels=3, precision="float32"),
}


def _measure(mode: str, size: int, iterations: int, weights: str, device: str,
             threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--sizes", str(size), "--iterations",
           str(iterations), "--weights", weights, "--device", device]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine(device: str) -> str:
    import platform

    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    gpu = f", GPU {torch.cuda.get_device_name()}" if device != "cpu" and \
        torch.cuda.is_available() else ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cap = "".join(f", {e}={os.environ[e]} (an ISA cap, not other hardware)"
                  for e in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA") if os.environ.get(e))
    return (f"{cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}){gpu}"
            f"{cap}; torch {torch.__version__}, Python {platform.python_version()}; "
            f"load average at start {load:.2f}")


def _precision_line() -> str:
    """The CPU precision the engine would choose here, measured now (the cache untouched)."""
    from nst_engine.device.cpu_precision import measure, override

    forced = override()
    if forced is not None:
        return f"NST_ENGINE_CPU_BF16 forces {'bfloat16' if forced else 'float32'}"
    m = measure()
    return (f"probe float32 {m.fp32_ms} ms, bfloat16 {m.bf16_ms} ms, best of {m.rounds}: "
            f"{'bfloat16' if m.bf16 else 'float32'} ({m.seconds:.2f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--iterations", type=int, default=4,
                    help="measured iterations per row (plus one warm-up for single levels)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every row this many times, rows interleaved; keep each one's best")
    ap.add_argument("--threads", type=int, help="torch threads in the workers (OMP_NUM_THREADS)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--weights", help="a VGG19 file (default: a random-weight one, made here)")
    ap.add_argument("--extra", action="store_true", help="also the engine variants")
    ap.add_argument("--modes", help=f"exactly these rows, comma-separated: {', '.join(MODES)}")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.worker:
        print(json.dumps(MODES[args.worker](sizes[0], args.iterations, args.weights,
                                            args.device)))
        return 0

    from nst_engine.device.resolve import resolve_device

    device = resolve_device(args.device).type
    print(f"# {_machine(device)}; device {device}; {args.iterations} iterations per row, "
          f"best of {args.rounds} interleaved round(s)")
    if device == "cpu":
        print(f"# CPU precision: {_precision_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            from nst_engine.testing import make_random_vgg19_file
            weights = str(make_random_vgg19_file(Path(tmp) / "random-vgg19.pth"))
        modes = ["plain", "engine", "pyramid"]
        if args.extra:
            modes += ["engine-float32", "engine-bf16", "engine-float32-nchw",
                      "engine-float32-sysheap", "pyramid-float32"]
        if args.modes:
            modes = args.modes.split(",")
        mem_key = "cuda_peak_mb" if device == "cuda" else "maxrss_mb"
        print(f"| size | run | precision | s/iter (min) | median | speed-up vs plain | "
              f"CPU s/iter | CPU time / plain's | peak MB ({mem_key}) | "
              "MB added by the iterations |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for size in sizes:
            best: dict[str, dict] = {}
            paired: dict[str, list[float]] = {}  # mode -> its time / plain's, per round
            for round_no in range(1, args.rounds + 1):
                plain_now = None
                for mode in modes:
                    # The pyramid's finest level gets a third of the steps: give it the same.
                    n = args.iterations * 3 if mode.startswith("pyramid") else args.iterations
                    r = _measure(mode, size, n, weights, device, args.threads)
                    print(f"# round {round_no}, {size} px, {mode}: "
                          + (f"{r['sec_per_iter']:.3f} s/iter, CPU {r['cpu_per_iter']:.3f}"
                             if "error" not in r else f"failed: {r['error']}"),
                          file=sys.stderr, flush=True)
                    if "error" not in r:
                        if mode == "plain":
                            plain_now = r["sec_per_iter"]
                        elif plain_now:
                            paired.setdefault(mode, []).append(r["sec_per_iter"] / plain_now)
                    old = best.get(mode)
                    if old is None or "error" in old:
                        best[mode] = r
                    elif "error" not in r:
                        cpu = min(r["cpu_per_iter"], old["cpu_per_iter"])
                        if r["sec_per_iter"] < old["sec_per_iter"]:
                            best[mode] = r
                        best[mode]["cpu_per_iter"] = cpu
            base = best.get("plain", {})
            for mode in modes:
                r = best[mode]
                if "error" in r:
                    print(f"| {size} | {mode} | | failed: {r['error']} | | | | | | |")
                    continue
                ratio = (f"{base['sec_per_iter'] / r['sec_per_iter']:.2f}x"
                         if "sec_per_iter" in base else "-")
                cratio = (f"{r['cpu_per_iter'] / base['cpu_per_iter']:.2f}"
                          if "cpu_per_iter" in base else "-")
                print(f"| {size} | {mode} | {r.get('precision', 'float32')} | "
                      f"{r['sec_per_iter']:.3f} | {r['median']:.3f} | {ratio} | "
                      f"{r['cpu_per_iter']:.3f} | {cratio} | "
                      f"{r.get(mem_key, float('nan')):.0f} | "
                      f"{r.get('loop_extra_mb', float('nan')):.0f} |", flush=True)
            for mode, ratios in paired.items():
                # The VM's speed drifts between rounds: the rows of one round ran seconds
                # apart, so their quotient is steadier than the quotient of the best rows.
                print(f"# {size} px, {mode} / plain within each round: median "
                      f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-"
                      f"{max(ratios):.2f}, {len(ratios)} rounds)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
