"""Animations: temporal coherence against independent frames, and what a frame costs.

    python benchmarks/bench_animation.py [--frames 8] [--size 128] [--iterations 60]
        [--device cpu] [--weights FILE] [--json OUT]
    python benchmarks/bench_animation.py --sampler 128,512,1024 [--device cpu]

The clip: ``nst_engine.testing.synthetic_clip``, a textured background panned (2, 0.5 px a
frame) and zoomed (1 % a frame), with a textured square moving 4 px a frame across it (real
motion, occlusion and disocclusion; the frame's edges come and go). Three conditions, the same
preset, seed and style: independent frames (``temporal_weight`` 0), temporal, temporal + loop.
Loop mode is for animations that loop, so it runs on a clip that does: the same motion forward
for half the frames and back (``looping_clip``), the last frame one frame's motion from the
first.

Measures (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): the warping error, the
mean over frame pairs of ``sum M |O_t - warp(O_{t+k})|^2 / sum M`` with the SAME DIS flows and
forward-backward masks (computed once on the input frames) for every condition; short term
(k = 1) and long term (k = 5); in loop mode the closure (last -> first) against the median
adjacent error of the same run; the style loss of each result at the finest level against the independent
frames'; seconds per frame after the first against the first (a still), and the flow + mask
time per frame. Random VGG19 weights unless --weights: real timings, not real pictures.

``--sampler``: the loop term's two samplers (``grid_sample`` and ``warp.BilinearMap``, issue 31)
timed forward + backward on a DIS flow of the clip at each width, with the map's build time and
its backward's passes. On the CPU (2 cores shared with other jobs, load 6, so only the ratios
hold; median of 12, grid_sample against the map, forward + backward): 128x96 0.55 against
0.96 ms, build 29 ms, 8 passes; 512x384 44 against 76 ms, build 0.65 s, 24 passes; 1024x768
194 against 446 ms, build 2.1 s, 34 passes. So the CPU keeps ``grid_sample``
(``warp.reverse_by_gather``); CUDA and MPS use the map for its backward. GPU figures: pending.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def clip(n: int, side: int):
    from nst_engine.testing import synthetic_clip
    h, w = round(side * 0.75), side
    frames, _, _ = synthetic_clip(n, (h, w), pan=(2.0, 0.5), zoom=0.01, speed=(4.0, 1.0),
                                  square=h // 2, seed=21)
    return frames


def looping_clip(n: int, side: int):
    """``n`` frames that loop: forward ``n // 2 + 1`` frames, then back to the second."""
    forward = clip(n // 2 + 1, side)
    return (forward + forward[-2:0:-1])[:n]


def measuring_pairs(frames, gap):
    """(t, t+gap, backward flow t+gap -> t, mask) from the input frames, once for all."""
    from nst_engine.transfer import warp
    from nst_engine.transfer.flow import Flow, grey
    flow, out = Flow(), []
    for t in range(len(frames) - gap):
        a, b = grey(frames[t + gap]), grey(frames[t])
        back, fwd = warp.flow_tensor(flow(a, b)), warp.flow_tensor(flow(b, a))
        out.append((t, t + gap, back, warp.consistency(back, fwd)))
    return out


def tensor(img):
    import numpy as np
    import torch
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def warping_error(outs, pairs):
    from nst_engine.transfer import warp
    return [warp.warping_error(tensor(outs[j]), warp.warp(tensor(outs[i]), back), mask)
            for i, j, back, mask in pairs]


def style_losses(outs, style, params, weights, device):
    """Each result's style loss at the working size (the objective's own measure)."""
    import torch
    from nst_engine.model.cache import model_for
    from nst_engine.transfer.convert import to_tensor
    from nst_engine.transfer.objective import Objective
    dev = torch.device(device)
    model, _ = model_for(weights, None, params, dev)
    srgb, _ = to_tensor(style)
    obj = Objective(model, params, [(srgb.to(dev), None, 1.0)], None,
                    torch.Generator().manual_seed(0))
    out = []
    with torch.no_grad():
        for img in outs:
            x = to_tensor(img)[0].to(dev)
            obj.set_content(x)
            out.append(float(obj(x)[1]["style"]))
    return out


def run(args) -> dict:
    import numpy as np
    from PIL import Image
    from nst_engine.params import StyleParams
    from nst_engine.testing import make_random_vgg19_file, texture
    from nst_engine.transfer.animation import Animation

    weights = args.weights or make_random_vgg19_file(Path(tempfile.mkdtemp()) / "w.pth")
    frames = clip(args.frames, args.size)
    style = Image.fromarray((texture((args.size, args.size), 11)[..., ::-1] * 255)
                            .astype(np.uint8))
    base = StyleParams(max_size=args.size, levels=args.levels, iterations=args.iterations,
                       seed=3, full_resolution="never")
    t0 = time.perf_counter()
    short, long = measuring_pairs(frames, 1), measuring_pairs(frames, 5)
    measure_s = time.perf_counter() - t0
    loop_frames = looping_clip(args.frames, args.size)
    loop_short = measuring_pairs(loop_frames, 1)
    closing = measuring_pairs([loop_frames[-1], loop_frames[0]], 1)
    rows = {}
    conditions = [("independent", 0.0, False), ("temporal", base.temporal_weight, False),
                  ("temporal+loop", base.temporal_weight, True)]
    for tw in args.temporal_weights:  # a sweep: the same measures at other weights
        conditions += [(f"temporal {tw:g}", tw, False), (f"temporal+loop {tw:g}", tw, True)]
    for name, tw, loop in conditions:
        params = base.with_overrides(temporal_weight=tw)
        anim = Animation(styles=[(style, 1.0)], params=params, frames=len(frames), loop=loop,
                         device=args.device, weights=weights)
        outs = [anim.frame(Image.fromarray(f)) for f in (loop_frames if loop else frames)]
        later = [s.seconds for s in anim.stats[1:]]
        pairs = loop_short if loop else short
        row = {"short": float(np.mean(warping_error(outs, pairs))),
               "long": None if loop or not long else float(np.mean(warping_error(outs, long))),
               "adjacent_median": float(np.median(warping_error(outs, pairs))),
               "style_loss": float(np.mean(style_losses(outs, style, params, weights,
                                                        args.device))),
               "first_s": anim.stats[0].seconds,
               "later_s": statistics.median(later),
               "flow_s": statistics.median(s.flow_seconds for s in anim.stats[1:]),
               "steps": [s.steps for s in anim.stats[:2]]}
        if loop:  # the last result warped onto the first frame, against the first result
            row["closure"] = warping_error([outs[-1], outs[0]], closing)[0]
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    ind, tmp, lp = rows["independent"], rows["temporal"], rows["temporal+loop"]
    summary = {
        "short_ratio": tmp["short"] / ind["short"],
        "long_ratio": (tmp["long"] / ind["long"]) if ind["long"] else None,
        "closure_vs_median_adjacent": lp["closure"] / lp["adjacent_median"],
        "style_loss_ratio": tmp["style_loss"] / ind["style_loss"],
        # independent frames after the first are stills with the model loaded (the first
        # condition's first frame also loads it)
        "later_vs_still": tmp["later_s"] / ind["later_s"],
        "flow_share_of_frame": tmp["flow_s"] / tmp["later_s"],
        "measure_flows_s": measure_s,
    }
    for tw in args.temporal_weights:
        t, lp = rows[f"temporal {tw:g}"], rows[f"temporal+loop {tw:g}"]
        summary[f"sweep {tw:g}"] = {
            "short_ratio": t["short"] / ind["short"], "long_ratio": t["long"] / ind["long"],
            "style_loss_ratio": t["style_loss"] / ind["style_loss"],
            "closure_vs_median_adjacent": lp["closure"] / lp["adjacent_median"]}
    print("summary", json.dumps(summary), flush=True)
    return {"machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "summary": summary}


def sampler(sides, device: str) -> list[dict]:
    """The loop term's two samplers, forward + backward, at each width (see the doc)."""
    import torch
    import torch.nn.functional as F
    from nst_engine.transfer import warp
    from nst_engine.transfer.flow import Flow, grey
    dev, rows = torch.device(device), []
    for side in sides:
        a, b = clip(2, side)
        back = warp.flow_tensor(Flow()(grey(a), grey(b)))
        fwd = warp.flow_tensor(Flow()(grey(b), grey(a)))
        h, w = back.shape[-2:]
        c, mask = warp.coords(back).to(dev), warp.consistency(fwd, back).to(dev)
        x = torch.rand(1, 3, h, w, device=dev, requires_grad=True)
        target = torch.rand(1, 3, h, w, device=dev)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        bmap = warp.BilinearMap(c, (h, w), mask)
        sync()
        build = time.perf_counter() - t0
        grid = torch.stack((c[..., 0] * (2.0 / (w - 1)) - 1.0,
                            c[..., 1] * (2.0 / (h - 1)) - 1.0), dim=-1)
        ways = {"grid_sample_ms": lambda: F.grid_sample(x, grid, mode="bilinear",
                                                        padding_mode="border",
                                                        align_corners=True),
                "gather_ms": lambda: bmap.sample(x)}
        row = {"size": f"{w}x{h}", "build_ms": build * 1e3, "passes": len(bmap.passes)}
        for name, fn in ways.items():
            times = []
            for _ in range(12):
                x.grad = None
                sync()
                t0 = time.perf_counter()
                (mask * (fn() - target).pow(2)).sum().backward()
                sync()
                times.append(time.perf_counter() - t0)
            row[name] = statistics.median(times) * 1e3
        print("sampler", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="longest side of the frames (px)")
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights")
    p.add_argument("--temporal-weights", type=lambda t: [float(v) for v in t.split(",") if v],
                   default=[], help="also measure these temporal_weight values (a sweep)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--sampler", type=lambda t: [int(v) for v in t.split(",") if v],
                   help="only time the loop term's samplers at these widths (px)")
    args = p.parse_args()
    import torch
    out = {"sampler": sampler(args.sampler, args.device)} if args.sampler else run(args)
    out["torch"] = torch.__version__
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
