#!/usr/bin/env python3
"""Filters > Style Transfer…: repaint a layer, or the selected part of it, in the style of
another layer (VGG19 neural style transfer). One file for GIMP 3.0.x and 3.2.x.

GIMP's Python has no torch: the optimisation runs in the engine process, reached through
``nst_bridge`` (``nst_engine/bridge``, copied beside this file by install.py). This file reads
and writes pixels, builds the dialog, and turns every failure into a message a user can act on.
The result is always a new layer; the image is only touched once every result has arrived.
"""

import json
import os
import random
import sys
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

# nst_bridge lives beside this file (install.py copies it there).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PROC_NAME = "plug-in-nst-style-transfer"
#: The animation procedure (nst_animation.py): Filters > Style Transfer (Animation)…
ANIMATION_PROC = "plug-in-nst-style-transfer-animation"
#: 8-bit non-linear RGBA: what the engine's wire format carries. GEGL converts from and to any
#: layer type (grayscale, high bit depth) on the way.
PIXEL_FORMAT = "R'G'B'A u8"
#: The same names as ``nst_engine.cli.DEVICES`` (the engine is not importable from GIMP).
DEVICES = (("auto", "Automatic (GPU when there is one)"), ("cpu", "CPU"),
           ("cuda", "NVIDIA GPU (CUDA)"), ("mps", "Apple GPU (MPS)"))
#: Seconds the preset list may take at registration (it runs the engine's torch-free
#: ``presets --json``); past it the combo holds only the default preset.
PRESET_LIST_TIMEOUT = 15.0
#: Context margin around the region: edges of the region get a stylised neighbourhood, not a
#: border. A fraction of the region's longest side, within these bounds (px).
MARGIN_FRACTION = 0.1
MARGIN_MIN, MARGIN_MAX = 16, 256
#: Progress bar updates per second at most (each is a round trip to the GIMP core).
PROGRESS_RATE = 8.0


def _bridge():
    """The bridge modules, imported on use so registration survives a broken install."""
    from nst_bridge import client, config  # noqa: WPS433
    return client, config


def _default_preset():
    try:
        return _bridge()[1].DEFAULT_PRESET
    except Exception:
        # Only when nst_bridge is missing (a broken install); run() then says so.
        return "balanced"


# ---------------------------------------------------------------------------- registration

def _preset_listing():
    """The engine's ``presets --json`` answer, or None; never raises.

    At registration the engine is asked and the answer remembered. A run reuses the remembered
    list, so the choice a call is checked against at run time is the one GIMP registered, even
    when the engine cannot be asked (then run() reports why), and no run pays for the listing.
    """
    cache = os.path.join(GLib.get_user_cache_dir(), "nst-style-transfer", "plugin-presets.json")
    if "-run" in sys.argv:  # GIMP starts plug-ins with -query, -init or -run
        try:
            with open(cache, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    try:
        client, config = _bridge()
        listing = client.list_presets(config.load_config(), timeout=PRESET_LIST_TIMEOUT)
    except Exception:
        return None
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache + ".tmp", "w", encoding="utf-8") as f:
            json.dump(listing, f)
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass
    return listing


_LISTING = []  # the listing, asked once per process (both procedures register from it)


def _preset_choice():
    """A Gimp.Choice of the presets the engine knows, and the default; never raises.

    GIMP caches the registration in pluginrc until the plug-in file's mtime changes, so a new
    user preset shows up after the plug-in is registered again (see docs/PLUGIN.md)."""
    default = _default_preset()
    entries = []
    if not _LISTING:
        _LISTING.append(_preset_listing())
    listing = _LISTING[0]
    try:
        default = listing.get("default") or default
        for p in listing["presets"]:
            name = p.get("name")
            if isinstance(name, str) and name and name not in (e[0] for e in entries):
                entries.append((name, p.get("label") or name, p.get("description") or ""))
    except Exception:
        entries = []
    if default not in (e[0] for e in entries):
        entries.insert(0, (default, default, "the default preset"))
    choice = Gimp.Choice.new()
    for i, (name, label, desc) in enumerate(entries):
        choice.add(name, i, str(label), str(desc))
    return choice, default


def _device_choice():
    choice = Gimp.Choice.new()
    for i, (nick, label) in enumerate(DEVICES):
        choice.add(nick, i, label, "")
    return choice


class StyleTransfer(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [PROC_NAME, ANIMATION_PROC]

    def do_create_procedure(self, name):
        if name == ANIMATION_PROC:
            return _animation_procedure(self, name)
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE
                                  | Gimp.ProcedureSensitivityMask.DRAWABLES)
        proc.set_menu_label("Style _Transfer…")
        proc.add_menu_path("<Image>/Filters")
        proc.set_documentation(
            "Repaint a layer in the style of another layer",
            "Neural style transfer (VGG19, Gatys et al.): repaints the selected layer, or the "
            "selected part of it, in the style of another layer. The result is a new layer "
            "above the source, masked by the selection; nothing else changes. With several "
            "layers selected, each gets its own result layer.",
            name)
        proc.set_attribution("Style Transfer for GIMP contributors",
                             "Style Transfer for GIMP contributors", "2026")
        _add_style_arguments(proc)
        proc.add_boolean_argument(
            "seamless", "Seamless tile",
            "The result repeats without a seam: its left edge continues its right edge and its "
            "top its bottom (for patterns and textures). A layer that does not tile itself "
            "keeps its own seam: run Filters > Map > Tile Seamless on it first. With a "
            "selection, the selection's bounding box is the tile.", False,
            GObject.ParamFlags.READWRITE)
        return proc


def _add_style_arguments(proc):
    """The arguments both procedures share, in the contract's order (PRODUCT.md)."""
    rw = GObject.ParamFlags.READWRITE
    presets, default = _preset_choice()
    # none_ok: with False, GIMP refuses an interactive call that has no style layer yet
    # (a calling error before the dialog opens: checked on 3.0.4); run() asks for one.
    proc.add_layer_argument("style-layer", "S_tyle layer",
                            "The layer whose look (brush strokes, texture, colours) is "
                            "transferred", True, rw)
    proc.add_choice_argument("preset", "_Preset",
                             "Speed/quality preset (built-in and user presets)",
                             presets, default, rw)
    proc.add_double_argument("strength", "Stre_ngth",
                             "How strongly the style shows (1 = the preset's balance)",
                             0.0, 10.0, 1.0, rw)
    proc.add_int_argument("max-size", "Ma_x size (px, 0 = preset's, -1 = full)",
                          "Longest side, in pixels, the optimisation runs at; the result "
                          "is scaled to the layer. 0 = the preset's size (on a GPU: the "
                          "region's own size as far as memory allows); -1 = the region's "
                          "own size on any device (in tiles beyond memory; slow on a CPU)",
                          -1, 8192, 0, rw)
    proc.add_int_argument("iterations", "_Iterations (0 = preset's)",
                          "Optimiser steps; more is slower and smoother. 0 = the "
                          "preset's number", 0, 20000, 0, rw)
    proc.add_boolean_argument("preserve-colors", "_Keep original colours",
                              "Transfer brightness patterns only and keep the layer's "
                              "colours (off = the preset's setting)", False, rw)
    proc.add_int_argument("seed", "S_eed (-1 = random)",
                          "Random seed, for repeatable results; -1 = a new one each run",
                          -1, 2 ** 31 - 1, -1, rw)
    proc.add_choice_argument("device", "_Device",
                             "Where the engine computes: auto = GPU when there is one",
                             _device_choice(), "auto", rw)
    proc.add_layer_argument("style-layer-2", "Second st_yle layer (optional)",
                            "A second style blended with the first; none = one style",
                            True, rw)
    proc.add_double_argument("style-mix", "Second style _mix",
                             "Share of the second style: 0 = first only, 1 = second only",
                             0.0, 1.0, 0.5, rw)


def _animation_procedure(plugin, name):
    """Filters > Style Transfer (Animation)…: the image's frames into a new image."""
    rw = GObject.ParamFlags.READWRITE
    proc = Gimp.ImageProcedure.new(plugin, name, Gimp.PDBProcType.PLUGIN, run_animation, None)
    proc.set_image_types("RGB*, GRAY*")
    proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE
                              | Gimp.ProcedureSensitivityMask.DRAWABLES
                              | Gimp.ProcedureSensitivityMask.NO_DRAWABLES)
    proc.set_menu_label("Style Transfer (_Animation)…")
    proc.add_menu_path("<Image>/Filters")
    proc.set_documentation(
        "Style every frame of an animation, without flicker, into a new image",
        "The image's top-level layers are the frames (bottom first; a layer group is one "
        "frame; the style layer, if it is in this image, is not a frame). Each frame is "
        "repainted in the style of the style layer, tied to the frames before it by the "
        "optical flow so the style does not flicker, and the result is a NEW image with one "
        "layer per frame in the same order, named as its source (delays and (combine)/"
        "(replace) kept). With a selection only the selected part of each frame is "
        "repainted, feathered edges kept. The source image is not changed.",
        name)
    proc.set_attribution("Style Transfer for GIMP contributors",
                         "Style Transfer for GIMP contributors", "2026")
    _add_style_arguments(proc)
    proc.add_boolean_argument("loop", "_Loop",
                              "The animation loops: lead the frames back to the first, so "
                              "the last flows into it without a jump (off for a clip that "
                              "does not loop)",
                              True, rw)
    proc.add_double_argument("temporal-weight", "Frame _coherence (-1 = preset's, 0 = off)",
                             "How strongly each frame keeps the earlier frames' strokes where "
                             "the picture moves with them; 0 = every frame on its own "
                             "(flickers); -1 = the preset's temporal_weight",
                             -1.0, 1e6, -1.0, rw)
    proc.add_image_return_value("new-image", "New image", "The styled animation", True, rw)
    return proc


# ---------------------------------------------------------------------------- run

class UserError(Exception):
    """A problem the user can fix; the message says how."""


class _RunState:
    """What the error handling of a run needs to know: where the log goes, and the preview's
    engine client to close."""

    def __init__(self):
        self.log_dir = None
        self.engine = None  # the dialog's preview engine, reused by the full run


def _guarded(procedure, body):
    """``body(state)``'s return values, for either procedure. Never raises: a UserError
    becomes EXECUTION_ERROR with its message, anything else too, with the traceback logged;
    the preview's engine is closed and the progress bar ended whatever happens."""
    state = _RunState()
    try:
        return body(state)
    except UserError as e:
        return _failure(procedure, str(e))
    except Exception as e:  # the engine's own errors are UserErrors by now; this is a bug
        where = _log_traceback(state.log_dir)
        return _failure(procedure, f"Style Transfer failed unexpectedly ({type(e).__name__}: "
                                   f"{e}).{where} Please report it with that file.")
    finally:
        if state.engine is not None:
            state.engine.close()  # done with it (a no-op when the run closed it already)
        try:
            Gimp.progress_end()
        except Exception:
            pass


def run(procedure, run_mode, image, drawables, config, data):
    """GIMP's entry point for the still. Never raises (``_guarded``)."""
    def body(state):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            _suggest_style_layer(image, drawables, config)
            ok, state.engine = _dialog(procedure, config, "Style Transfer",
                                       _still_preview_source(drawables))
            if not ok:
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        client_mod, cfg, state.log_dir = _installed()
        jobs = _plan(image, drawables, config)
        results, notices = _stylize_all(client_mod, cfg, jobs, config, engine=state.engine)
        _apply(image, jobs, results)
        # E.g. weights that are not the verified VGG19: the user must know the result is not
        # what real style transfer looks like, so say it where GIMP shows messages.
        for notice in notices:
            Gimp.message(f"Style Transfer: {notice}")
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    return _guarded(procedure, body)


def run_animation(procedure, run_mode, image, drawables, config, data):
    """The animation procedure (nst_animation.py): frames in, a new image out. Never raises
    (``_guarded``)."""
    def body(state):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            _suggest_animation_style_layer(image, config)
            ok, state.engine = _dialog(procedure, config, "Style Transfer (Animation)",
                                       _animation_preview_source(image))
            if not ok:
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        nst_animation = _animation_module()
        client_mod, cfg, state.log_dir = _installed()
        _check_style(config)
        overrides = _overrides(config)
        if config.get_property("temporal-weight") >= 0:
            overrides["temporal_weight"] = float(config.get_property("temporal-weight"))
        try:
            new, notices = nst_animation.run(
                client_mod, cfg, image, config, styles=_styles(client_mod, config),
                preset=config.get_property("preset"), overrides=overrides,
                device=_device(cfg, config), show=run_mode == Gimp.RunMode.INTERACTIVE,
                widen=_widen, engine=state.engine)
        except nst_animation.AnimationError as e:
            raise UserError(str(e)) from None
        except client_mod.EngineFailed as e:
            raise UserError(_engine_message(e)) from None
        for notice in notices:
            Gimp.message(f"Style Transfer: {notice}")
        values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Image, new))
        return values
    return _guarded(procedure, body)


def _installed():
    """(the bridge's client module, config.json's values, the log folder), for a run of either
    procedure; UserError saying what to do when the installation is incomplete or config.json
    is missing or broken."""
    try:
        client_mod, config_mod = _bridge()
    except Exception:
        raise UserError("Style Transfer is not installed completely (the nst_bridge folder "
                        "beside the plug-in is missing). Run `python install.py` from the "
                        "Style Transfer folder.") from None
    try:
        cfg = config_mod.load_config()
    except config_mod.ConfigError as e:
        raise UserError(str(e)) from None
    return client_mod, cfg, cfg.get("log_dir") or str(config_mod.default_log_dir())


def _animation_module():
    """nst_animation.py, beside this file; imported on use so a still's run never needs it
    (its preview reads the selection's coverage with ``selection_mask``, as the animation's
    run does)."""
    try:
        import nst_animation  # noqa: WPS433
    except Exception:
        raise UserError("Style Transfer is not installed completely (nst_animation.py beside "
                        "the plug-in is missing). Run `python install.py` from the Style "
                        "Transfer folder.") from None
    return nst_animation


def _failure(procedure, message):
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


def _log_traceback(log_dir):
    try:
        _, config_mod = _bridge()
        folder = log_dir or str(config_mod.default_log_dir())
    except Exception:
        folder = log_dir or os.path.join(GLib.get_tmp_dir(), "nst-style-transfer")
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "plugin-error.log")
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n{traceback.format_exc()}\n")
        return f" Details: {path}."
    except Exception:
        return ""


def _dialog(procedure, config, title, preview_source):
    """Either procedure's dialog: GIMP's fields for its arguments, the preview pane beside them.
    ``preview_source(config, longest)``: what the preview repaints (``_still_preview_source``,
    ``_animation_preview_source``). Returns (ok, engine): the user's answer, and the preview's
    started engine client for the full run to reuse (None when the preview started none)."""
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
    engine = None
    if preview is not None:
        if ok:  # a start in progress is waited for: the run needs that engine anyway
            Gimp.progress_init("Style Transfer: starting the engine")
        engine = preview.close(keep_engine=ok)
    dialog.destroy()
    return ok, engine


#: The arguments whose change makes a preview out of date (max-size and iterations only
#: matter below the preview's own schedule; a change that leaves it alone is not redone).
#: Those a procedure lacks (the animation's: seamless) are left out; its own (loop,
#: temporal-weight) do not change its first frame's preview.
PREVIEW_ARGUMENTS = ("style-layer", "preset", "strength", "max-size", "iterations",
                     "preserve-colors", "seed", "device", "style-layer-2", "style-mix",
                     "seamless")


def _attach_preview(dialog, config, preview_source):
    """The preview pane beside the dialog's fields (nst_preview.py), or None when the
    installation lacks it: the dialog then works as before, and run() reports the problem."""
    try:
        import nst_preview
        from nst_bridge.retry import FreshRetry
        client_mod, config_mod = _bridge()
    except Exception:
        return None
    seed = random.randrange(2 ** 31)  # one seed for the dialog's life: see _preview_job
    styles = {}  # (style ids, mix) -> style pixels at preview size; Preview re-reads them

    def build_job(force):
        # Read here, not in the worker: GIMP calls belong on GTK's thread.
        try:
            cfg = config_mod.load_config()
        except config_mod.ConfigError as e:
            raise UserError(str(e)) from None
        if force:
            styles.clear()
        return _preview_job(nst_preview, client_mod, cfg, config, preview_source, seed, styles)

    def make_client(fresh):
        return client_mod.EngineClient.from_config(config_mod.load_config(), fresh=fresh)

    names = {p.name for p in config.list_properties()}
    try:
        return nst_preview.PreviewPane(dialog, config, build_job, FreshRetry(make_client),
                                       [n for n in PREVIEW_ARGUMENTS if n in names])
    except Exception:
        _log_traceback(None)  # a broken preview must not cost the user the dialog
        return None


def _preview_job(nst_preview, client_mod, cfg, config, preview_source, seed, style_cache):
    """A PreviewJob: ``preview_source``'s pixels at preview size, with the dialog's settings
    and a short schedule.

    Seed -1 (random) would make every preview differ even when nothing changed; the preview
    uses one seed per dialog instead, so two previews differ only by their settings."""
    content, show, coverage, where, caption = preview_source(config, nst_preview.PREVIEW_SIZE)
    second = config.get_property("style-layer-2")
    key = (config.get_property("style-layer").get_id(),
           second.get_id() if second is not None and second.is_valid() else None,
           float(config.get_property("style-mix")))
    if key not in style_cache:
        # Twice the preview size: the engine scales the style with the content (style_scale).
        style_cache[key] = _styles(client_mod, config, longest=2 * nst_preview.PREVIEW_SIZE)
    styles = style_cache[key]
    overrides = nst_preview.preview_overrides({"seed": seed, **_overrides(config)})
    preset, device = config.get_property("preset"), _device(cfg, config)
    settings = {**where, "styles": list(key), "preset": preset, "overrides": overrides,
                "device": device}
    return nst_preview.PreviewJob(content, styles, preset, overrides, device, show, settings,
                                  caption=caption, coverage=coverage)


def _still_preview_source(drawables):
    """The still's preview source: ``source(config, longest)`` is (content, the region's place
    in it, the selection's coverage of that place or None, the settings that say what was
    read, a caption), for the first selected layer's region plus context margin, as the full
    run crops it."""
    def source(config, longest):
        _check_arguments(drawables, config)
        layer = drawables[0]
        region, crop = _region(layer, _seamless(config))
        content, show, coverage = _preview_content(layer, crop, region, longest)
        return content, show, coverage, {"layer": layer.get_id(), "crop": list(crop)}, \
            "the region to repaint"
    return source


def _animation_preview_source(image):
    """The animation's preview source (as ``_still_preview_source``'s): the first frame over
    what the run reads (the canvas, or the selection's bounding box plus context margin), the
    bounding box shown, laid over the frame through the selection as the run lays it. The
    frames are looked up for each preview: choosing a style layer of this image changes which
    they are."""
    def source(config, longest):
        nst_animation = _animation_module()
        _check_style(config)
        frames = nst_animation.frames_of(image, config)
        if not frames:
            raise UserError("This image has no frame left to preview: its top-level layers "
                            "are the frames, and the style layer is not one. Choose a style "
                            "layer in another image.")
        first = frames[0]
        region, crop = nst_animation.regions_of(image, _widen)   # image coordinates
        _, ox, oy = first.get_offsets()
        content, show, coverage = _preview_content(              # the frame's coordinates
            first, (crop[0] - ox, crop[1] - oy, *crop[2:]),
            (region[0] - ox, region[1] - oy, *region[2:]), longest, Gegl.AbyssPolicy.NONE)
        return content, show, coverage, {"layer": first.get_id(), "crop": list(crop)}, \
            f"the first frame, “{first.get_name()}”"
    return source


def _preview_content(layer, crop, region, longest, abyss=Gegl.AbyssPolicy.CLAMP):
    """(content, show, coverage): ``crop`` of the layer read scaled to at most ``longest`` px,
    where ``region`` (inside ``crop``; layer coordinates) lies in its pixels, and the
    selection's coverage of that place at the same scale (None when nothing is selected): the
    run masks its result with the selection, so the preview blends by it (nst_preview)."""
    from nst_bridge.wire import RGBAImage

    scale = _fit_scale(crop[2], crop[3], longest)
    cw, ch = _scaled(crop, scale)[2:]
    content = RGBAImage(cw, ch, _read(layer, crop, scale, abyss))
    sx = min(cw - 1, round((region[0] - crop[0]) * scale))
    sy = min(ch - 1, round((region[1] - crop[1]) * scale))
    show = (sx, sy, max(1, min(cw - sx, round(region[2] * scale))),
            max(1, min(ch - sy, round(region[3] * scale))))
    # The selection is in image coordinates: the crop's place there, on the content's grid.
    _, ox, oy = layer.get_offsets()
    x, y = _scaled((crop[0] + ox, crop[1] + oy, *crop[2:]), scale)[:2]
    coverage = _animation_module().selection_mask(layer.get_image(),
                                                  (x + sx, y + sy, *show[2:]), scale)
    return content, show, coverage


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


def _suggest_animation_style_layer(image, config):
    """Pre-select the top layer of another open image when no style layer is remembered. An
    animation's own layers are its frames, so its style usually lives in another image (a
    layer of this one chosen as the style stops being a frame)."""
    current = config.get_property("style-layer")
    if current is not None and current.is_valid():
        return
    for other in Gimp.get_images():
        layers = other.get_layers() if other.get_id() != image.get_id() else []
        if layers:
            config.set_property("style-layer", layers[0])
            return


# ---------------------------------------------------------------------------- planning

class Job:
    """One source layer: the region it is stylised in and the pixels that go to the engine."""

    def __init__(self, layer, region, crop):
        self.layer = layer
        self.region = region  # (x, y, w, h) in layer coordinates: the result layer's extent
        self.crop = crop      # (x, y, w, h) in layer coordinates: region plus context margin
        self.content = None
        self.name = ""


def _plan(image, drawables, config):
    """Check the arguments and read every pixel the engine needs, before anything runs."""
    _check_arguments(drawables, config)
    jobs = []
    for layer in drawables:
        region, crop = _region(layer, _seamless(config))
        job = Job(layer, region, crop)
        job.name = _layer_name(config)
        job.content = _read(layer, crop)
        jobs.append(job)
    return jobs


def _check_arguments(drawables, config):
    """UserError unless the drawables are layers and a style layer is chosen."""
    if not drawables:
        raise UserError("No layer is selected. Select the layer to repaint in the Layers "
                        "dialog, then run Filters > Style Transfer again.")
    for d in drawables:
        if not isinstance(d, Gimp.Layer):
            raise UserError(f"“{d.get_name()}” is a mask or channel. Style Transfer repaints "
                            "layers: select a layer in the Layers dialog.")
    _check_style(config)


def _check_style(config):
    """UserError unless a style layer is chosen."""
    style = config.get_property("style-layer")
    if style is None or not style.is_valid():
        raise UserError("Choose a style layer: the layer whose look should be transferred.")


def _seamless(config):
    """The seamless checkbox (only Filters > Style Transfer has it)."""
    return hasattr(config.props, "seamless") and bool(config.get_property("seamless"))


def _region(layer, seamless=False):
    """(region, crop) in layer coordinates: what is repainted, and that plus context margin.
    ``seamless``: no margin; the region (the selection's bounding box) is the tile that wraps."""
    ok, x, y, w, h = layer.mask_intersect()
    if not ok or w <= 0 or h <= 0:
        raise UserError(f"The selection does not touch the layer “{layer.get_name()}”. "
                        "Select part of that layer, or Select > None for the whole layer.")
    # A tiny region needs nothing special here: the engine optimises at no less than its
    # minimum working size (upscaling) and returns the region's own size.
    if seamless:
        return (x, y, w, h), (x, y, w, h)
    return (x, y, w, h), _widen((x, y, w, h), layer.get_width(), layer.get_height())


def _widen(region, layer_w, layer_h):
    """``region`` plus the context margin, clipped to 0..layer_w × 0..layer_h (a layer's, or
    for an animation the canvas: nst_animation.regions_of is given this function)."""
    x, y, w, h = region
    m = int(min(MARGIN_MAX, max(MARGIN_MIN, MARGIN_FRACTION * max(w, h))))
    x0, y0 = max(0, x - m), max(0, y - m)
    x1, y1 = min(layer_w, x + w + m), min(layer_h, y + h + m)
    return (x0, y0, x1 - x0, y1 - y0)


def _read(drawable, rect, scale=1.0, abyss=Gegl.AbyssPolicy.CLAMP):
    """The pixels of ``rect`` (layer coordinates); with ``scale`` < 1, ``rect`` is read scaled
    down by GEGL to ``_scaled(rect, scale)``'s size. ``abyss``: what lies outside the layer
    (an animation frame's rectangle may reach past it: NONE, transparent)."""
    x, y, w, h = _scaled(rect, scale)
    buf = drawable.get_buffer()
    return bytes(buf.get(Gegl.Rectangle.new(x, y, w, h), scale, PIXEL_FORMAT, abyss))


def _scaled(rect, scale):
    """``rect`` in the coordinates of the layer scaled by ``scale`` (GEGL's scaled reads)."""
    if scale == 1.0:
        return rect
    x, y, w, h = rect
    return (round(x * scale), round(y * scale), max(1, round(w * scale)),
            max(1, round(h * scale)))


def _fit_scale(w, h, longest):
    """The scale that brings a w×h area to at most ``longest`` px (0 = no limit); never > 1."""
    return min(1.0, longest / max(w, h)) if longest else 1.0


def _styles(client_mod, config, longest=0):
    """[(RGBAImage, weight)]: the style layer, and the second one weighted by style-mix.
    ``longest`` > 0 reads them scaled down to at most that many px (the dialog's preview)."""
    from nst_bridge.wire import RGBAImage

    def pixels(layer):
        w, h = layer.get_width(), layer.get_height()
        scale = _fit_scale(w, h, longest)
        data = _read(layer, (0, 0, w, h), scale)
        w, h = _scaled((0, 0, w, h), scale)[2:]
        # Checked here, before the engine starts, so the message can name the layer.
        if not any(data[3::4]):
            raise UserError(f"The style layer “{layer.get_name()}” is fully transparent, so "
                            "it has no style to transfer. Choose a layer with visible pixels.")
        return RGBAImage(w, h, data)

    first = config.get_property("style-layer")
    second = config.get_property("style-layer-2")
    mix = float(config.get_property("style-mix"))
    if second is None or not second.is_valid():
        return [(pixels(first), 1.0)]
    styles = []
    if mix < 1.0:
        styles.append((pixels(first), 1.0 - mix))
    if mix > 0.0:
        styles.append((pixels(second), mix))
    return styles


def _overrides(config):
    """Plug-in arguments as preset overrides (StyleParams field names); 0 / -1 / off keep the
    preset's value, except max-size -1: the region's own size."""
    out = {"strength": float(config.get_property("strength"))}
    if config.get_property("max-size") > 0:
        out["max_size"] = int(config.get_property("max-size"))
    elif config.get_property("max-size") < 0:
        out["full_resolution"] = "always"
    if config.get_property("iterations") > 0:
        out["iterations"] = int(config.get_property("iterations"))
    if config.get_property("preserve-colors"):
        out["preserve_colors"] = True
    if _seamless(config):
        out["seamless"] = True
    if config.get_property("seed") >= 0:
        out["seed"] = int(config.get_property("seed"))
    return out


# ---------------------------------------------------------------------------- the engine

class _ProgressBar:
    """Feeds GIMP's progress bar from the engine's reports, at most PROGRESS_RATE a second."""

    STAGES = {"loading": "Loading the model", "preparing": "Preparing",
              "optimizing": "Stylizing", "done": "Finishing",
              "waiting": "Waiting for another Style Transfer job"}

    def __init__(self, index, count):
        self.prefix = f"Layer {index}/{count}: " if count > 1 else ""
        self.index, self.count = index - 1, count
        self.last = 0.0

    def start(self, text):
        Gimp.progress_set_text(self.prefix + text)
        Gimp.progress_update(self.index / self.count)

    def __call__(self, p):
        """``p``: the engine's progress message (``bridge/wire.py``)."""
        now = time.monotonic()
        total = p.get("total") or 0
        iteration = p.get("iteration") or 0
        if now - self.last < 1.0 / PROGRESS_RATE and iteration < total:
            return
        self.last = now
        text = self.STAGES.get(p.get("stage"), str(p.get("stage") or ""))
        if p.get("width") and p.get("height") and p.get("stage") == "optimizing":
            tiles = f" in {p['tiles']} tiles" if p.get("tiles") else ""
            text += f" at {p['width']}\u00d7{p['height']} px{tiles}"
        if total:
            text += f" {iteration}/{total}"
        eta = p.get("eta")
        if eta is not None:
            text += f", {_duration(eta)} left"
        if p.get("note"):
            text = f"{p['note']} {text}"
        Gimp.progress_set_text(self.prefix + text)
        frac = iteration / total if total else 0.0
        Gimp.progress_update((self.index + min(1.0, frac)) / self.count)


def _duration(seconds):
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _stylize_all(client_mod, cfg, jobs, config, engine=None):
    """``engine``: a started client to use instead of starting one (the dialog's preview
    engine); closed here like our own."""
    from nst_bridge.retry import FreshRetry
    from nst_bridge.wire import RGBAImage

    preset = config.get_property("preset")
    device = _device(cfg, config)
    styles = _styles(client_mod, config)
    overrides = _overrides(config)
    Gimp.progress_init("Style Transfer: starting the engine")
    retrying = FreshRetry(lambda fresh: client_mod.EngineClient.from_config(cfg, fresh=fresh),
                          engine)
    results = []

    def stylize_the_rest(client):
        # On a fresh engine after a dead warm one, the layers already done are not redone.
        for i, job in enumerate(jobs[len(results):], len(results) + 1):
            bar = _ProgressBar(i, len(jobs))
            bar.start("Sending the image")
            content = RGBAImage(job.crop[2], job.crop[3], job.content)
            result = client.stylize(content, styles, preset=preset, overrides=overrides,
                                    device=device, on_progress=bar)
            results.append(_crop_back(job, result))

    def starting(fresh):
        if fresh:
            Gimp.progress_set_text("Style Transfer: starting a new engine")

    try:
        retrying.run(stylize_the_rest, on_start=starting)
        notices = list(dict.fromkeys(retrying.client.last_notices))
    except client_mod.EngineFailed as e:
        raise UserError(_engine_message(e)) from None
    finally:
        retrying.close()
    Gimp.progress_update(1.0)
    return results, notices


def _device(cfg, config):
    """The device argument, with the dialog's "auto" deferring to the installer's choice."""
    device = config.get_property("device")
    return (cfg.get("device") or "auto") if device == "auto" else device


def _engine_message(e):
    text = e.user_text()
    log = getattr(e, "log_path", None)
    if log and str(log) not in text:
        text += f"\nDetails are in {log}."
    return text


def _crop_back(job, result):
    """The region's pixels from the engine's result, with the source's alpha."""
    cx, cy, cw, ch = job.crop
    if (result.width, result.height) != (cw, ch):
        raise UserError(f"The engine returned {result.width}×{result.height} px for a "
                        f"{cw}×{ch} px region. Update Style Transfer (`python install.py`).")
    rx, ry, rw, rh = job.region
    dx, dy = rx - cx, ry - cy
    out = bytearray(rw * rh * 4)
    src, res = job.content, result.data
    for row in range(rh):
        a = ((dy + row) * cw + dx) * 4
        out[row * rw * 4:(row + 1) * rw * 4] = res[a:a + rw * 4]
        # The source's alpha, exactly: transparency is the source's, not the engine's.
        out[row * rw * 4 + 3:(row + 1) * rw * 4:4] = src[a + 3:a + rw * 4:4]
    return bytes(out)


# ---------------------------------------------------------------------------- the result

def _layer_name(config):
    preset = config.get_property("preset")
    names = [config.get_property("style-layer").get_name()]
    second = config.get_property("style-layer-2")
    mix = float(config.get_property("style-mix"))
    if second is not None and second.is_valid():
        names = [n for n, share in ((names[0], 1.0 - mix), (second.get_name(), mix)) if share > 0]
    return f"Style Transfer: {preset} ({' + '.join(names)})"


def _apply(image, jobs, results):
    """Every result as a new layer above its source, in one undo step; all or nothing."""
    masked = not Gimp.Selection.is_empty(image)
    layer_type = (Gimp.ImageType.GRAYA_IMAGE if image.get_base_type() == Gimp.ImageBaseType.GRAY
                  else Gimp.ImageType.RGBA_IMAGE)
    added = []
    Gimp.context_push()
    image.undo_group_start()
    try:
        for job, pixels in zip(jobs, results):
            src = job.layer
            x, y, w, h = job.region
            _, ox, oy = src.get_offsets()
            layer = Gimp.Layer.new(image, job.name, w, h, layer_type, 100.0,
                                   Gimp.LayerMode.NORMAL)
            image.insert_layer(layer, src.get_parent(), image.get_item_position(src))
            added.append(layer)
            layer.set_offsets(ox + x, oy + y)
            buf = layer.get_buffer()
            buf.set(Gegl.Rectangle.new(0, 0, w, h), PIXEL_FORMAT, pixels)
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


if __name__ == "__main__":
    Gimp.main(StyleTransfer.__gtype__, sys.argv)
