"""The plug-in's logic that needs no GIMP: standard library only, so tests import it as it is.

Both procedures and the dialog's preview use it: the region and its context margin, cropping the
engine's result back to the region, blending by the selection's coverage, the preview's
geometry, the preset overrides from the dialog's values, the progress bar's wording and pace,
and running work on the engine with the bridge's fresh-engine retry. The GIMP side
(``nst_gimp``) reads pixels and values out of GIMP and hands them here as bytes, tuples and
mappings; nothing here calls GIMP, except through functions it is given.

Rectangles are ``(x, y, w, h)``; pixels are 8-bit RGBA rows without padding (the wire's
``RGBAImage`` layout); a coverage is one byte a pixel (0 outside the selection, 255 inside).
"""

from __future__ import annotations

import gettext
import os
import re
import sys
import time

from nst_settings import DEVICES, RANGES

# ---------------------------------------------------------------------------- translations

#: The plug-in's gettext domain. Its catalogues: ``locale/<lang>/LC_MESSAGES/<DOMAIN>.mo``
#: beside the plug-in, the folder GIMP binds the domain to (``do_set_i18n``).
DOMAIN = "nst-style-transfer"
LOCALE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locale")
_translate = gettext.translation(DOMAIN, LOCALE_DIR, fallback=True).gettext


def _(message):
    """``message`` in the user's language, from the plug-in's catalogue (the message itself
    when there is none). Outside GIMP Python's gettext reads the catalogue; inside, nst_gimp
    switches to GLib's, which follows GIMP's language setting as GIMP's own plug-ins do."""
    return _translate(message)


def N_(message):
    """Marks ``message`` for the catalogue where it is defined; ``_()`` translates it where it
    is shown (tables at module level, read before GIMP has bound the domain)."""
    return message


def translate_with(function):
    """Use ``function(message)`` for ``_()`` from now on (nst_gimp: GLib's dgettext)."""
    global _translate
    _translate = function


class UserError(Exception):
    """A problem the user can fix; the message says what happened and what to do."""


class EngineFailure(UserError):
    """The engine failed (nst_bridge's EngineFailed); the message is its text for the user."""


# ---------------------------------------------------------------------------- arguments

#: The largest value of a GIMP int argument (a gint).
GINT_MAX = 2 ** 31 - 1
#: Argument name -> (minimum, maximum, default) of the numbers the dialog shows. The engine's
#: ranges (``nst_settings``, made from params.py) with the plug-in's own values below them:
#: 0 = the preset's, max-size -1 = the region's own size, seed and temporal-weight -1 = the
#: preset's. style-mix is the plug-in's own (the engine takes weights).
ARGUMENT_RANGES = {
    "strength": RANGES["strength"],
    "max-size": (-1, RANGES["max_size"][1], 0),
    "iterations": (0, RANGES["iterations"][1], 0),
    "seed": (-1, min(GINT_MAX, RANGES["seed"][1]), -1),
    "temporal-weight": (-1.0, float(RANGES["temporal_weight"][1]), -1.0),
    "style-mix": (0.0, 1.0, 0.5),
}
#: The device choice's labels; ``DEVICES`` (``nst_engine.cli.DEVICES``) decides which there are.
DEVICE_LABELS = {"auto": N_("Automatic (GPU when there is one)"), "cpu": N_("CPU"),
                 "cuda": N_("NVIDIA GPU (CUDA)"), "mps": N_("Apple GPU (MPS)")}


def device_choices():
    """[(name, label)] in the engine's order; a device without a label shows its name."""
    return [(name, _(DEVICE_LABELS[name]) if name in DEVICE_LABELS else name)
            for name in DEVICES]


#: The arguments ``overrides`` reads: plain values (no layers), the procedure's own only.
VALUE_ARGUMENTS = ("strength", "max-size", "iterations", "preserve-colors", "seed", "seamless",
                   "temporal-weight")


def overrides(values):
    """The preset overrides (StyleParams field names) for the dialog's ``values`` (argument
    name -> value; an argument the procedure lacks is simply absent). strength always; 0 / -1 /
    off keep the preset's value, except max-size -1: the region's own size on any device."""
    out = {"strength": float(values["strength"])}
    max_size = int(values.get("max-size", 0))
    if max_size > 0:
        out["max_size"] = max_size
    elif max_size < 0:
        out["full_resolution"] = "always"
    if int(values.get("iterations", 0)) > 0:
        out["iterations"] = int(values["iterations"])
    if values.get("preserve-colors"):
        out["preserve_colors"] = True
    if values.get("seamless"):
        out["seamless"] = True
    if int(values.get("seed", -1)) >= 0:
        out["seed"] = int(values["seed"])
    if float(values.get("temporal-weight", -1.0)) >= 0:
        out["temporal_weight"] = float(values["temporal-weight"])
    return out


# ---------------------------------------------------------------------------- regions

#: Context margin around the region: its edges get a stylised neighbourhood, not a border. A
#: fraction of the region's longest side, within these bounds (px).
MARGIN_FRACTION = 0.1
MARGIN_MIN, MARGIN_MAX = 16, 256


def widen(region, width, height):
    """``region`` plus the context margin, clipped to 0..width x 0..height (a layer's extent,
    or an animation's canvas)."""
    x, y, w, h = region
    m = int(min(MARGIN_MAX, max(MARGIN_MIN, MARGIN_FRACTION * max(w, h))))
    x0, y0 = max(0, x - m), max(0, y - m)
    x1, y1 = min(width, x + w + m), min(height, y + h + m)
    return (x0, y0, x1 - x0, y1 - y0)


def layer_region(intersection, size, layer_name, seamless=False):
    """(region, crop) in layer coordinates: what a still run repaints, and that plus the
    context margin (what the engine is sent). ``intersection``: the layer's
    ``mask_intersect()``, ``(ok, x, y, w, h)``, the selection's bounding box on the layer (the
    whole layer when nothing is selected); ``size``: the layer's (w, h). ``seamless``: no
    margin, the region is the tile that wraps. UserError when the selection misses the layer.
    A tiny region needs nothing special: the engine works at its minimum size and returns the
    region's own."""
    ok, x, y, w, h = intersection
    if not ok or w <= 0 or h <= 0:
        raise UserError(_("The selection does not touch the layer “{name}”. Select part of "
                          "that layer, or Select > None for the whole layer.")
                        .format(name=layer_name))
    region = (x, y, w, h)
    return region, (region if seamless else widen(region, *size))


def canvas_region(bounds, canvas):
    """(region, crop) in image coordinates for an animation, whose frames all share them:
    ``bounds`` is the selection's ``(x1, y1, x2, y2)``, or None when nothing is selected
    (region and crop are then the canvas); with a selection, the region is its bounding box
    on the canvas and the crop that plus the context margin. UserError when the selection
    lies off the canvas."""
    w, h = canvas
    if bounds is None:
        return (0, 0, w, h), (0, 0, w, h)
    x1, y1, x2, y2 = bounds
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        raise UserError(_("The selection lies outside the canvas. Select part of the canvas, "
                          "or Select > None for whole frames."))
    region = (x1, y1, x2 - x1, y2 - y1)
    return region, widen(region, w, h)


def in_layer(rect, offsets):
    """``rect`` (image coordinates) in the coordinates of a layer at ``offsets``."""
    return (rect[0] - offsets[0], rect[1] - offsets[1], *rect[2:])


# ---------------------------------------------------------------------------- pixels

def crop_rgba(data, width, rect):
    """The ``rect`` part of a ``width``-px-wide RGBA buffer, as bytes."""
    x, y, w, h = rect
    rows = [data[((y + j) * width + x) * 4:((y + j) * width + x + w) * 4] for j in range(h)]
    return b"".join(rows)


def crop_back(data, crop, region, alpha_from=None):
    """``region``'s pixels out of the engine's result ``data`` (RGBA over ``crop``; both in
    the same coordinates). ``alpha_from``: the pixels sent (over ``crop``), whose alpha is
    kept exactly: the transparency is the source's, not the engine's."""
    x, y, w, h = region
    inside = (x - crop[0], y - crop[1], w, h)
    out = crop_rgba(data, crop[2], inside)
    if alpha_from is None:
        return out
    out = bytearray(out)
    out[3::4] = crop_rgba(alpha_from, crop[2], inside)[3::4]
    return bytes(out)


#: v * c // 255 at [v << 8 | c]: a byte scaled by a coverage, looked up in C (map) rather than
#: computed per byte in Python.
_SCALED = bytes(v * c // 255 for v in range(256) for c in range(256))
_INVERTED = bytes(range(255, -1, -1))
#: Runs of pixels fully (255) or partly selected; the rest keeps the source's pixels.
_SELECTED = re.compile(rb"\xff+|[\x01-\xfe]+")


def blend_by_coverage(source, styled, coverage):
    """What the full run gives over ``source`` (RGBA): the styled layer through a mask of the
    selection, each byte ``(styled * c + source * (255 - c)) / 255`` to within one level (c:
    the pixel's ``coverage``, one byte a pixel). Coverage 0 gives the source's bytes exactly,
    255 the styled ones. GTK's thread runs it: no Python loop per pixel (a 256 px preview took
    57 ms that way), only per run of selected pixels; feathered runs go through ``_SCALED``."""
    out = bytearray(source)
    for run in _SELECTED.finditer(coverage):
        a, b = 4 * run.start(), 4 * run.end()
        if run.group()[0] == 255:
            out[a:b] = styled[a:b]
            continue
        top, rest = styled[a:b], bytearray(b - a)  # rest: 255 - the coverage, for each byte
        for k in range(4):
            rest[k::4] = run.group().translate(_INVERTED)
        # styled - floor(styled * rest / 255) + floor(source * rest / 255): every byte stays
        # in 0..255 at each step, so whole runs are added as integers with no carry or borrow.
        mixed = (int.from_bytes(top, "little") - int.from_bytes(_scaled_by(top, rest), "little")
                 + int.from_bytes(_scaled_by(source[a:b], rest), "little"))
        out[a:b] = mixed.to_bytes(b - a, "little")
    return bytes(out)


def _scaled_by(data, factors):
    """``data[i] * factors[i] // 255`` for every byte: the pairs read as ``v << 8 | c``."""
    pairs = bytearray(2 * len(data))
    low = 0 if sys.byteorder == "little" else 1
    pairs[low::2], pairs[1 - low::2] = factors, data
    return bytes(map(_SCALED.__getitem__, memoryview(pairs).cast("H")))


# ---------------------------------------------------------------------------- the preview

def fit_scale(w, h, longest):
    """The scale that brings a w x h area to at most ``longest`` px (0 = no limit); never > 1."""
    return min(1.0, longest / max(w, h)) if longest else 1.0


def scaled(rect, scale):
    """``rect`` in the coordinates of its layer scaled by ``scale`` (GEGL's scaled reads)."""
    if scale == 1.0:
        return rect
    x, y, w, h = rect
    return (round(x * scale), round(y * scale), max(1, round(w * scale)),
            max(1, round(h * scale)))


def preview_geometry(crop, region, longest, offsets=(0, 0)):
    """Where a preview's pixels come from: ``(scale, read, show, selection)``. ``crop`` (the
    region plus margin) and ``region`` are in the layer's coordinates, the layer at
    ``offsets`` in the image. ``read``: the rectangle GEGL reads at ``scale`` (the crop scaled
    to at most ``longest`` px; its size is the content's); ``show``: the region inside the
    content's pixels; ``selection``: ``show``'s place in the image scaled by ``scale`` (the
    selection's grid), where its coverage is read."""
    scale = fit_scale(crop[2], crop[3], longest)
    read = scaled(crop, scale)
    cw, ch = read[2:]
    sx = min(cw - 1, round((region[0] - crop[0]) * scale))
    sy = min(ch - 1, round((region[1] - crop[1]) * scale))
    show = (sx, sy, max(1, min(cw - sx, round(region[2] * scale))),
            max(1, min(ch - sy, round(region[3] * scale))))
    x, y = scaled((crop[0] + offsets[0], crop[1] + offsets[1], *crop[2:]), scale)[:2]
    return scale, read, show, (x + sx, y + sy, *show[2:])


# ---------------------------------------------------------------------------- progress

#: Progress bar updates per second at most (each is a round trip to the GIMP core).
PROGRESS_RATE = 8.0
#: The engine's stages (``bridge/wire.py`` progress messages) as the progress bar says them.
STAGES = {"loading": N_("Loading the model"), "preparing": N_("Preparing"),
          "optimizing": N_("Stylizing"), "done": N_("Finishing"),
          "waiting": N_("Waiting for another Style Transfer job")}
#: What a run goes through one at a time: a still's layers, an animation's frames. Each: the
#: prefix when there are several, and the time left while only the first one's is known.
UNITS = {"layer": (N_("Layer {index} of {count}: "), N_("{time} left for this layer")),
         "frame": (N_("Frame {index} of {count}: "), N_("{time} left for this frame"))}


def duration(seconds):
    """``seconds`` as the progress bar says them: "42 s", "3 min 05 s"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return _("{s} s").format(s=seconds)
    return _("{m} min {s:02d} s").format(m=seconds // 60, s=seconds % 60)


class ProgressBar:
    """GIMP's progress bar through one run of ``count`` layers or frames (``unit``): the unit,
    the engine's stage, the size, the step and the time left, at most PROGRESS_RATE updates a
    second. The time left is this one's ETA plus, for each one still to come, the mean time of
    those after the first so far (the first also loads the model); until one is known, this
    one's only.

    ``set_text(text)`` and ``update(fraction)`` are GIMP's ``progress_set_text`` and
    ``progress_update``; ``clock``: seconds, monotonic. Call ``start(index)`` (1-based) before
    each one's job and pass the bar as the job's ``on_progress``."""

    def __init__(self, count, unit, set_text, update, clock=time.monotonic):
        self.count, self.unit = count, unit
        self._set_text, self._update, self._clock = set_text, update, clock
        self.index, self.started, self.last = 0, None, None
        self.later = []  # seconds each one after the first took

    def _prefix(self):
        if self.count < 2:
            return ""
        return _(UNITS[self.unit][0]).format(index=self.index, count=self.count)

    def start(self, index):
        now = self._clock()
        if self.started is not None and self.index > 1 and index > self.index:
            self.later.append(now - self.started)
        if index != self.index:
            self.index, self.started = index, now
        self._set_text(self._prefix() + _("Sending the image"))
        self._update((index - 1) / self.count)

    def __call__(self, p):
        """``p``: the engine's progress message (a mapping, ``bridge/wire.py``)."""
        now = self._clock()
        total = p.get("total") or 0
        step = p.get("iteration") or 0
        if self.last is not None and now - self.last < 1.0 / PROGRESS_RATE and step < total:
            return
        self.last = now
        stage = p.get("stage")
        text = _(STAGES[stage]) if stage in STAGES else str(stage or "")
        if p.get("width") and p.get("height") and stage == "optimizing":
            text += " " + _("at {w}×{h} px").format(w=p["width"], h=p["height"])
            if p.get("tiles"):
                text += " " + _("in {n} tiles").format(n=p["tiles"])
        if total:
            text += f" {step}/{total}"
        if p.get("eta") is not None:
            text += ", " + self._time_left(p["eta"])
        if p.get("note"):
            text = f"{p['note']} {text}"
        self._set_text(self._prefix() + text)
        fraction = step / total if total else 0.0
        self._update((self.index - 1 + min(1.0, fraction)) / self.count)

    def _time_left(self, eta):
        left = self.count - self.index
        if left and not self.later:
            return _(UNITS[self.unit][1]).format(time=duration(eta))
        per = sum(self.later) / len(self.later) if self.later else 0.0
        return _("{time} left").format(time=duration(eta + per * left))


# ---------------------------------------------------------------------------- the engine

def run_on_engine(retrying, work, *, on_fresh=None):
    """``work(client)`` on ``retrying``'s engine client, the client closed afterwards whatever
    happens. Returns (what ``work`` returned, the engine's notices of the last job, each once).

    ``retrying``: the bridge's ``retry.FreshRetry``, which decides which failures mean a dead
    engine and runs ``work`` once more on a fresh engine after a dead warm one; ``work`` then
    goes on where it stopped (it keeps its own count of what is done). ``on_fresh()``: called
    before that fresh engine starts. Raises what ``work`` or the engine raised."""
    def starting(fresh):
        if fresh and on_fresh is not None:
            on_fresh()

    try:
        result = retrying.run(work, on_start=starting)
        notices = list(dict.fromkeys(str(n) for n in retrying.client.last_notices or ()))
    finally:
        retrying.close()
    return result, notices
