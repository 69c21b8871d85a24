"""Engine start and per-run overhead, through the client code the plug-in uses.

    python benchmarks/bench_startup.py [--baseline REV] [--repeat 3] [--device cpu]

Rows (each the minimum of ``--repeat`` runs; the machine may be shared, and the minimum is the
least disturbed figure):

- ``import torchvision`` after ``import torch``: what the engine no longer pays.
- cold start → hello: ``PipeClient(serve argv).start()``: Python, torch, weights, model.
  For this checkout, and for ``--baseline REV`` (``git archive``d into a temporary folder), so
  "today" and "now" are measured on the same machine at the same time.
- cold warm-engine start → hello: ``from_config`` with ``keep_warm`` and no engine running
  (``attach`` starts one): what the first run after login (or after ``keep_warm``) pays.
- first job overhead, warm job overhead, at 0.2 MP and 12 MP: a whole plug-in run's wall time
  (``from_config`` → ``start`` → ``stylize`` → ``close``) minus the optimisation's own time
  (from the ``preparing`` progress message, sent once the inputs are tensors, to the last
  ``optimizing`` one, as the client receives them: style targets and every step). What remains
  is start/connect, sending and receiving the pixels, the engine's conversion of the full-size
  images to tensors and of the result back (resize to full size, 8-bit), and closing.

Random-weight VGG19 (the same cost as the real one). Never touches a real warm engine: its
own NST_RUNTIME_DIR, and the engine it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nst_engine.bridge import warm  # noqa: E402
from nst_engine.bridge.client import EngineClient, PipeClient  # noqa: E402
from nst_engine.bridge.wire import RGBAImage  # noqa: E402

#: A short optimisation: what remains of the wall time is the overhead being measured.
JOB = {"iterations": 4, "max_size": 128, "levels": 1, "seed": 1}
SIZES = {"0.2 MP": (516, 388), "12 MP": (4000, 3000)}


def image(w: int, h: int) -> RGBAImage:
    row = bytes((x * 7 % 256, x * 3 % 256, 128, 255)[c] for x in range(w) for c in range(4))
    data = b"".join(row[(y % 64) * 4:] + row[:(y % 64) * 4] for y in range(h))
    return RGBAImage(w, h, data)


def checkout_of(rev: str, dst: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev, "nst_engine"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dst)
    return dst


def serve_argv(weights: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "nst_engine", "serve", "--weights", str(weights),
            "--device", device]


def cold_hello(tree: Path, weights: Path, device: str, log: Path) -> float:
    client = PipeClient(serve_argv(weights, device), pythonpath=[str(tree)], log_path=log)
    t0 = time.perf_counter()
    client.start()
    t = time.perf_counter() - t0
    client.close()
    return t


def plugin_run(cfg: dict, content: RGBAImage, style: RGBAImage, **kw) -> tuple[float, float]:
    """(wall, optimisation) seconds of one plug-in run."""
    marks: list[float] = []

    def progress(p):
        if p.get("stage") in ("preparing", "optimizing"):
            marks.append(time.perf_counter())

    t0 = time.perf_counter()
    with EngineClient.from_config(cfg, **kw) as client:
        client.start()
        out = client.stylize(content, [(style, 1.0)], overrides=JOB, on_progress=progress)
    wall = time.perf_counter() - t0
    assert (out.width, out.height) == (content.width, content.height)
    return wall, (marks[-1] - marks[0]) if len(marks) > 1 else 0.0


def import_time(module: str, after: str = "") -> float:
    """Seconds ``import module`` takes in a fresh interpreter (after importing ``after``)."""
    code = (f"import time{', ' + after if after else ''}; t = time.perf_counter(); "
            f"import {module}; print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", metavar="REV", help="also time this git revision's engine")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", type=Path, help="VGG19 file (default: random weights)")
    p.add_argument("--sizes", default=",".join(SIZES), help="of: " + ", ".join(SIZES))
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nstb"))
    # `python -m` looks in the current folder first: out of the checkout, so each engine is
    # the tree its PYTHONPATH names (the baseline really is the baseline).
    os.chdir(tmp)
    os.environ["NST_RUNTIME_DIR"] = str(tmp / "run")
    os.environ[warm.BUILD_ENV] = "bench"  # others editing the checkout must not swap engines
    rows: list[tuple[str, float, str]] = []

    def row(name: str, values: list[float], note: str = "") -> None:
        rows.append((name, min(values), note))
        print(f"{name}: min {min(values):.2f} s of {', '.join(f'{v:.2f}' for v in values)}"
              f"{'  ' + note if note else ''}", flush=True)

    try:
        weights = args.weights
        if weights is None:
            from nst_engine.testing import make_random_vgg19_file
            weights = make_random_vgg19_file(tmp / "random-vgg19.pth")
        log = tmp / "engine.log"
        cfg = {"engine_command": serve_argv(weights, args.device),
               "engine_pythonpath": [str(ROOT)], "log_dir": str(tmp), "keep_warm": 300}
        style = image(256, 256)
        n = args.repeat
        row("import torch", [import_time("torch") for _ in range(n)])
        row("import torchvision (after torch)", [import_time("torchvision", "torch")
                                                 for _ in range(n)])
        # Interleaved, so a change in the machine's load hits both alike.
        trees = [("this checkout", ROOT)]
        if args.baseline:
            trees.insert(0, (args.baseline, checkout_of(args.baseline, tmp / "baseline")))
        hellos: dict[str, list[float]] = {name: [] for name, _ in trees}
        for _ in range(n):
            for name, tree in trees:
                hellos[name].append(cold_hello(tree, weights, args.device, log))
        for name, _ in trees:
            row(f"cold start → hello, {name}", hellos[name])
        sizes = [s.strip() for s in args.sizes.split(",")]
        for size in sizes:
            content = image(*SIZES[size])
            cold, warm_runs = [], []
            for _ in range(n):
                warm.stop_engine(tmp / "run", force=True)
                wall, opt = plugin_run(cfg, content, style)  # attach starts the engine
                cold.append(wall - opt)
                wall, opt = plugin_run(cfg, content, style)
                warm_runs.append(wall - opt)
            per_run = []
            for _ in range(n):
                wall, opt = plugin_run(cfg, content, style, keep_warm=0)
                per_run.append(wall - opt)
            row(f"{size}: per-run engine (keep_warm 0), whole run minus optimisation", per_run)
            row(f"{size}: first run, warm engine started by it, minus optimisation", cold)
            row(f"{size}: warm run overhead (wall minus optimisation)", warm_runs)
    finally:
        warm.stop_engine(tmp / "run", force=True)
        shutil.rmtree(tmp, ignore_errors=True)
    import torch
    print(f"\nmachine: {platform.node()}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"Python {platform.python_version()}, device {args.device}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\n| measurement | seconds (min of %d) |\n|---|---|" % args.repeat)
    for name, value, _ in rows:
        print(f"| {name} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
