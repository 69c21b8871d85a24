"""Filters > Style Transfer (Animation)…: every frame of a GIMP animation styled, without
flicker, into a new image. Imported by nst-style-transfer.py (install.py copies it beside).

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
merged by GIMP into that one layer. The source image is only read. Standard library + gi +
nst_bridge (+ nst_preview's ``crop_rgba``) only.
"""

import time
import uuid

from gi.repository import Gegl, Gimp

PROC_NAME = "plug-in-nst-style-transfer-animation"
PIXEL_FORMAT = "R'G'B'A u8"
#: The selection's and a layer mask's pixels: linear coverage, 0..255.
MASK_FORMAT = "Y u8"
#: Progress bar updates per second at most.
PROGRESS_RATE = 8.0


class AnimationError(Exception):
    """A problem the user can fix, or a failure with the frames done kept; the message says."""


def frames_of(image, config):
    """The frames in playing order: top-level layers bottom first, style layers left out."""
    styles = {s.get_id() for s in (config.get_property("style-layer"),
                                   config.get_property("style-layer-2"))
              if s is not None and s.is_valid()}
    return [l for l in reversed(image.get_layers()) if l.get_id() not in styles]


def region_of(image):
    """(x, y, w, h) in image coordinates: the selection's bounding box, or the canvas."""
    w, h = image.get_width(), image.get_height()
    if Gimp.Selection.is_empty(image):
        return (0, 0, w, h)
    _, _, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        raise AnimationError("The selection lies outside the canvas. Select part of the "
                             "canvas, or Select > None for whole frames.")
    return (x1, y1, x2 - x1, y2 - y1)


def regions_of(image, widen):
    """(region, crop) in image coordinates: what is styled (``region_of``) and what the engine
    is sent. Without a selection both are the canvas; with one, ``crop`` is the region grown by
    ``widen(region, canvas_w, canvas_h)`` (the still's context margin, clipped to the canvas;
    passed in by nst-style-transfer.py, where the margin is defined)."""
    region = region_of(image)
    if Gimp.Selection.is_empty(image):
        return region, region
    return region, widen(region, image.get_width(), image.get_height())


def crop_back(data, crop, region):
    """``region``'s pixels out of the engine's result ``data`` (RGBA over ``crop``; both image
    coordinates)."""
    from nst_preview import crop_rgba

    x, y, w, h = region
    return crop_rgba(data, crop[2], (x - crop[0], y - crop[1], w, h))


def read_frame(layer, region):
    """The frame's pixels over ``region`` (image coordinates); transparent where the layer
    does not reach."""
    x, y, w, h = region
    _, ox, oy = layer.get_offsets()
    buf = layer.get_buffer()
    return bytes(buf.get(Gegl.Rectangle.new(x - ox, y - oy, w, h), 1.0, PIXEL_FORMAT,
                         Gegl.AbyssPolicy.NONE))


def selection_mask(image, region, scale=1.0):
    """The selection's coverage over ``region`` (image coordinates), one byte a pixel (0 =
    outside, 255 = inside, feathered edges between), or None when nothing is selected.
    ``scale`` < 1: ``region`` is in the image scaled by it, read scaled down by GEGL (the
    dialog's preview)."""
    if Gimp.Selection.is_empty(image):
        return None
    x, y, w, h = region
    buf = image.get_selection().get_buffer()
    # Linear "Y u8": GIMP's masks hold linear coverage, so it goes into the new image's layer
    # mask byte for byte.
    return bytes(buf.get(Gegl.Rectangle.new(x, y, w, h), scale, MASK_FORMAT,
                         Gegl.AbyssPolicy.NONE))


class FrameProgress:
    """GIMP's progress bar: "Frame n of N", the engine's stage and the time left (this frame's
    ETA plus the mean time of the later frames so far for each one still to come)."""

    STAGES = {"loading": "loading the model", "preparing": "preparing",
              "optimizing": "stylizing", "done": "finishing",
              "waiting": "waiting for another Style Transfer job"}

    def __init__(self, count):
        self.count, self.index, self.last = count, 0, 0.0
        self.started = None
        self.later = []  # seconds each frame after the first took

    def frame(self, index):
        now = time.monotonic()
        if self.started is not None and self.index > 1:
            self.later.append(now - self.started)
        self.index, self.started = index, now
        Gimp.progress_set_text(f"Frame {index} of {self.count}: sending")
        Gimp.progress_update((index - 1) / self.count)

    def __call__(self, p):
        now = time.monotonic()
        total, it = p.get("total") or 0, p.get("iteration") or 0
        if now - self.last < 1.0 / PROGRESS_RATE and it < total:
            return
        self.last = now
        text = f"Frame {self.index} of {self.count}: " + self.STAGES.get(p.get("stage"), "")
        eta = p.get("eta")
        if eta is not None:
            left = self.count - self.index
            per = (sum(self.later) / len(self.later)) if self.later else None
            if per is not None or left == 0:
                eta += (per or 0.0) * left
                text += f", {_duration(eta)} left"
            else:
                text += f", {_duration(eta)} left for this frame"
        Gimp.progress_set_text(text)
        frac = it / total if total else 0.0
        Gimp.progress_update((self.index - 1 + min(1.0, frac)) / self.count)


def _duration(seconds):
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Result:
    """The new image, made before the first frame is styled and filled frame by frame, so a
    run that fails or is cancelled half-way keeps the frames done.

    ``mask``: the selection's coverage over ``region`` (``selection_mask``), or None. Without
    one the image is the region's size and a frame's layer is its styled pixels; with one the
    image is the source's canvas and a frame's layer is the source frame with the styled region
    laid over it through the selection."""

    def __init__(self, source, region, show, mask=None):
        self.region, self.mask = region, mask
        w, h = ((source.get_width(), source.get_height()) if mask is not None
                else region[2:])
        gray = source.get_base_type() == Gimp.ImageBaseType.GRAY
        self.image = Gimp.Image.new(w, h, Gimp.ImageBaseType.GRAY if gray
                                    else Gimp.ImageBaseType.RGB)
        self.type = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
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
        (needed with a mask)."""
        if self.mask is None:
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
        _write(layer, (0, 0, w, h), PIXEL_FORMAT, pixels)
        return layer

    def _composite(self, name, styled, whole):
        """The source frame, the styled region over it through a mask made of the selection's
        coverage (feathering kept: a mask is opacity, not a cut-out), merged into one layer by
        GIMP, so the compositing is GIMP's own."""
        self._new_layer(name, (0, 0, self.w, self.h), whole)
        above = self._new_layer("styled region", self.region, styled)
        mask = above.create_mask(Gimp.AddMaskType.WHITE)
        above.add_mask(mask)
        _write(mask, (0, 0, self.region[2], self.region[3]), MASK_FORMAT, self.mask)
        merged = self.image.merge_down(above, Gimp.MergeType.CLIP_TO_BOTTOM_LAYER)
        if merged is None:
            raise AnimationError("GIMP could not merge a styled frame with its source frame.")
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


def _write(drawable, rect, fmt, data):
    """``data`` (``fmt``) into ``rect`` of the drawable's own coordinates, shown at once."""
    x, y, w, h = rect
    buf = drawable.get_buffer()
    buf.set(Gegl.Rectangle.new(x, y, w, h), fmt, data)
    buf.flush()
    drawable.update(x, y, w, h)


def run(client_mod, cfg, image, config, *, styles, preset, overrides, device, show, widen,
        engine=None):
    """Style every frame; returns (new image, notices). Raises AnimationError (the message
    says which frames were kept) and nst_bridge's EngineFailed before any frame is done.
    ``widen``: the still's context margin (``regions_of``). ``engine``: a started client to
    use first (the dialog preview's); closed here like one started here."""
    from nst_bridge.retry import FreshRetry
    from nst_bridge.wire import MAX_ANIMATION_FRAMES, RGBAImage

    frames = frames_of(image, config)
    if len(frames) < 2:
        raise AnimationError(
            f"This image has {len(frames)} frame(s); an animation needs at least 2. Frames are "
            "the image's top-level layers (a layer group is one frame; the style layer is not "
            "a frame). For a single layer use Filters > Style Transfer….")
    if len(frames) > MAX_ANIMATION_FRAMES:
        raise AnimationError(f"This image has {len(frames)} frames; one run styles at most "
                             f"{MAX_ANIMATION_FRAMES}. Split the animation into parts.")
    region, crop = regions_of(image, widen)
    mask = selection_mask(image, region)
    loop = bool(config.get_property("loop"))
    names = [f.get_name() for f in frames]
    # Every pixel read before any work (the region plus margin); with a selection also the
    # whole frames, which the styled region is laid over.
    pixels = [read_frame(f, crop) for f in frames]
    canvas = (0, 0, image.get_width(), image.get_height())
    wholes = [read_frame(f, canvas) if mask is not None else None for f in frames]
    w, h = crop[2], crop[3]
    bar = FrameProgress(len(frames))
    Gimp.progress_init("Style Transfer: starting the engine")
    result = Result(image, region, show, mask)
    retrying = FreshRetry(lambda fresh: client_mod.EngineClient.from_config(cfg, fresh=fresh),
                          engine)

    def stylize_the_rest(client):
        # A fresh engine after a dead warm one knows nothing of the clip: the frames not yet
        # done start a new one (coherent among themselves, not with the frames before).
        first = len(result.layers)
        cid, n = uuid.uuid4().hex, len(frames) - first
        for k in range(first, len(frames)):
            bar.frame(k + 1)
            anim = {"clip": cid, "frame": k - first + 1, "frames": max(2, n),
                    "loop": loop and first == 0}
            if n == 1:  # one frame left on a fresh engine: a still
                anim = None
            out = client.stylize(RGBAImage(w, h, pixels[k]), styles, preset=preset,
                                 overrides=overrides, device=device, on_progress=bar,
                                 animation=anim)
            if (out.width, out.height) != (w, h):
                raise AnimationError(f"The engine returned {out.width}×{out.height} px for a "
                                     f"{w}×{h} px frame. Update Style Transfer "
                                     "(`python install.py`).")
            styled = out.data if crop == region else crop_back(out.data, crop, region)
            result.add(names[k], styled, wholes[k])

    try:
        retrying.run(stylize_the_rest)
        notices = list(dict.fromkeys(retrying.client.last_notices))
    except client_mod.EngineFailed as e:
        done = len(result.layers)
        if not done:
            result.drop()
            raise
        result.finish()
        raise AnimationError(
            f"Frame {done + 1} of {len(frames)} failed: {e.user_text()}\nThe {done} frame(s) "
            "done are in the new image.") from None
    except BaseException:
        if result.layers:
            result.finish()
        else:
            result.drop()
        raise
    finally:
        retrying.close()
    result.finish()
    Gimp.progress_update(1.0)
    return result.image, notices
