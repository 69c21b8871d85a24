# Runs inside GIMP (python-fu-eval): the animation procedure on a 3-frame animation (the second
# frame a layer group), the style layer in another image. Records the new image's frames, the
# source image before and after, and exports the result as an animated GIF by GIMP's own
# exporter (read back by the pytest side and loaded back here). Then once more with a feathered
# ellipse selected: how each new frame differs from its source frame, by the selection's
# coverage of the pixel, and whether its fully selected pixels are the whole-canvas run's (the
# bounding box plus margin is the whole canvas here: the engine got the same pixels). Then a
# rectangle near the top-left corner (its margin clipped there, not right and below): its
# pixels against an unselected run over a copy cropped to the bounding box plus margin.
import os
import sys

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import FAST, add_layer, pixel_hash, pixels, recording, stripes  # noqa: E402

from gi.repository import Gimp, Gio  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
GIF = os.environ["NST_E2E_GIF"]
ANIM = "plug-in-nst-style-transfer-animation"
NAMES = ["Background (80ms)", "Frame 2 (120ms) (combine)", "Frame 3 (200ms) (replace)"]
#: A rectangle near the top-left corner of the 48x40 canvas, and what the engine should be sent
#: for it: the still's margin (max(16, 10 % of 14) = 16 px) clipped to the canvas at the left and
#: top, not at the right and bottom.
CORNER = (2, 3, 14, 12)
CORNER_CROP = (0, 0, 2 + 14 + 16, 3 + 12 + 16)
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


def differing(a, b):
    """How many RGBA pixels of two same-size buffers differ (any channel); -1: sizes differ."""
    if len(a) != len(b):
        return -1
    return sum(a[i:i + 4] != b[i:i + 4] for i in range(0, len(a), 4))


def run_animation(proc, cfg):
    """(status, the new image or None, the error message or None)."""
    res = proc.run(cfg)
    status = res.index(0).value_nick
    if status == "success":
        return status, res.index(1), None
    return status, None, res.index(1)


def selected_run(found, proc, cfg, image, whole_run):
    """The animation with a feathered ellipse selected: the new image's size and frames, how
    each differs from its source by coverage, its fully selected pixels against ``whole_run``
    (the unselected run's frames, playing order), and the source image (selection too)
    after."""
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
            inside = [i for i, c in enumerate(coverage) if c == 255]
            found["inside_vs_whole_run"] = [
                [len(inside), sum(got[4 * i:4 * i + 4] != ref[4 * i:4 * i + 4] for i in inside)]
                for got, ref in zip([pixels(l) for l in reversed(new.get_layers())], whole_run)]
        new.delete()
    found["source_unchanged"] = hashes == [pixel_hash(l) for l in image.get_layers()]
    found["selection_unchanged"] = selection_coverage(image) == coverage
    found["source_clean"] = not image.is_dirty()
    Gimp.Selection.none(image)


def corner_run(found, proc, cfg, image, rect, crop):
    """A rectangle ``rect`` selected near the canvas's corner: each new frame's pixels over it
    against an unselected run over a copy of the image cropped to ``crop`` (what the engine
    should be sent: ``rect`` plus the margin, clipped to the canvas), and outside it against
    the source."""
    image.select_rectangle(Gimp.ChannelOps.REPLACE, *rect)
    image.clean_all()
    found["status"], new, found["message"] = run_animation(proc, cfg)
    Gimp.Selection.none(image)
    image.clean_all()
    ref_image = image.duplicate()
    Gimp.Selection.none(ref_image)
    ref_image.crop(crop[2], crop[3], crop[0], crop[1])
    cfg.set_property("image", ref_image)
    found["ref_status"], ref, found["ref_message"] = run_animation(proc, cfg)
    cfg.set_property("image", image)
    if new is not None and ref is not None:
        found["ref_size"] = [ref.get_width(), ref.get_height()]
        inner = (rect[0] - crop[0], rect[1] - crop[1], rect[2], rect[3])
        found["inside_vs_ref"] = [differing(pixels(n, rect=rect), pixels(r, rect=inner))
                                  for n, r in zip(new.get_layers(), ref.get_layers())]
        found["inside_vs_source"] = [differing(pixels(n, rect=rect), pixels(s, rect=rect))
                                     for n, s in zip(new.get_layers(), image.get_layers())]
        # Every pixel of the frame, less those inside: the ones outside that differ.
        found["outside_vs_source"] = [
            differing(pixels(n), pixels(s)) - inside
            for n, s, inside in zip(new.get_layers(), image.get_layers(),
                                    found["inside_vs_source"])]
    for done in (new, ref):
        if done is not None:
            done.delete()
    ref_image.delete()


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
    whole_run = []  # the new frames' pixels, playing order
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
        whole_run = [pixels(l) for l in reversed(new.get_layers())]
        found["export"], found["export_options"] = export_gif(new, GIF)
        back = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(GIF))
        found["loaded_back"] = [l.get_name() for l in back.get_layers()]
        back.delete()
        new.delete()
    found["source_after"] = layers_of(image)
    found["source_unchanged"] = hashes == [pixel_hash(l) for l in image.get_layers()]
    found["source_clean"] = not image.is_dirty()
    found["selected"] = {}
    selected_run(found["selected"], proc, cfg, image, whole_run)
    found["corner"] = {"rect": list(CORNER), "crop": list(CORNER_CROP)}
    corner_run(found["corner"], proc, cfg, image, CORNER, CORNER_CROP)
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
