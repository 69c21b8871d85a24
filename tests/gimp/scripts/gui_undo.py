# Runs inside GIMP's GUI (gui_run.py: gimp-3.x under Xvfb, python-fu-eval). Proves that a run
# of the plug-in is ONE undo step, with GIMP's own Undo: GIMP's PDB has no undo call, so Ctrl+Z
# goes to the image window as a key press (xdotool, XTest). Records the layer stack before the
# run, after it, after one undo and after one redo into NST_E2E_OUT; the test asserts on it.
#
# The selection is made with undo on, after the image was built with undo off: it is the one
# step below the plug-in's. One Ctrl+Z that brings back the original layers while the selection
# stays proves the whole run was one step (two steps would leave part of the result; an extra
# undo would take the selection too). A key press GIMP never saw changes nothing, so it is sent
# again; a press that arrived is never repeated.
import hashlib
import json
import os
import subprocess
import time
import traceback

import gi

gi.require_version("Gegl", "0.4")
from gi.repository import Gegl  # noqa: E402

PROC = "plug-in-nst-style-transfer"
OUT = os.environ["NST_E2E_OUT"]
FAST = {"preset": "quick", "iterations": 2, "max-size": 64, "seed": 7}
#: Seconds to wait for a key press to show in the image before pressing again, and in all.
RESEND_AFTER, KEY_DEADLINE = 4.0, 45.0
results = {"log": []}


def log(text):
    results["log"].append(f"{time.monotonic() - T0:6.2f} {text}")


def save():
    with open(OUT + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(OUT + ".tmp", OUT)


def fill(layer, fn):
    w, h = layer.get_width(), layer.get_height()
    data = bytearray()
    for y in range(h):
        for x in range(w):
            data += bytes(fn(x, y))
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", bytes(data))
    buf.flush()


def build():
    """[painting, group[photo]] on a 96x80 image, undo history empty; then an elliptical
    selection as the one undo step below the plug-in's."""
    image = Gimp.Image.new(96, 80, Gimp.ImageBaseType.RGB)
    image.undo_disable()  # building is not undoable: the history starts empty
    group = Gimp.GroupLayer.new(image, "group")
    image.insert_layer(group, None, 0)
    photo = Gimp.Layer.new(image, "photo", 80, 64, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(photo, group, 0)
    photo.set_offsets(5, 7)
    fill(photo, lambda x, y: ((x * 3) % 256, (y * 4) % 256, (x * y) % 256, 255))
    painting = Gimp.Layer.new(image, "painting", 40, 36, Gimp.ImageType.RGBA_IMAGE, 100.0,
                              Gimp.LayerMode.NORMAL)
    image.insert_layer(painting, None, 0)
    painting.set_offsets(30, 20)
    fill(painting, lambda x, y: ((255 if (x // 3) % 2 else 20), 40,
                                 (255 if (y // 4) % 2 else 60), 255))
    image.undo_enable()
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 10, 12, 60, 50)
    return image, photo, painting


def pixel_hash(drawable):
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "R'G'B'A u8",
                                     Gegl.AbyssPolicy.NONE)
    return hashlib.sha1(bytes(data)).hexdigest()


def snapshot(image):
    """Layer tree (name, id, parent id, position, offsets, size, mask), selection bounds and a
    hash of every layer's pixels."""
    pixels = {}

    def item(layer):
        _, x, y = layer.get_offsets()
        parent = layer.get_parent()
        entry = {"name": layer.get_name(), "id": layer.get_id(),
                 "parent": parent.get_id() if parent is not None else None,
                 "position": image.get_item_position(layer), "offsets": [x, y],
                 "size": [layer.get_width(), layer.get_height()],
                 "mask": layer.get_mask() is not None}
        if layer.is_group():
            entry["children"] = [item(c) for c in layer.get_children()]
        else:
            pixels[str(layer.get_id())] = pixel_hash(layer)
        return entry

    layers = [item(layer) for layer in image.get_layers()]
    _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    return {"layers": layers, "selection": [non_empty, x1, y1, x2, y2], "pixels": pixels}


def window_of(display):
    """The X window id of the display's toplevel (GIMP 3.0 and 3.2 hand it out as bytes)."""
    handle = display.get_window_handle()
    data = bytes(handle.get_data()) if hasattr(handle, "get_data") else bytes(handle)
    return int.from_bytes(data[:8].ljust(8, b"\0"), "little")


def press(window, keys, image, before):
    """Send keys to the image window until the image changes; (snapshot, presses)."""
    presses, deadline = 0, time.monotonic() + KEY_DEADLINE
    while time.monotonic() < deadline:
        # No window manager under Xvfb: give the window the input focus directly, then press
        # through XTest, as a user's keyboard would.
        done = subprocess.run(["xdotool", "windowfocus", str(window), "key", "--delay", "50",
                               keys], capture_output=True, text=True, timeout=20)
        presses += 1
        log(f"xdotool {keys} rc {done.returncode} {done.stderr.strip()[:200]}")
        resend = time.monotonic() + RESEND_AFTER
        while time.monotonic() < min(resend, deadline):
            now = snapshot(image)
            if now != before:
                log(f"{keys}: image changed after {presses} press(es)")
                return now, presses
            time.sleep(0.1)
    log(f"{keys}: the image never changed")
    return snapshot(image), presses


T0 = time.monotonic()
display = image = None
try:
    Gegl.init(None)
    image, photo, painting = build()
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    results["before"] = snapshot(image)
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [photo])
    cfg.set_property("style-layer", painting)
    for k, v in FAST.items():
        cfg.set_property(k, v)
    res = proc.run(cfg)
    results["status"] = res.index(0).value_nick
    results["message"] = res.index(1) if res.length() > 1 else None
    log(f"plug-in: {results['status']} {results['message']}")
    results["after_run"] = snapshot(image)
    window = window_of(display)
    results["window"] = window
    log(f"image window {window:#x}")
    results["after_undo"], results["undo_presses"] = press(window, "ctrl+z", image,
                                                           results["after_run"])
    results["after_redo"], results["redo_presses"] = press(window, "ctrl+y", image,
                                                           results["after_undo"])
except Exception:
    results["exception"] = traceback.format_exc()
finally:
    results["seconds"] = round(time.monotonic() - T0, 2)
    save()
    if image is not None:
        image.clean_all()  # no "discard changes?" prompt at quit
    if display is not None:
        display.delete()
