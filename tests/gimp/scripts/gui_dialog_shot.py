# Runs inside GIMP's GUI (gui_run.py: gimp-3.x under Xvfb, python-fu-eval): opens the Style
# Transfer dialog over an image with a photo layer and a painting layer, photo selected, and
# saves a picture of the dialog to $NST_E2E_OUT.png (screenshot.py makes docs/dialog.png of it).
# A helper process waits for the dialog, captures it, then presses Escape, which ends the run.
import json
import math
import os
import subprocess

import gi

gi.require_version("Gegl", "0.4")
from gi.repository import Gegl  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
# No window manager under Xvfb: raise the dialog, let its thumbnails draw, capture just it,
# then focus it and press Escape (XTest) to close it.
CAPTURE = r'''
w=$(timeout 90 xdotool search --sync --name '^Style Transfer$' | head -1)
[ -n "$w" ] || exit 1
xdotool windowraise "$w"
sleep 2
xwd -silent -id "$w" | convert xwd:- "$1"
xdotool windowfocus "$w" key Escape
'''


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


image = Gimp.Image.new(640, 400, Gimp.ImageBaseType.RGB)
image.undo_disable()
photo = layer(image, "Photo", 640, 400, landscape)
painting = layer(image, "Painting", 180, 160, swirls, 440, 220)
image.undo_enable()
image.set_selected_layers([photo])
display = Gimp.Display.new(image)
Gimp.displays_flush()
capture = subprocess.Popen(["sh", "-c", CAPTURE, "capture", OUT + ".png"])
proc = Gimp.get_pdb().lookup_procedure("plug-in-nst-style-transfer")
cfg = proc.create_config()
cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
cfg.set_property("image", image)
cfg.set_core_object_array("drawables", [photo])
res = proc.run(cfg)
capture.wait(30)
with open(OUT, "w") as f:
    json.dump({"status": res.index(0).value_nick, "capture_rc": capture.returncode,
               "message": res.index(1) if res.length() > 1 else None}, f)
image.clean_all()
display.delete()
