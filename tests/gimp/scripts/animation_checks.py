# Runs inside GIMP (python-fu-eval): the animation procedure on a 3-frame animation (the second
# frame a layer group), the style layer in another image. Records the new image's frames, the
# source image before and after, and exports the result as an animated GIF by GIMP's own
# exporter (read back by the pytest side and loaded back here). Then once more with a feathered
# ellipse selected: how each new frame differs from its source frame, by the selection's
# coverage of the pixel.
import os
import sys

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import FAST, add_layer, pixel_hash, pixels, recording, stripes  # noqa: E402

from gi.repository import Gimp, Gio  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
GIF = os.environ["NST_E2E_GIF"]
ANIM = "plug-in-nst-style-transfer-animation"
NAMES = ["Background (80ms)", "Frame 2 (120ms) (combine)", "Frame 3 (200ms) (replace)"]
found = {}


def moving(shift):
    """A textured square moving 3 px a frame over a gradient."""
    def fn(x, y):
        inside = shift <= x - 10 < shift + 16 and 8 <= y < 24
        if inside:
            return ((x * 37) % 256, (y * 53) % 256, 200, 255)
        return ((x * 5) % 256, (y * 6) % 256, 90, 255)
    return fn


def layers_of(image):
    """Top-level layers top first: [name, size, child names]."""
    return [[l.get_name(), [l.get_width(), l.get_height()],
             [c.get_name() for c in l.get_children()] if l.is_group() else None]
            for l in image.get_layers()]


def export_gif(image, path):
    """GIMP's GIF exporter, as an animation, the delays from the layer names."""
    proc = Gimp.get_pdb().lookup_procedure("file-gif-export")
    cfg = proc.create_config()
    names = [p.name for p in cfg.list_properties()]
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_property("file", Gio.File.new_for_path(path))
    for key, value in (("as-animation", True), ("loop", True), ("force-delay", False),
                       ("force-dispose", False)):
        if key in names:
            cfg.set_property(key, value)
    res = proc.run(cfg)
    return res.index(0).value_nick, names


def selection_coverage(image):
    """The selection over the canvas, one byte a pixel (0 outside, 255 inside)."""
    return pixels(image.get_selection(), "Y u8", (0, 0, image.get_width(), image.get_height()))


def changes_by_coverage(new_layer, source_layer, coverage):
    """How the new frame differs from its source frame (both over the canvas), by the
    selection's coverage of the pixel: {bucket: [pixels, changed (any channel differs),
    mean of the largest channel difference]}. Buckets: out (0), low (1-127), high (128-254),
    in (255)."""
    new, old = pixels(new_layer), pixels(source_layer)
    out = {}
    for i, c in enumerate(coverage):
        bucket = "out" if c == 0 else "in" if c == 255 else "low" if c < 128 else "high"
        d = max(abs(a - b) for a, b in zip(new[4 * i:4 * i + 4], old[4 * i:4 * i + 4]))
        n, changed, total = out.get(bucket, (0, 0, 0))
        out[bucket] = (n + 1, changed + (d > 0), total + d)
    return {k: [n, changed, round(total / n, 2)] for k, (n, changed, total) in out.items()}


def run_animation(proc, cfg):
    """(status, the new image or None, the error message or None)."""
    res = proc.run(cfg)
    status = res.index(0).value_nick
    if status == "success":
        return status, res.index(1), None
    return status, None, res.index(1)


def selected_run(found, proc, cfg, image):
    """The animation with a feathered ellipse selected: the new image's size and frames, how
    each differs from its source by coverage, and the source image (selection too) after."""
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 10, 8, 28, 24)
    Gimp.Selection.feather(image, 4.0)
    image.clean_all()
    coverage = selection_coverage(image)
    _, _, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    bbox = [(x, y) for y in range(y1, y2) for x in range(x1, x2)]
    found["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    found["bbox_unselected"] = sum(coverage[y * 48 + x] == 0 for x, y in bbox)
    hashes = [pixel_hash(l) for l in image.get_layers()]
    found["status"], new, found["message"] = run_animation(proc, cfg)
    if new is not None:
        found["new_size"] = [new.get_width(), new.get_height()]
        found["new_layers"] = layers_of(new)
        if found["new_size"] == [image.get_width(), image.get_height()]:  # else: no match
            found["changes"] = [changes_by_coverage(n, s, coverage)
                                for n, s in zip(new.get_layers(), image.get_layers())]
        new.delete()
    found["source_unchanged"] = hashes == [pixel_hash(l) for l in image.get_layers()]
    found["selection_unchanged"] = selection_coverage(image) == coverage
    found["source_clean"] = not image.is_dirty()
    Gimp.Selection.none(image)


with recording(found, OUT):
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    add_layer(image, NAMES[0], 48, 40, moving(0), position=0)
    group = Gimp.GroupLayer.new(image, NAMES[1])  # a group is one frame
    image.insert_layer(group, None, 0)
    add_layer(image, "inner", 48, 40, moving(3), parent=group)
    add_layer(image, NAMES[2], 48, 40, moving(6), position=0)
    styles = Gimp.Image.new(32, 32, Gimp.ImageBaseType.RGB)
    style = add_layer(styles, "painting", 32, 32, stripes)
    image.clean_all()
    found["source_before"] = layers_of(image)
    hashes = [pixel_hash(l) for l in image.get_layers()]
    found["images_before"] = len(Gimp.get_images())

    proc = Gimp.get_pdb().lookup_procedure(ANIM)
    found["registered"] = proc is not None
    found["arguments"] = [a.name for a in proc.get_arguments()]
    found["menu_label"] = proc.get_menu_label()
    found["menu_paths"] = list(proc.get_menu_paths())
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [image.get_layers()[0]])
    cfg.set_property("style-layer", style)
    for key, value in FAST.items():
        cfg.set_property(key, value)
    cfg.set_property("loop", False)
    res = proc.run(cfg)
    found["status"] = res.index(0).value_nick
    found["images_after"] = len(Gimp.get_images())
    if found["status"] != "success":
        found["message"] = res.index(1)
    else:
        new = res.index(1)
        found["new_is_other_image"] = new.get_id() != image.get_id()
        found["new_size"] = [new.get_width(), new.get_height()]
        found["new_layers"] = layers_of(new)
        found["new_distinct"] = len({pixel_hash(l) for l in new.get_layers()})
        found["export"], found["export_options"] = export_gif(new, GIF)
        back = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(GIF))
        found["loaded_back"] = [l.get_name() for l in back.get_layers()]
        back.delete()
        new.delete()
    found["source_after"] = layers_of(image)
    found["source_unchanged"] = hashes == [pixel_hash(l) for l in image.get_layers()]
    found["source_clean"] = not image.is_dirty()
    found["selected"] = {}
    selected_run(found["selected"], proc, cfg, image)
    # The style layer's image is not a frame source, and one frame is no animation.
    single = Gimp.Image.new(16, 16, Gimp.ImageBaseType.RGB)
    add_layer(single, "only (100ms)", 16, 16, moving(0))
    cfg.set_property("image", single)
    cfg.set_core_object_array("drawables", [single.get_layers()[0]])
    res = proc.run(cfg)
    found["single"] = [res.index(0).value_nick, res.index(1)]
    single.delete()
    image.delete()
    styles.delete()
