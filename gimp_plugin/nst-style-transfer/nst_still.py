"""Filters > Style Transfer…: repaint the selected layers, or the selected part of them, in the
style of another layer. Each source layer gets a new layer directly above it, aligned to its
region, masked by the selection; all of them in one undo step, and only once every result has
arrived (all or nothing). Source and style layers are only read.

A run: check the arguments and read every pixel first (``read_jobs``: per layer its region,
the selection's bounding box on it, plus the context margin), one engine for all layers
(``stylize_layers``), then ``add_result_layers``.
"""

from gi.repository import Gegl, Gimp

import nst_core
import nst_dialog
import nst_gimp
from nst_arguments import READWRITE, add_style_arguments, new_procedure
from nst_core import N_, UserError, _

PROC_NAME = "plug-in-nst-style-transfer"
#: Menu label, blurb, help.
TEXTS = (N_("Style _Transfer…"), N_("Repaint a layer in the style of another layer"),
         N_("Neural style transfer (VGG19, Gatys et al.): repaints the selected layer, or the "
            "selected part of it, in the style of another layer. The result is a new layer "
            "above the source, masked by the selection; nothing else changes. With several "
            "layers selected, each gets its own result layer."))


def create_procedure(plugin, name):
    """The still procedure, with the arguments of PRODUCT.md in their order."""
    proc = new_procedure(plugin, name, run_still, TEXTS,
                         Gimp.ProcedureSensitivityMask.DRAWABLE
                         | Gimp.ProcedureSensitivityMask.DRAWABLES)
    add_style_arguments(proc)
    proc.add_boolean_argument(
        "seamless", _("Seamless tile"),
        _("The result repeats without a seam: its left edge continues its right edge and its "
          "top its bottom (for patterns and textures). A layer that does not tile itself "
          "keeps its own seam: run Filters > Map > Tile Seamless on it first. With a "
          "selection, the selection's bounding box is the tile."), False, READWRITE)
    return proc


def run_still(procedure, run_mode, image, drawables, config, data):
    """GIMP's entry point for the still. Never raises (``nst_gimp.guarded``)."""
    def body(state):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            _suggest_style_layer(image, drawables, config)
            ok, state.preview_client = nst_dialog.run_dialog(
                procedure, config, _("Style Transfer"), preview_source(drawables))
            if not ok:
                return nst_gimp.cancelled(procedure)
        _client_mod, cfg, state.log_dir = nst_gimp.installed()
        jobs = read_jobs(drawables, config)
        request = nst_gimp.Request.of(config, cfg)
        results, notices = stylize_layers(cfg, jobs, request, state.preview_client)
        add_result_layers(image, jobs, results, _result_name(config))
        nst_gimp.show_notices(notices)
        return nst_gimp.success(procedure)
    return nst_gimp.guarded(procedure, body)


def _suggest_style_layer(image, drawables, config):
    """Pre-select the topmost other layer of this image when the remembered one is not in it."""
    current = config.get_property("style-layer")
    if current is not None and current.is_valid() and current.get_image() == image:
        return
    sources = {d.get_id() for d in drawables}
    for layer in image.get_layers():
        if layer.get_id() not in sources:
            config.set_property("style-layer", layer)
            return


# ---------------------------------------------------------------------------- reading

class Job:
    """One source layer: ``region`` (layer coordinates: the result layer's extent), ``crop``
    (the region plus context margin) and ``content``, the crop's pixels (RGBAImage) that go
    to the engine."""

    def __init__(self, layer, region, crop, content):
        self.layer, self.region, self.crop, self.content = layer, region, crop, content


def read_jobs(drawables, config):
    """Check the arguments and read every source pixel the engine needs, before it starts."""
    from nst_bridge.wire import RGBAImage

    _check_arguments(drawables, config)
    jobs = []
    for layer in drawables:
        region, crop = _layer_region(layer, config)
        content = RGBAImage(crop[2], crop[3], nst_gimp.read_pixels(layer, crop))
        jobs.append(Job(layer, region, crop, content))
    return jobs


def _check_arguments(drawables, config):
    """UserError unless the drawables are layers and a style layer is chosen."""
    if not drawables:
        raise UserError(_("No layer is selected. Select the layer to repaint in the Layers "
                          "dialog, then run Filters > Style Transfer again."))
    for d in drawables:
        if not isinstance(d, Gimp.Layer):
            raise UserError(_("“{name}” is a mask or channel. Style Transfer repaints layers: "
                              "select a layer in the Layers dialog.").format(name=d.get_name()))
    nst_gimp.check_style(config)


def _layer_region(layer, config):
    """(region, crop) of ``layer`` for this run (``nst_core.layer_region``)."""
    seamless = bool(nst_gimp.argument_values(config).get("seamless"))
    return nst_core.layer_region(layer.mask_intersect(),
                                 (layer.get_width(), layer.get_height()), layer.get_name(),
                                 seamless)


def preview_source(drawables):
    """The dialog preview's source (nst_dialog): the first selected layer's region plus
    context margin, as the run crops it."""
    def source(config, longest):
        _check_arguments(drawables, config)
        layer = drawables[0]
        region, crop = _layer_region(layer, config)
        content, show, coverage = nst_dialog.preview_content(layer, crop, region, longest)
        return nst_dialog.PreviewContent(content, show, coverage,
                                         {"layer": layer.get_id(), "crop": list(crop)},
                                         _("the region to repaint"))
    return source


# ---------------------------------------------------------------------------- the engine

def stylize_layers(cfg, jobs, request, preview_client=None):
    """Every job's styled region (RGBA bytes, the source's alpha) on one engine, and the
    engine's notices. ``preview_client``: the dialog preview's started client, used first."""
    bar = nst_gimp.progress_bar(len(jobs), "layer")
    results = []

    def stylize_the_rest(client):
        # On a fresh engine after a dead warm one, the layers already done are not redone.
        for index, job in enumerate(jobs[len(results):], len(results) + 1):
            bar.start(index)
            styled = request.stylize(client, job.content, bar)
            results.append(nst_core.crop_back(styled.data, job.crop, job.region,
                                              alpha_from=job.content.data))

    _done, notices = nst_gimp.on_engine(cfg, stylize_the_rest, client=preview_client)
    Gimp.progress_update(1.0)
    return results, notices


# ---------------------------------------------------------------------------- the result

def _result_name(config):
    """``Style Transfer: <preset> (<style layer>[ + <second>])`` (PRODUCT.md)."""
    names = [config.get_property("style-layer").get_name()]
    second = nst_gimp.second_style(config)
    mix = float(config.get_property("style-mix"))
    if second is not None:
        names = [n for n, share in ((names[0], 1.0 - mix), (second.get_name(), mix)) if share > 0]
    return f"Style Transfer: {config.get_property('preset')} ({' + '.join(names)})"


def add_result_layers(image, jobs, results, name):
    """Every result as a new layer above its source, in one undo step; all or nothing."""
    masked = not Gimp.Selection.is_empty(image)
    layer_type = nst_gimp.layer_type(image)
    added = []
    Gimp.context_push()
    image.undo_group_start()
    try:
        for job, pixels in zip(jobs, results):
            src = job.layer
            x, y, w, h = job.region
            _ok, ox, oy = src.get_offsets()
            layer = Gimp.Layer.new(image, name, w, h, layer_type, 100.0, Gimp.LayerMode.NORMAL)
            image.insert_layer(layer, src.get_parent(), image.get_item_position(src))
            added.append(layer)
            layer.set_offsets(ox + x, oy + y)
            buf = layer.get_buffer()
            buf.set(Gegl.Rectangle.new(0, 0, w, h), nst_gimp.PIXEL_FORMAT, pixels)
            buf.flush()
            if masked:
                # Made from the selection as it lies over the new layer: feathering is kept.
                layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
            layer.update(0, 0, w, h)
    except Exception:
        for layer in added:  # all or nothing: no half-finished result stays in the image
            try:
                image.remove_layer(layer)
            except Exception:
                pass
        raise
    finally:
        image.undo_group_end()
        Gimp.context_pop()
    Gimp.displays_flush()
