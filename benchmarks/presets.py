"""Time every built-in preset on this machine's CPU; write the table to benchmarks/presets.md.

    python benchmarks/presets.py                      # every built-in, each run in full
    python benchmarks/presets.py --sample 6           # 6 steps per level, the rest extrapolated
    python benchmarks/presets.py --presets quick,balanced --out -   # print, write nothing
    python benchmarks/presets.py --section "AVX2 (ISA cap)"   # that section of presets.md

presets.md holds one section per CPU class; a run replaces the section of its ``--section``
name (default: the CPU model, the precision the engine uses and any ISA cap) and keeps the rest.

Runs on a generated content/style pair with a RANDOM-WEIGHT VGG19 file (the pretrained
weights cannot be downloaded here): the times are real, the pictures are not. Random and
pretrained weights have the same shapes, so the arithmetic, and the time, is the same.

``--sample N`` runs each preset with N steps on every pyramid level and times each level per
step (from the progress callbacks); the full preset's time is then
``fixed cost + sum(seconds per step at level L * steps at level L)``, where the fixed cost
(model load, style features, resizing) is what the sample run spent outside its steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nst_engine import presets  # noqa: E402
from nst_engine.params import StyleParams  # noqa: E402

CONTENT_SIZE = (1600, 1200)  # larger than any preset's max_size, 4:3 like a photo
STYLE_SIZE = (800, 800)


def test_images(seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """A smooth 'photo' with shapes, and a striped, noisy 'painting'."""
    rng = np.random.default_rng(seed)
    w, h = CONTENT_SIZE
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    content = np.stack([x, y, 1 - x * y], -1)
    content[((x - 0.4) ** 2 + (y - 0.35) ** 2) < 0.03] = (0.9, 0.2, 0.1)
    content = (content + rng.normal(0, 0.02, content.shape)).clip(0, 1)
    sw, sh = STYLE_SIZE
    sy, sx = np.mgrid[0:sh, 0:sw] / sw
    style = np.stack([np.sin(40 * sx) * 0.5 + 0.5, np.sin(25 * (sx + sy)) * 0.5 + 0.5,
                      rng.random((sh, sw))], -1)
    return (Image.fromarray((content * 255).astype(np.uint8)),
            Image.fromarray((style * 255).astype(np.uint8)))


def time_preset(params: StyleParams, content, style, weights: Path) -> dict:
    """Wall time of one stylize() on the CPU, and seconds per step on each level."""
    from nst_engine.transfer import stylize

    ticks: list[tuple[float, int, int]] = []  # (time, level, steps done)

    def progress(p) -> None:
        if p.stage == "optimizing":
            ticks.append((time.perf_counter(), p.level, p.iteration))

    t0 = time.perf_counter()
    stylize(content=content, styles=[(style, 1.0)], params=params, device="cpu",
            weights=weights, progress=progress)
    wall = time.perf_counter() - t0
    per_step = {}
    for level in sorted({lv for _, lv, _ in ticks}):
        lv = [(t, i) for t, lv_, i in ticks if lv_ == level]
        if len(lv) >= 2:  # the first step of a level also pays for its warm-up: skip it
            per_step[level] = (lv[-1][0] - lv[0][0]) / (lv[-1][1] - lv[0][1])
    return {"wall": wall, "per_step": per_step}


def estimate(params: StyleParams, sample_steps: int, content, style, weights: Path) -> dict:
    sample = params.with_overrides(iterations=sample_steps * len(params.level_sizes()))
    run = time_preset(sample, content, style, weights)
    per_step = run["per_step"]
    fixed = run["wall"] - sum(per_step[lv] * n for lv, n in
                              enumerate(sample.level_iterations(), 1))
    total = max(fixed, 0.0) + sum(per_step[lv] * n for lv, n in
                                  enumerate(params.level_iterations(), 1))
    return {"wall": total, "per_step": per_step}


def raw_step_seconds(longest: int, steps: int = 3) -> float:
    """One fp32 Adam step through VGG19 up to relu5_1 at a 4:3 size, no engine around it:
    a reference for how busy the machine was (compare with an idle run)."""
    import torch
    import torchvision

    net = torchvision.models.vgg19(weights=None).features[:30].eval().requires_grad_(False)
    x = torch.rand(1, 3, longest * 3 // 4, longest, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.02)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from nst_engine.device.resolve import autocast_dtype

    cap = next((f"{e}={os.environ[e]}" for e in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                if os.environ.get(e)), "")
    precision = "bfloat16" if autocast_dtype(torch.device("cpu")) else "float32"
    return {"cpu": cpu, "nproc": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "os": platform.platform(), "isa_cap": cap, "precision": precision}


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace the ``## heading`` section of ``path`` (up to the next ``## ``), or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Preset timings (CPU)\n"
    lines = text.rstrip("\n").split("\n")
    title = f"## {heading}"
    if title in lines:
        start = lines.index(title)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        lines[start:end] = [title, *body.rstrip("\n").split("\n"), ""]
    else:
        lines += ["", title, *body.rstrip("\n").split("\n")]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime not available)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", help="comma-separated names (default: every built-in)")
    ap.add_argument("--sample", type=int, metavar="N",
                    help="time N steps per level and extrapolate (default: full runs)")
    ap.add_argument("--full-under", type=float, default=0.0, metavar="SECONDS",
                    help="with --sample: still run in full a preset whose estimate is below "
                         "this")
    ap.add_argument("--weights", type=Path, help="VGG19 file (default: a generated random one)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "presets.md"),
                    help="markdown file to write, or - for stdout only")
    ap.add_argument("--section", help="the presets.md section to write (default: CPU model, "
                                      "precision and ISA cap)")
    ap.add_argument("--raw", metavar="SIZES",
                    help="only time bare VGG19 steps at these longest sides (e.g. 128,256,512)")
    args = ap.parse_args(argv)
    if args.raw:
        print(f"load: {load()}")
        for size in map(int, args.raw.split(",")):
            print(f"| {size} | {raw_step_seconds(size):.3f} |", flush=True)
        print(f"load: {load()}")
        return 0

    pset = presets.load_presets(user_dir=Path(tempfile.mkdtemp()))  # built-ins only
    names = args.presets.split(",") if args.presets else sorted(pset.builtins)
    content, style = test_images()
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            from nst_engine.testing import make_random_vgg19_file
            weights = make_random_vgg19_file(Path(tmp) / "vgg19-random.pth")
        load_before = load()
        rows = []
        for name in names:
            params = presets.resolve(name, user_dir=Path(tmp) / "none")
            params = params.with_overrides(seed=0)
            how = "full run"
            if args.sample:
                r = estimate(params, args.sample, content, style, weights)
                how = f"extrapolated from {args.sample} steps/level"
                if r["wall"] < args.full_under:
                    r, how = time_preset(params, content, style, weights), "full run"
            else:
                r = time_preset(params, content, style, weights)
            steps = " + ".join(f"{n}@{s}" for s, n in zip(params.level_sizes(),
                                                          params.level_iterations()))
            finest = r["per_step"].get(len(params.level_sizes()))
            rows.append(f"| {name} | {params.max_size} | {steps} | {params.optimizer} | "
                        f"{r['wall']:.1f} | {finest:.3f} | {how} |" if finest else
                        f"| {name} | {params.max_size} | {steps} | {params.optimizer} | "
                        f"{r['wall']:.1f} | - | {how} |")
            print(rows[-1], flush=True)
        load_after = load()

    m = machine()
    cap = f", {m['isa_cap']} (an ISA cap on this CPU, not other hardware)" if m["isa_cap"] else ""
    heading = args.section or f"{m['cpu']}, {m['precision']}{cap}"
    text = "\n".join([
        "Made with **random VGG19 weights** (`nst_engine.testing`): the times are real, the "
        "pictures are not.",
        f"Content {CONTENT_SIZE[0]}x{CONTENT_SIZE[1]}, one style {STYLE_SIZE[0]}x"
        f"{STYLE_SIZE[1]}, device cpu, seed 0.",
        "",
        "Command: `" + " ".join(["python benchmarks/presets.py", *(argv or sys.argv[1:])]) + "`",
        "",
        f"Machine: {m['cpu']}, nproc {m['nproc']}, torch threads {m['threads']}, "
        f"torch {m['torch']}, Python {m['python']}, {m['os']}; convolutions in "
        f"{m['precision']}{cap}.",
        f"Load before: `{load_before}`",
        f"Load after: `{load_after}`",
        "",
        "| preset | max_size | steps@size per level | optimizer | seconds | s/step at finest "
        "| how |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    if args.out == "-":
        print(f"## {heading}\n\n{text}")
    else:
        write_section(Path(args.out), heading, "\n" + text)
        print(f"wrote section '{heading}' of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
