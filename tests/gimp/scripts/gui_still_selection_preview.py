# Runs inside GIMP's GUI (gui_run.py: gimp-3.x under Xvfb, python-fu-eval): opens the Style
# Transfer (still) dialog over a 600x400 photo layer at offsets (37, 23) on a 720x480 canvas,
# with a feathered ellipse selected inside the layer and a painting layer to take the style
# from, and lets gui_preview_driver.py (mode "selection") work the dialog through X: Iterations
# 2, one preview, Cancel. The region plus margin is wider than the preview's 256 px, so the
# preview is read scaled down (the layer on its own scaled grid, the selection on the image's).
# Records, for the test to compare with the dumped preview: the layer's offsets and region
# (mask_intersect), the crop and scale the preview was made at (from the dump), the photo read
# over the crop at that scale (as the plug-in reads it) and the selection's coverage over the
# crop's place in the image at that scale; into $NST_E2E_OUT.
import glob
import json
import math
import os
import sys

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import (add_layer, displayed, driven, pixel_hash,  # noqa: E402
                     recording, run_plugin)

from gi.repository import Gegl, Gimp  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
DUMP = os.environ["NST_PREVIEW_DUMP_DIR"]
OFFSETS = (37, 23)
ELLIPSE = (OFFSETS[0] + 60, OFFSETS[1] + 40, 480, 320)  # image coordinates, inside the layer
found = {}


def photo(i, j):
    """Smooth colour ramps with a few waves: every scaled pixel differs from its neighbours a
    little, so a misplaced read shows."""
    return (60 + 150 * i / 600 + 20 * math.sin(j / 9.0), 40 + 160 * j / 400,
            200 - 120 * i / 600 + 25 * math.cos(i / 13.0), 255)


def swirls(i, j):
    r = math.hypot(i - 60, j - 60) + 1e-6
    s = math.sin(r / 5.0 - math.atan2(j - 60, i - 60) * 3.0)
    return (245, 215, 80, 255) if s > 0.4 else (25, 60 + 40 * s, 160, 255)


def scaled(rect, scale):  # the plug-in's _scaled: GEGL's scaled grid
    x, y, w, h = rect
    return (round(x * scale), round(y * scale), max(1, round(w * scale)),
            max(1, round(h * scale)))


with recording(found, OUT):
    image = Gimp.Image.new(720, 480, Gimp.ImageBaseType.RGB)
    image.undo_disable()
    layer = add_layer(image, "Photo", 600, 400, photo, offsets=OFFSETS)
    add_layer(image, "Painting", 120, 120, swirls, offsets=(0, 0), position=0)
    image.undo_enable()
    image.set_selected_layers([layer])
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *ELLIPSE)
    Gimp.Selection.feather(image, 6.0)
    image.clean_all()
    _, ox, oy = layer.get_offsets()
    ok, rx, ry, rw, rh = layer.mask_intersect()
    found["offsets"], found["region"] = [ox, oy], [rx, ry, rw, rh]
    before = pixel_hash(layer)
    with displayed(image):
        with driven("selection", f"{OUT}.selection") as driver:
            found.update(run_plugin(image, [layer], run_mode=Gimp.RunMode.INTERACTIVE))
        found.update(driver)
        found["unchanged"] = pixel_hash(layer) == before and not image.is_dirty()
        dumps = sorted(glob.glob(os.path.join(DUMP, "preview-*.json")))
        if dumps:
            with open(dumps[-1]) as f:
                crop = json.load(f)["settings"]["crop"]
            scale = min(1.0, 256 / max(crop[2], crop[3]))
            found["crop"], found["scale"] = crop, scale
            cx, cy, cw, ch = scaled(crop, scale)
            found["content_size"] = [cw, ch]
            # The photo over the crop at the preview's scale (layer grid), and the selection's
            # coverage over the crop's place in the image at that scale (image grid).
            found["content"] = bytes(layer.get_buffer().get(
                Gegl.Rectangle.new(cx, cy, cw, ch), scale, "R'G'B'A u8",
                Gegl.AbyssPolicy.CLAMP)).hex()
            ix, iy = scaled((crop[0] + ox, crop[1] + oy, *crop[2:]), scale)[:2]
            found["coverage"] = bytes(image.get_selection().get_buffer().get(
                Gegl.Rectangle.new(ix, iy, cw, ch), scale, "Y u8",
                Gegl.AbyssPolicy.NONE)).hex()
    image.delete()
