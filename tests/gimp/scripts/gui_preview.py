# Runs inside GIMP's GUI (gui_run.py: gimp-3.x under Xvfb, python-fu-eval): opens the Style
# Transfer dialog over an image with a photo layer and a painting layer, photo selected, and lets
# gui_preview_driver.py (a helper process working the dialog through X: xdotool) do the rest.
#   NST_PREVIEW_MODE=test  the dialog twice: "cancel" (previews with a changed setting, then
#                          Escape) and "ok" (a tiny run after a preview, OK);
#   NST_PREVIEW_MODE=shot  wait for a preview, capture the dialog (docs/dialog.png), Escape.
# The plug-in writes every finished preview to $NST_PREVIEW_DUMP_DIR (its test hook). This side
# records the image before and after each dialog, and the engine log's new lines, into
# $NST_E2E_OUT; the test asserts on it.
import math
import os
import sys

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import (add_layer, displayed, driven, engine_log,  # noqa: E402
                     engine_log_size, pixel_hash, recording, run_plugin)

from gi.repository import Gimp  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
results = {}


def landscape(i, j):
    """Sky, sun and rolling hills: the photo to repaint."""
    hill = 230 + 25 * math.sin(i / 55.0) + 12 * math.sin(i / 17.0 + 1.0)
    if j > hill:
        shade = (j - hill) / 150.0
        return (70 - 40 * shade, 150 - 60 * shade, 60 - 30 * shade, 255)
    if (i - 470) ** 2 + (j - 90) ** 2 < 40 ** 2:
        return (255, 225, 120, 255)
    t = j / 320.0
    return (110 + 90 * t, 160 + 60 * t, 235 - 10 * t, 255)


def swirls(i, j):
    """Blue night sky with yellow whirls and strokes: the painting whose style is wanted."""
    cx, cy = i - 90, j - 80
    r = math.hypot(cx, cy) + 1e-6
    a = math.atan2(cy, cx)
    s = math.sin(r / 6.0 - a * 3.0) + 0.6 * math.sin(i / 5.0 + j / 9.0)
    if s > 0.9:
        return (245, 215, 80, 255)
    base = 0.5 + 0.5 * math.sin(r / 11.0 + a)
    return (25 + 40 * base, 60 + 70 * base, 120 + 100 * base, 255)


def snapshot(image):
    """Layer names, ids, offsets, sizes, masks and pixel hashes; the dirty flag (an undo step
    sets it: the image is made clean after it is built)."""
    layers = []
    for lay in image.get_layers():
        _, x, y = lay.get_offsets()
        layers.append({"name": lay.get_name(), "id": lay.get_id(), "offsets": [x, y],
                       "size": [lay.get_width(), lay.get_height()],
                       "mask": lay.get_mask() is not None, "pixels": pixel_hash(lay)})
    return {"layers": layers, "dirty": image.is_dirty()}


def dialog(image, photo, mode, name):
    """Open the dialog with the driver working it in ``mode``; record what came of it."""
    log_start = engine_log_size()
    with driven(mode, f"{OUT}.{name}") as driver:
        found = run_plugin(image, [photo], run_mode=Gimp.RunMode.INTERACTIVE)
        found["after"] = snapshot(image)
    found.update(driver)
    found["engine_log"] = engine_log(log_start)
    results[name] = found


with recording(results, OUT):
    image = Gimp.Image.new(640, 400, Gimp.ImageBaseType.RGB)
    image.undo_disable()
    photo = add_layer(image, "Photo", 640, 400, landscape)
    add_layer(image, "Painting", 180, 160, swirls, offsets=(440, 220))
    image.undo_enable()
    image.set_selected_layers([photo])
    image.clean_all()
    with displayed(image):
        results["before"] = snapshot(image)
        if os.environ.get("NST_PREVIEW_MODE") == "shot":
            dialog(image, photo, "shot", "shot")
        else:
            dialog(image, photo, "cancel", "cancel")
            dialog(image, photo, "ok", "ok")
