# Runs inside GIMP (python-fu-eval): Filters > Style Transfer with and without "Seamless tile" on a
# 128x128 layer that tiles itself (waves with whole periods across it, plus noise), then GIMP's
# Layer > Transform > Offset (wrap-around, half the width and height) on each result, so the
# result's borders meet in the middle. Writes the pixels as raw RGBA to $NST_E2E_SEAM_DIR
# (content, and each result before and after the offset) and what it did to $NST_E2E_OUT; the
# test measures the seam in the middle (nst_engine.transfer.tiles.seam_ratio, as
# benchmarks/bench_seamless.py does).
import math
import os
import random
import sys

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import add_layer, pixels, recording, run_plugin  # noqa: E402

from gi.repository import Gegl, Gimp  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
FOLDER = os.environ["NST_E2E_SEAM_DIR"]
SIZE = 128
#: Small and fast, and still a clear seam without the option (tests/test_seamless.py: one 64 px
#: level of 20 steps): the quick preset at 64 px, 20 steps.
RUN = {"preset": "quick", "max-size": 64, "iterations": 20, "seed": 7}
found = {"size": SIZE}


def tiling(n, seed=0):
    """Waves with whole periods across an n-px square plus noise: a content that tiles itself
    (benchmarks/bench_seamless.py's tiling_content, in plain Python)."""
    rng = random.Random(seed)
    k = 2 * math.pi / n

    def fn(x, y):
        return (120 + 60 * math.sin(3 * k * x) + 30 * math.cos(5 * k * y) + rng.gauss(0, 12),
                120 + 60 * math.cos(4 * k * y + 2 * k * x) + rng.gauss(0, 12),
                120 + 50 * math.sin(7 * k * (x + y)) + rng.gauss(0, 12), 255)
    return fn


def waves(x, y):
    """The style (tests/test_seamless.py's): fine coloured waves."""
    return tuple(127 + 120 * math.sin(x / 2.5 + p) * math.cos(y / 4) for p in (0, 2, 4)) + (255,)


def dump(name, data):
    with open(os.path.join(FOLDER, name + ".rgba"), "wb") as f:
        f.write(data)


def offset_half(layer):
    """Layer > Transform > Offset by half the width and height, wrap-around: GIMP's own."""
    w, h = layer.get_width(), layer.get_height()
    return layer.offset(True, Gimp.OffsetType.WRAP_AROUND, Gegl.Color.new("black"),
                        w // 2, h // 2)


with recording(found, OUT):
    os.makedirs(FOLDER, exist_ok=True)
    image = Gimp.Image.new(SIZE, SIZE, Gimp.ImageBaseType.RGB)
    content = add_layer(image, "Pattern", SIZE, SIZE, tiling(SIZE))
    styles = Gimp.Image.new(64, 64, Gimp.ImageBaseType.RGB)
    style = add_layer(styles, "Waves", 64, 64, waves)
    dump("content", pixels(content))
    for seamless in (False, True):
        key = "seamless" if seamless else "plain"
        run = run_plugin(image, [content], style, seamless=seamless, **RUN)
        found[key] = run
        if run["status"] != "success":
            continue
        result = image.get_layers()[0]  # the new layer, directly above the source
        run["layer"] = [result.get_name(), result.get_width(), result.get_height()]
        dump(key, pixels(result))
        run["offset"] = offset_half(result)
        dump(key + "-offset", pixels(result))
        image.remove_layer(result)
    image.delete()
    styles.delete()
