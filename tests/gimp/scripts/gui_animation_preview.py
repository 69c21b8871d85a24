# Runs inside GIMP's GUI (gui_run.py: gimp-3.x under Xvfb, python-fu-eval): opens the Style
# Transfer (Animation) dialog over a 3-frame animation whose frames differ in colour, with an
# ellipse selected and a painting open in another image (the dialog pre-selects it as the
# style layer), and lets gui_preview_driver.py (mode "animation") work the dialog through X:
# previews, strength 0, OK. Records each frame's pixels over the selection's bounding box (what
# the first frame's preview must show) and the selection's coverage there (the preview blends
# by it, as the run's mask does), the new image, the source image and the engine log's new
# lines into $NST_E2E_OUT; the test asserts on it.
import math
import os
import sys

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import (add_layer, displayed, driven, engine_log,  # noqa: E402
                     engine_log_size, pixel_hash, pixels, recording)

from gi.repository import Gimp  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
ANIM = "plug-in-nst-style-transfer-animation"
NAMES = ["Background (80ms)", "Frame 2 (120ms) (combine)", "Frame 3 (200ms) (replace)"]
SELECTION = (16, 8, 48, 40)  # x, y, w, h: the ellipse's box, inside the 96x64 canvas
found = {}


def frame(k):
    """Frame k (0-based): one colour per frame (red, green, blue), a soft pattern and a bright
    square moving 4 px a frame, so a picture tells which frame it came from."""
    def fn(x, y):
        wave = 40 * math.sin(x / 7.0) * math.cos(y / 5.0)
        base = [60 + wave] * 3
        base[k] = 200 + wave / 2
        if 20 + 4 * k <= x < 36 + 4 * k and 16 <= y < 32:
            base = [240, 240, 240]
        return (*base, 255)
    return fn


def swirls(i, j):
    r = math.hypot(i - 40, j - 40) + 1e-6
    s = math.sin(r / 4.0 - math.atan2(j - 40, i - 40) * 3.0)
    return (245, 215, 80, 255) if s > 0.5 else (25, 60 + 40 * s, 160, 255)


def layers_of(image):
    return [[l.get_name(), [l.get_width(), l.get_height()], pixel_hash(l)]
            for l in image.get_layers()]


with recording(found, OUT):
    styles = Gimp.Image.new(80, 80, Gimp.ImageBaseType.RGB)
    add_layer(styles, "Painting", 80, 80, swirls)
    image = Gimp.Image.new(96, 64, Gimp.ImageBaseType.RGB)
    image.undo_disable()
    for k, name in enumerate(NAMES):
        add_layer(image, name, 96, 64, frame(k), position=0)
    image.undo_enable()
    # An ellipse (antialiased: partly selected pixels on its edge): the box's corners are
    # outside it, so the run keeps the source's pixels there, and the preview must too.
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *SELECTION)
    image.clean_all()
    found["selection"] = list(SELECTION)
    found["coverage"] = pixels(image.get_selection(), "Y u8", rect=SELECTION).hex()
    found["frames_in_region"] = [pixels(l, rect=SELECTION).hex()
                                 for l in reversed(image.get_layers())]  # playing order
    found["before"] = layers_of(image)
    images_before = {i.get_id() for i in Gimp.get_images()}
    with displayed(image):
        log_start = engine_log_size()
        with driven("animation", f"{OUT}.animation") as driver:
            proc = Gimp.get_pdb().lookup_procedure(ANIM)
            cfg = proc.create_config()
            cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
            cfg.set_property("image", image)
            cfg.set_core_object_array("drawables", [image.get_layers()[0]])
            res = proc.run(cfg)
            found["status"] = res.index(0).value_nick
            if found["status"] == "success":
                new = res.index(1)
                found["new_size"] = [new.get_width(), new.get_height()]
                found["new_layers"] = [l.get_name() for l in new.get_layers()]
            else:
                found["message"] = res.index(1)
        found.update(driver)
        found["engine_log"] = engine_log(log_start)
        found["after"] = layers_of(image)
        found["dirty"] = image.is_dirty()
    # The new image's window (the only one left: the source's closed above), closed so GIMP
    # quits by itself. GIMP lists no displays; their ids are small numbers.
    for display_id in range(1, 100):
        display = Gimp.Display.get_by_id(display_id)
        if display is not None and display.is_valid():
            display.delete()
    found["images_left"] = len([i for i in Gimp.get_images()
                                if i.get_id() not in images_before])
    styles.delete()
