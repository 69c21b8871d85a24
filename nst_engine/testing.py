"""Random-weight VGG19 files with the real key names and shapes, synthetic clips with a known
motion (``synthetic_clip``), test pictures (``tiling_content``, ``stripes``) and hostile or
unusual files written byte by byte (``png_declaring``: a decompression bomb's header;
``write_apng``: every APNG disposal and blend, sub-rectangles), for tests, benchmarks and
demos.

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


def texture(hw: tuple[int, int], seed: int = 0, *, octaves: int = 5):
    """A smooth multi-scale random colour texture, ``[H, W, 3]`` float32 in [0, 1] (numpy):
    features at every scale, as the optical flow and VGG both need."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = hw
    out = np.zeros((h, w, 3), np.float32)
    for o in range(octaves):
        side = 4 * 2 ** o
        small = rng.random((max(2, h * side // max(h, w)), max(2, side * w // max(h, w)), 3))
        img = Image.fromarray((small * 255).astype(np.uint8), "RGB").resize((w, h),
                                                                          Image.BICUBIC)
        out += np.asarray(img, np.float32) / 255.0 / 2 ** (octaves - 1 - o) ** 0.5
    out -= out.min(axis=(0, 1))
    return out / out.max(axis=(0, 1))


def _sample(tex, x, y):
    """Bilinear lookup of ``tex`` ``[H, W, C]`` at float coordinates (clamped at the edges)."""
    import numpy as np

    h, w = tex.shape[:2]
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    return ((tex[y0, x0] * (1 - fx) + tex[y0, x0 + 1] * fx) * (1 - fy)
            + (tex[y0 + 1, x0] * (1 - fx) + tex[y0 + 1, x0 + 1] * fx) * fy)


def tiling_content(n: int = 128, seed: int = 0):
    """An ``n`` px RGB PIL image that tiles itself: waves with whole periods across it, plus
    noise (``seed``)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    k = 2 * np.pi / n
    rgb = np.stack([120 + 60 * np.sin(3 * k * xx) + 30 * np.cos(5 * k * yy),
                    120 + 60 * np.cos(4 * k * yy + 2 * k * xx),
                    120 + 50 * np.sin(7 * k * (xx + yy))], -1)
    rgb = rgb + rng.normal(0, 12, rgb.shape)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def stripes(size: int):
    """A ``size`` px RGB PIL image of coloured stripes: a style with strong, fine texture."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    rgb = 127 + 120 * np.sin(xx[..., None] / 2.5 + np.array([0, 2, 4])) * np.cos(yy[..., None] / 4)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def synthetic_clip(n: int, hw: tuple[int, int], *, seed: int = 0, pan: tuple[float, float] = (0, 0),
                   zoom: float = 0.0, square: int | None = None,
                   speed: tuple[float, float] = (3.0, 1.0)):
    """Frames with a known motion: a textured background panned by ``pan`` px per frame and
    zoomed by ``zoom`` (relative, per frame, about the centre), and a textured square of side
    ``square`` (default a third of the shorter side) moving ``speed`` px per frame over it.

    Returns ``(frames, flows, covered)``: ``n`` uint8 ``[H, W, 3]`` arrays, the true flows
    ``flows[t]`` from frame t+1 to frame t (``[H, W, 2]`` float32 (dx, dy), the
    ``transfer.flow`` convention, ``flows[t][p]`` = where pixel p of frame t+1 was in frame t),
    and ``covered[t]``: bool ``[H, W]`` masks of the square in frame t.
    """
    import numpy as np

    h, w = hw
    side = square or min(h, w) // 3
    margin = int(abs(pan[0]) * n + abs(pan[1]) * n + max(h, w) * (1 + zoom) ** n) + 8
    bg = texture((h + 2 * margin, w + 2 * margin), seed)
    fg = texture((side, side), seed + 1, octaves=3)[..., ::-1].copy()  # other colours
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2

    def bg_coords(t):  # texture coordinates of frame t's pixels
        s = (1 + zoom) ** -t
        return ((xs - cx) * s + cx + margin + pan[0] * t, (ys - cy) * s + cy + margin + pan[1] * t)

    def square_at(t):
        return (w * 0.15 + speed[0] * t, h * 0.3 + speed[1] * t)

    frames, flows, covered = [], [], []
    for t in range(n):
        u, v = bg_coords(t)
        img = _sample(bg, u, v)
        qx, qy = square_at(t)
        inside = (xs >= qx) & (xs < qx + side - 1) & (ys >= qy) & (ys < qy + side - 1)
        img[inside] = _sample(fg, xs[inside] - qx, ys[inside] - qy)
        frames.append(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
        covered.append(inside)
        if t:
            s_prev = (1 + zoom) ** -(t - 1)
            px = (u - margin - pan[0] * (t - 1) - cx) / s_prev + cx
            py = (v - margin - pan[1] * (t - 1) - cy) / s_prev + cy
            flow = np.stack((px - xs, py - ys), axis=-1).astype(np.float32)
            flow[inside] = (-speed[0], -speed[1])
            flows.append(flow)
    return frames, flows, covered


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_declaring(path: str | os.PathLike, width: int, height: int) -> Path:
    """A small PNG whose header declares ``width`` x ``height`` RGB pixels (a decompression
    bomb's shape: its few bytes of data are never reached by a reader that refuses it)."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
                           + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                           + _png_chunk(b"IEND", b""))
    return Path(path)


def write_apng(path: str | os.PathLike, size: tuple[int, int], frames: list[dict],
               loop: int = 0) -> Path:
    """An RGBA APNG written chunk by chunk (Pillow's writer chooses its own disposal, blend and
    regions). Each frame: ``image`` (an RGBA numpy array h x w x 4), ``at`` (x, y) on the
    canvas, ``dispose`` (0 none, 1 background, 2 previous), ``blend`` (0 source, 1 over),
    ``delay`` (numerator, denominator: the file's own fraction of a second). The first frame
    is also the default image (IDAT), as most encoders write it."""
    import struct
    import zlib
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", size[0], size[1], 8, 6, 0, 0, 0)),
              _png_chunk(b"acTL", struct.pack(">II", len(frames), loop))]
    seq = 0
    for i, f in enumerate(frames):
        h, w = f["image"].shape[:2]
        x, y = f.get("at", (0, 0))
        num, den = f.get("delay", (1, 10))
        chunks.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, x, y, num, den,
                                                      f.get("dispose", 0), f.get("blend", 0))))
        seq += 1
        rows = b"".join(b"\0" + bytes(row) for row in f["image"].astype("uint8")
                        .reshape(h, w * 4))
        data = zlib.compress(rows)
        if i == 0:
            chunks.append(_png_chunk(b"IDAT", data))
        else:
            chunks.append(_png_chunk(b"fdAT", struct.pack(">I", seq) + data))
            seq += 1
    chunks.append(_png_chunk(b"IEND", b""))
    Path(path).write_bytes(_PNG_SIGNATURE + b"".join(chunks))
    return Path(path)


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
