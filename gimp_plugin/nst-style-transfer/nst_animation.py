"""Filters > Style Transfer (Animation)…: every frame of a GIMP animation styled, without
flicker, into a new image.

GIMP's animation convention: the image's top-level layers are the frames, the bottom one
first, each frame's delay and disposal in its name (``Frame 2 (80ms) (replace)``); a layer
group is one frame. Each frame is read over the image's canvas (or, with a selection, its
bounding box plus the still's context margin, clipped to the canvas: the same rectangle for
every frame), sent to the engine as one ``stylize`` with ``animation`` {clip, frame, frames,
loop} (docs/PROTOCOL.md), and its result becomes a layer of a NEW image, named exactly as its
source (so the tags stay and GIMP's playback and GIF/WebP export read them), in the same order.

A selection limits the region as it does for stills: the engine's result is cropped back to the
bounding box, the new image keeps the source's canvas, and each frame's layer is the source
frame with the styled bounding box laid over it through the selection (feathered edges kept),
merged by GIMP into that one layer. The source image is only read.
"""

import uuid

from gi.repository import Gegl, Gimp, GObject

import nst_core
import nst_dialog
import nst_gimp
from nst_arguments import READWRITE, add_number_argument, add_style_arguments, new_procedure
from nst_core import N_, EngineFailure, UserError, _

PROC_NAME = "plug-in-nst-style-transfer-animation"
#: Menu label, blurb, help.
TEXTS = (N_("Style Transfer (_Animation)…"),
         N_("Style every frame of an animation, without flicker, into a new image"),
         N_("The image's top-level layers are the frames (bottom first; a layer group is one "
            "frame; the style layer, if it is in this image, is not a frame). Each frame is "
            "repainted in the style of the style layer, tied to the frames before it by the "
            "optical flow so the style does not flicker, and the result is a NEW image with "
            "one layer per frame in the same order, named as its source (delays and "
            "(combine)/(replace) kept). With a selection only the selected part of each frame "
            "is repainted, feathered edges kept. The source image is not changed."))


def create_procedure(plugin, name):
    """The animation procedure: the still's arguments, then ``loop`` and ``temporal-weight``,
    and the new image as its return value."""
    proc = new_procedure(plugin, name, run_animation, TEXTS,
                         Gimp.ProcedureSensitivityMask.DRAWABLE
                         | Gimp.ProcedureSensitivityMask.DRAWABLES
                         | Gimp.ProcedureSensitivityMask.NO_DRAWABLES)
    add_style_arguments(proc)
    proc.add_boolean_argument("loop", _("_Loop"),
                              _("The animation loops: lead the frames back to the first, so "
                                "the last flows into it without a jump (off for a clip that "
                                "does not loop)"), True, READWRITE)
    add_number_argument(proc, "temporal-weight", _("Frame _coherence (-1 = preset's, 0 = off)"),
                        _("How strongly each frame keeps the earlier frames' strokes where "
                          "the picture moves with them; 0 = every frame on its own "
                          "(flickers); -1 = the preset's temporal_weight"))
    proc.add_image_return_value("new-image", _("New image"), _("The styled animation"), True,
                                READWRITE)
    return proc


def run_animation(procedure, run_mode, image, drawables, config, data):
    """GIMP's entry point for the animation: frames in, a new image out. Never raises
    (``nst_gimp.guarded``)."""
    def body(state):
        interactive = run_mode == Gimp.RunMode.INTERACTIVE
        if interactive:
            _suggest_style_layer(image, config)
            ok, state.preview_client = nst_dialog.run_dialog(
                procedure, config, _("Style Transfer (Animation)"), preview_source(image))
            if not ok:
                return nst_gimp.cancelled(procedure)
        _client_mod, cfg, state.log_dir = nst_gimp.installed()
        nst_gimp.check_style(config)
        request = nst_gimp.Request.of(config, cfg)
        new, notices = stylize_frames(image, config, cfg, request, show=interactive,
                                      preview_client=state.preview_client)
        nst_gimp.show_notices(notices)
        values = nst_gimp.success(procedure)
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Image, new))
        return values
    return nst_gimp.guarded(procedure, body)


def _suggest_style_layer(image, config):
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


# ---------------------------------------------------------------------------- reading

def frames_of(image, config):
    """The frames in playing order: top-level layers bottom first, style layers left out."""
    styles = {s.get_id() for s in (config.get_property("style-layer"),
                                   config.get_property("style-layer-2"))
              if s is not None and s.is_valid()}
    return [f for f in reversed(image.get_layers()) if f.get_id() not in styles]


def _canvas_region(image):
    """(region, crop) in image coordinates, the same for every frame
    (``nst_core.canvas_region``)."""
    bounds = None
    if not Gimp.Selection.is_empty(image):
        bounds = Gimp.Selection.bounds(image)[2:]  # (ok, non_empty, x1, y1, x2, y2)
    return nst_core.canvas_region(bounds, (image.get_width(), image.get_height()))


def _read_frame(frame, rect):
    """The frame's pixels over ``rect`` (image coordinates); transparent where the layer does
    not reach."""
    _ok, ox, oy = frame.get_offsets()
    return nst_gimp.read_pixels(frame, nst_core.in_layer(rect, (ox, oy)), 1.0,
                                Gegl.AbyssPolicy.NONE)


def _frames_checked(image, config):
    """The frames, or UserError when there are too few or too many for one run."""
    from nst_bridge.wire import MAX_ANIMATION_FRAMES

    frames = frames_of(image, config)
    if len(frames) < 2:
        raise UserError(_("This image has {count} frame(s); an animation needs at least 2. "
                          "Frames are the image's top-level layers (a layer group is one "
                          "frame; the style layer is not a frame). For a single layer use "
                          "Filters > Style Transfer….").format(count=len(frames)))
    if len(frames) > MAX_ANIMATION_FRAMES:
        raise UserError(_("This image has {count} frames; one run styles at most {most}. "
                          "Split the animation into parts.")
                        .format(count=len(frames), most=MAX_ANIMATION_FRAMES))
    return frames


def preview_source(image):
    """The dialog preview's source (nst_dialog): the first frame over what the run reads (the
    canvas, or the selection's bounding box plus context margin), the bounding box shown. The
    frames are looked up for each preview: choosing a style layer of this image changes which
    they are."""
    def source(config, longest):
        nst_gimp.check_style(config)
        frames = frames_of(image, config)
        if not frames:
            raise UserError(_("This image has no frame left to preview: its top-level layers "
                              "are the frames, and the style layer is not one. Choose a style "
                              "layer in another image."))
        first = frames[0]
        region, crop = _canvas_region(image)                    # image coordinates
        _ok, *offsets = first.get_offsets()
        content, show, coverage = nst_dialog.preview_content(
            first, nst_core.in_layer(crop, offsets), nst_core.in_layer(region, offsets),
            longest, Gegl.AbyssPolicy.NONE)
        return nst_dialog.PreviewContent(content, show, coverage,
                                         {"layer": first.get_id(), "crop": list(crop)},
                                         _("the first frame, “{name}”")
                                         .format(name=first.get_name()))
    return source


# ---------------------------------------------------------------------------- the engine

def stylize_frames(image, config, cfg, request, *, show, preview_client=None):
    """Style every frame into a new image; returns (the new image, the engine's notices).
    UserError before any work when the frames do not fit; after some frames are done, a
    failure leaves them in the new image and its message says so. ``show``: display the new
    image at once (interactive runs); ``preview_client``: the dialog's started engine client,
    used first."""
    from nst_bridge.wire import RGBAImage

    frames = _frames_checked(image, config)
    region, crop = _canvas_region(image)
    coverage = nst_gimp.selection_coverage(image, region)
    loop = bool(config.get_property("loop"))
    names = [f.get_name() for f in frames]
    # Every pixel read before any work (the region plus margin); with a selection also the
    # whole frames, which the styled region is laid over.
    pixels = [_read_frame(f, crop) for f in frames]
    canvas = (0, 0, image.get_width(), image.get_height())
    wholes = [_read_frame(f, canvas) if coverage is not None else None for f in frames]
    bar = nst_gimp.progress_bar(len(frames), "frame")
    result = Result(image, region, show, coverage)

    def stylize_the_rest(client):
        # A fresh engine after a dead warm one knows nothing of the clip: the frames not yet
        # done start a new one (coherent among themselves, not with the frames before).
        first = len(result.layers)
        clip, count = uuid.uuid4().hex, len(frames) - first
        for k in range(first, len(frames)):
            bar.start(k + 1)
            animation = None  # one frame left on a fresh engine: a still
            if count > 1:
                animation = {"clip": clip, "frame": k - first + 1, "frames": count,
                             "loop": loop and first == 0}
            out = request.stylize(client, RGBAImage(crop[2], crop[3], pixels[k]), bar,
                                  animation)
            styled = out.data if crop == region else nst_core.crop_back(out.data, crop,
                                                                         region)
            result.add(names[k], styled, wholes[k])

    try:
        _done, notices = nst_gimp.on_engine(cfg, stylize_the_rest, client=preview_client)
    except BaseException as e:
        done = len(result.layers)
        if not done:
            result.drop()
            raise
        result.finish()
        if isinstance(e, EngineFailure):
            raise UserError(_("Frame {failed} of {count} failed: {error}\nThe {done} frame(s) "
                              "done are in the new image.")
                            .format(failed=done + 1, count=len(frames), error=e, done=done)) \
                from None
        raise
    result.finish()
    Gimp.progress_update(1.0)
    return result.image, notices


# ---------------------------------------------------------------------------- the result

class Result:
    """The new image, made before the first frame is styled and filled frame by frame, so a
    run that fails or is cancelled half-way keeps the frames done.

    ``coverage``: the selection's over ``region`` (``nst_gimp.selection_coverage``), or None.
    Without one the image is the region's size and a frame's layer is its styled pixels; with
    one the image is the source's canvas and a frame's layer is the source frame with the
    styled region laid over it through the selection."""

    def __init__(self, source, region, show, coverage=None):
        self.region, self.coverage = region, coverage
        w, h = ((source.get_width(), source.get_height()) if coverage is not None
                else region[2:])
        gray = source.get_base_type() == Gimp.ImageBaseType.GRAY
        self.image = Gimp.Image.new(w, h, Gimp.ImageBaseType.GRAY if gray
                                    else Gimp.ImageBaseType.RGB)
        self.type = nst_gimp.layer_type(source)
        self.image.undo_disable()  # built here, not edited: no undo steps to keep
        ok, xres, yres = source.get_resolution()
        if ok:
            self.image.set_resolution(xres, yres)
        self.w, self.h = w, h
        self.layers = []
        self.display = Gimp.Display.new(self.image) if show else None

    def add(self, name, styled, whole=None):
        """A frame's layer on top of the earlier ones (playing order), named ``name``.
        ``styled``: the region's styled pixels; ``whole``: the source frame over the canvas
        (needed with a coverage)."""
        if self.coverage is None:
            layer = self._new_layer(name, (0, 0, self.w, self.h), styled)
        else:
            layer = self._composite(name, styled, whole)
        self.layers.append(layer)
        Gimp.displays_flush()

    def _new_layer(self, name, rect, pixels):
        """A layer at ``rect`` (image coordinates) holding ``pixels``, on top of the stack."""
        x, y, w, h = rect
        layer = Gimp.Layer.new(self.image, name, w, h, self.type, 100.0, Gimp.LayerMode.NORMAL)
        self.image.insert_layer(layer, None, 0)
        layer.set_offsets(x, y)
        nst_gimp.write_pixels(layer, (0, 0, w, h), nst_gimp.PIXEL_FORMAT, pixels)
        return layer

    def _composite(self, name, styled, whole):
        """The source frame, the styled region over it through a mask made of the selection's
        coverage (feathering kept: a mask is opacity, not a cut-out), merged into one layer by
        GIMP, so the compositing is GIMP's own."""
        self._new_layer(name, (0, 0, self.w, self.h), whole)
        above = self._new_layer("styled region", self.region, styled)
        mask = above.create_mask(Gimp.AddMaskType.WHITE)
        above.add_mask(mask)
        nst_gimp.write_pixels(mask, (0, 0, self.region[2], self.region[3]),
                              nst_gimp.MASK_FORMAT, self.coverage)
        merged = self.image.merge_down(above, Gimp.MergeType.CLIP_TO_BOTTOM_LAYER)
        if merged is None:
            raise UserError(_("GIMP could not merge a styled frame with its source frame."))
        if merged.get_name() != name:  # GIMP names it after the lower layer; made sure
            merged.set_name(name)
        return merged

    def finish(self):
        self.image.undo_enable()
        self.image.clean_all()

    def drop(self):
        """No frame was done: the empty image goes."""
        if self.display is not None:
            self.display.delete()
        else:
            self.image.delete()
