# Runs inside GIMP's GUI (gui_run.py: gimp-3.x under Xvfb, python-fu-eval): opens the Style
# Transfer dialog over an image with a photo layer and a painting layer, photo selected, and lets
# gui_preview_driver.py (a helper process working the dialog through X: xdotool) do the rest.
#   NST_PREVIEW_MODE=test  the dialog twice: "cancel" (previews with a changed setting, then
#                          Escape) and "ok" (a tiny run after a preview, OK);
#   NST_PREVIEW_MODE=shot  wait for a preview, capture the dialog (docs/dialog.png), Escape.
# The plug-in writes every finished preview to $NST_PREVIEW_DUMP_DIR (its test hook). This side
# records the image before and after each dialog, and the engine log's new lines, into
# $NST_E2E_OUT; the test asserts on it.
import hashlib
import json
import math
import os
import subprocess
import time
import traceback

import gi

gi.require_version("Gegl", "0.4")
from gi.repository import Gegl  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
DRIVER = os.path.join(os.environ["NST_E2E_SCRIPTS"], "gui_preview_driver.py")
results = {}


def layer(image, name, w, h, fn, x=0, y=0):
    lay = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0,
                         Gimp.LayerMode.NORMAL)
    image.insert_layer(lay, None, 0)
    lay.set_offsets(x, y)
    data = bytearray()
    for j in range(h):
        for i in range(w):
            data += bytes(max(0, min(255, int(v))) for v in fn(i, j))
    lay.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", bytes(data))
    return lay


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
        w, h = lay.get_width(), lay.get_height()
        data = lay.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "R'G'B'A u8",
                                    Gegl.AbyssPolicy.NONE)
        _, x, y = lay.get_offsets()
        layers.append({"name": lay.get_name(), "id": lay.get_id(), "offsets": [x, y],
                       "size": [w, h], "mask": lay.get_mask() is not None,
                       "pixels": hashlib.sha1(bytes(data)).hexdigest()})
    return {"layers": layers, "dirty": image.is_dirty()}


def engine_log():
    """The engine log's text (the client appends a "starting engine" line per engine start)."""
    path = os.path.join(os.environ["HOME"], ".local", "share", "nst-style-transfer", "logs",
                        "engine.log")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def dialog(image, photo, mode, name):
    """Open the dialog with the driver working it in ``mode``; record what came of it."""
    global driver
    log_before = len(engine_log())
    driver = subprocess.Popen(["python3", DRIVER, mode, f"{OUT}.{name}"])
    proc = Gimp.get_pdb().lookup_procedure("plug-in-nst-style-transfer")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [photo])
    res = proc.run(cfg)
    found = {"status": res.index(0).value_nick,
             "message": res.index(1) if res.length() > 1 else None,
             "after": snapshot(image)}
    driver.wait(30)
    found["driver_rc"] = driver.returncode
    with open(f"{OUT}.{name}.driver.json") as f:
        found["driver"] = json.load(f)
    found["engine_log"] = engine_log()[log_before:]
    results[name] = found


T0 = time.monotonic()
image = display = driver = None
try:
    Gegl.init(None)
    image = Gimp.Image.new(640, 400, Gimp.ImageBaseType.RGB)
    image.undo_disable()
    photo = layer(image, "Photo", 640, 400, landscape)
    painting = layer(image, "Painting", 180, 160, swirls, 440, 220)
    image.undo_enable()
    image.set_selected_layers([photo])
    image.clean_all()
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    results["before"] = snapshot(image)
    if os.environ.get("NST_PREVIEW_MODE") == "shot":
        dialog(image, photo, "shot", "shot")
    else:
        dialog(image, photo, "cancel", "cancel")
        dialog(image, photo, "ok", "ok")
except Exception:
    results["exception"] = traceback.format_exc()
finally:
    if driver is not None and driver.poll() is None:
        driver.kill()
    results["seconds"] = round(time.monotonic() - T0, 1)
    with open(OUT + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(OUT + ".tmp", OUT)
    if image is not None:
        image.clean_all()
    if display is not None:
        display.delete()
