"""The dialog of either procedure: GIMP's fields for its arguments, the layer choosers'
thumbnails, and the preview pane (``nst_preview``) beside them, fed from GTK's thread with what
the procedure's preview source reads. On OK the preview's started engine client goes to the
run, so no second engine starts; on Cancel it is closed.

A preview source is ``source(config, longest)`` -> ``PreviewContent``: the pixels the run
would send (read scaled down), where the region lies in them, the selection's coverage there,
what was read (for the preview's settings) and a caption. Each procedure makes its own
(``nst_still.preview_source``, ``nst_animation.preview_source``) with ``preview_content``.
"""

import random

import gi
from gi.repository import Gegl, Gimp, GObject

import nst_core
import nst_gimp
from nst_core import UserError, _

#: The arguments whose change makes a preview out of date (max-size and iterations only
#: matter below the preview's own schedule; a change that leaves it alone is not redone).
#: Those a procedure lacks (the animation's: seamless) are left out; its own (loop,
#: temporal-weight) do not change its first frame's preview.
PREVIEW_ARGUMENTS = ("style-layer", "preset", "strength", "max-size", "iterations",
                     "preserve-colors", "seed", "device", "style-layer-2", "style-mix",
                     "seamless")


class PreviewContent:
    """What a preview repaints, read on GTK's thread: ``content`` (RGBAImage, at most the
    preview's size), ``show`` (the region inside it), ``coverage`` (the selection's, over
    ``show``, or None), ``where`` (what was read: {"layer": id, "crop": [x, y, w, h]}) and
    ``caption`` (what the picture is, for the status line)."""

    def __init__(self, content, show, coverage, where, caption):
        self.content, self.show, self.coverage = content, show, coverage
        self.where, self.caption = where, caption


def run_dialog(procedure, config, title, preview_source):
    """Either procedure's dialog. Returns (ok, preview_client): the user's answer, and the
    preview's started engine client for the run to use first (None when it started none)."""
    # GIMP 3.2's own plug-ins import GimpUi only for interactive runs; 3.0 allows either.
    # Importing it here keeps batch runs free of GTK on both.
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init(procedure.get_name())
    dialog = GimpUi.ProcedureDialog.new(procedure, config, title)
    dialog.fill(None)
    for name in ("style-layer", "style-layer-2"):
        _show_thumbnail_once_sized(dialog, name)
    preview = _attach_preview(dialog, config, preview_source)
    ok = dialog.run()
    dialog.hide()
    client = None
    if preview is not None:
        if ok:  # a start in progress is waited for: the run needs that engine anyway
            Gimp.progress_init(_("Style Transfer: starting the engine"))
        client = preview.close(keep_engine=ok)
    dialog.destroy()
    return ok, client


def preview_content(layer, crop, region, longest, abyss=Gegl.AbyssPolicy.CLAMP):
    """(content, show, coverage): ``crop`` of the layer read scaled to at most ``longest`` px,
    where ``region`` (inside ``crop``; layer coordinates) lies in its pixels, and the
    selection's coverage of that place at the same scale (None when nothing is selected): the
    run masks its result with the selection, so the preview blends by it (nst_preview)."""
    from nst_bridge.wire import RGBAImage

    _ok, ox, oy = layer.get_offsets()
    scale, read, show, selected = nst_core.preview_geometry(crop, region, longest, (ox, oy))
    content = RGBAImage(read[2], read[3], nst_gimp.read_pixels(layer, crop, scale, abyss))
    return content, show, nst_gimp.selection_coverage(layer.get_image(), selected, scale)


def _attach_preview(dialog, config, preview_source):
    """The preview pane beside the dialog's fields (nst_preview.py), or None when the
    installation lacks it: the dialog then works as before, and the run reports the problem."""
    try:
        import nst_preview
        _client_mod, config_mod = nst_gimp.bridge()
    except Exception:
        return None
    seed = random.randrange(2 ** 31)  # one seed for the dialog's life: see _preview_job
    styles = {}  # (style ids, mix) -> style pixels at preview size; Preview re-reads them

    def load_config():
        try:
            return config_mod.load_config()
        except config_mod.ConfigError as e:
            raise UserError(str(e)) from None

    def build_job(force):
        # Read here, not in the worker: GIMP calls belong on GTK's thread.
        cfg = load_config()
        if force:
            styles.clear()
        return _preview_job(nst_preview, cfg, config, preview_source, seed, styles)

    names = {spec.name for spec in config.list_properties()}
    try:
        return nst_preview.PreviewPane(dialog, config, build_job,
                                       nst_gimp.engine_retry(config_mod.load_config),
                                       [n for n in PREVIEW_ARGUMENTS if n in names])
    except Exception:
        nst_gimp.log_traceback(None)  # a broken preview must not cost the user the dialog
        return None


def _preview_job(nst_preview, cfg, config, preview_source, seed, style_cache):
    """A PreviewJob: ``preview_source``'s pixels at preview size, with the dialog's settings
    and a short schedule.

    Seed -1 (random) would make every preview differ even when nothing changed; the preview
    uses one seed per dialog instead, so two previews differ only by their settings."""
    seen = preview_source(config, nst_preview.PREVIEW_SIZE)
    second = nst_gimp.second_style(config)
    key = (config.get_property("style-layer").get_id(),
           second.get_id() if second is not None else None,
           float(config.get_property("style-mix")))
    if key not in style_cache:
        # Twice the preview size: the engine scales the style with the content (style_scale).
        style_cache[key] = nst_gimp.read_styles(config, longest=2 * nst_preview.PREVIEW_SIZE)
    values = nst_gimp.argument_values(config)
    values.pop("temporal-weight", None)  # a preview is one frame: no clip to be coherent with
    overrides = nst_preview.preview_overrides({"seed": seed, **nst_core.overrides(values)})
    preset, device = config.get_property("preset"), nst_gimp.device_of(cfg, config)
    settings = {**seen.where, "styles": list(key), "preset": preset, "overrides": overrides,
                "device": device}
    return nst_preview.PreviewJob(seen.content, style_cache[key], preset, overrides, device,
                                  seen.show, settings, caption=seen.caption,
                                  coverage=seen.coverage)


def _show_thumbnail_once_sized(dialog, name):
    """Make a layer chooser show the layer it holds when the dialog opens.

    The chooser draws its thumbnail when its value is set, at the size it has at that moment:
    before the dialog is shown that is no size, so a pre-selected or remembered layer looks like
    no layer at all (an empty square and "Browse…"; GIMP 3.0.4 and 3.2.6). Setting the same
    value again once the chooser has its size draws it. Cosmetic: never fails the dialog."""
    try:
        chooser = dialog.get_widget(name, GObject.TYPE_NONE)
        # GimpDrawableChooser (3.0); 3.2 may hand out its successor GimpItemChooser.
        get, put = ((chooser.get_drawable, chooser.set_drawable)
                    if hasattr(chooser, "set_drawable") else (chooser.get_item, chooser.set_item))
    except Exception:
        return
    sizes = set()

    def on_allocated(widget, allocation):
        size = (allocation.width, allocation.height)
        if size in sizes:  # once per size: redrawing must not loop
            return
        sizes.add(size)
        try:
            value = get()
            if value is not None:
                put(value)
        except Exception:
            pass

    chooser.connect_after("size-allocate", on_allocated)
