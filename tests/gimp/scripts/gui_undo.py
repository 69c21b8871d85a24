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
import os
import subprocess
import sys
import time

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import (FAST, add_layer, displayed, pixel_hash, recording,  # noqa: E402
                     run_plugin, stripes)

from gi.repository import Gimp  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
#: Seconds to wait for a key press to show in the image before pressing again, and in all.
RESEND_AFTER, KEY_DEADLINE = 4.0, 45.0
results = {"log": []}


def log(text):
    results["log"].append(f"{time.monotonic() - T0:6.2f} {text}")


def build():
    """[painting, group[photo]] on a 96x80 image, undo history empty; then an elliptical
    selection as the one undo step below the plug-in's."""
    image = Gimp.Image.new(96, 80, Gimp.ImageBaseType.RGB)
    image.undo_disable()  # building is not undoable: the history starts empty
    group = Gimp.GroupLayer.new(image, "group")
    image.insert_layer(group, None, 0)
    photo = add_layer(image, "photo", 80, 64,
                      lambda x, y: ((x * 3) % 256, (y * 4) % 256, (x * y) % 256, 255),
                      offsets=(5, 7), parent=group)
    painting = add_layer(image, "painting", 40, 36, stripes, offsets=(30, 20))
    image.undo_enable()
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 10, 12, 60, 50)
    return image, photo, painting


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
with recording(results, OUT):
    image, photo, painting = build()
    with displayed(image) as display:
        results["before"] = snapshot(image)
        run = run_plugin(image, [photo], painting, **{**FAST, "iterations": 2})
        results["status"], results["message"] = run["status"], run["message"]
        log(f"plug-in: {results['status']} {results['message']}")
        results["after_run"] = snapshot(image)
        window = window_of(display)
        results["window"] = window
        log(f"image window {window:#x}")
        results["after_undo"], results["undo_presses"] = press(window, "ctrl+z", image,
                                                               results["after_run"])
        results["after_redo"], results["redo_presses"] = press(window, "ctrl+y", image,
                                                               results["after_undo"])
