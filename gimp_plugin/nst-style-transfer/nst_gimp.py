"""What both procedures (nst_still, nst_animation) and the dialog (nst_dialog) do with GIMP and
the installation: the guard that turns every failure into a message, loading nst_bridge and
config.json, reading pixels, styles and the dialog's values, the engine request and its run,
the progress bar and the notices.

GIMP's Python has no torch: the optimisation runs in the engine process, reached through
``nst_bridge`` (``nst_engine/bridge``, copied beside the plug-in by install.py). The logic
that needs no GIMP is in ``nst_core``; this module only moves values between it and GIMP. GIMP
calls belong on GTK's thread (the preview's worker thread gets bytes only).
"""

import os
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib  # noqa: E402

import nst_core  # noqa: E402
from nst_core import EngineFailure, UserError, _  # noqa: E402

# GIMP's own Python plug-ins translate with GLib's gettext, in the domain GIMP bound for them
# (do_set_i18n): it follows GIMP's language preference, which Python's gettext may not see.
nst_core.translate_with(lambda message: GLib.dgettext(nst_core.DOMAIN, message))

#: 8-bit non-linear RGBA: what the engine's wire format carries. GEGL converts from and to any
#: layer type (grayscale, high bit depth) on the way.
PIXEL_FORMAT = "R'G'B'A u8"
#: The selection's and a layer mask's pixels: linear coverage, 0..255.
MASK_FORMAT = "Y u8"


# ---------------------------------------------------------------------------- the installation

def bridge():
    """The bridge's (client, config) modules, imported on use so registration survives a
    broken install."""
    from nst_bridge import client, config  # noqa: WPS433
    return client, config


def installed():
    """(the bridge's client module, config.json's values, the log folder), for a run of either
    procedure; UserError saying what to do when the installation is incomplete or config.json
    is missing or broken."""
    try:
        client_mod, config_mod = bridge()
    except Exception:
        raise UserError(_("Style Transfer is not installed completely (the nst_bridge folder "
                          "beside the plug-in is missing). Run `python install.py` from the "
                          "Style Transfer folder.")) from None
    try:
        cfg = config_mod.load_config()
    except config_mod.ConfigError as e:
        raise UserError(str(e)) from None
    return client_mod, cfg, cfg.get("log_dir") or str(config_mod.default_log_dir())


# ---------------------------------------------------------------------------- the guard

class RunState:
    """What the error handling of a run needs to know: where the log goes, and the dialog
    preview's engine client (handed to the run on OK) to close."""

    def __init__(self):
        self.log_dir = None
        self.preview_client = None


def guarded(procedure, body):
    """``body(state)``'s return values, for either procedure. Never raises: a UserError
    becomes EXECUTION_ERROR with its message, anything else too, with the traceback logged;
    the preview's engine client is closed and the progress bar ended whatever happens."""
    state = RunState()
    try:
        return body(state)
    except UserError as e:
        return failure(procedure, str(e))
    except Exception as e:  # the engine's own errors are UserErrors by now; this is a bug
        where = log_traceback(state.log_dir)
        return failure(procedure, _("Style Transfer failed unexpectedly ({error}).{where} "
                                    "Please report it with that file.")
                       .format(error=f"{type(e).__name__}: {e}", where=where))
    finally:
        if state.preview_client is not None:
            state.preview_client.close()  # done with it (a no-op when the run closed it)
        try:
            Gimp.progress_end()
        except Exception:
            pass


def success(procedure):
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def cancelled(procedure):
    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())


def failure(procedure, message):
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


def log_traceback(log_dir):
    """The current exception's traceback appended to ``plugin-error.log``; returns the
    sentence that names the file for the user ("" when it cannot be written)."""
    try:
        _client, config_mod = bridge()
        folder = log_dir or str(config_mod.default_log_dir())
    except Exception:
        folder = log_dir or os.path.join(GLib.get_tmp_dir(), "nst-style-transfer")
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "plugin-error.log")
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n{traceback.format_exc()}\n")
        return " " + _("Details: {path}.").format(path=path)
    except Exception:
        return ""


# ---------------------------------------------------------------------------- reading GIMP

def read_pixels(drawable, rect, scale=1.0, abyss=Gegl.AbyssPolicy.CLAMP):
    """The pixels of ``rect`` (the drawable's coordinates) as RGBA bytes; with ``scale`` < 1,
    ``rect`` read scaled down by GEGL to ``nst_core.scaled(rect, scale)``'s size. ``abyss``:
    what lies outside the drawable (an animation frame's rectangle may reach past it: NONE,
    transparent)."""
    x, y, w, h = nst_core.scaled(rect, scale)
    buf = drawable.get_buffer()
    return bytes(buf.get(Gegl.Rectangle.new(x, y, w, h), scale, PIXEL_FORMAT, abyss))


def selection_coverage(image, rect, scale=1.0):
    """The selection's coverage over ``rect`` (image coordinates), one byte a pixel (0 =
    outside, 255 = inside, feathered edges between), or None when nothing is selected.
    ``scale`` < 1: ``rect`` is in the image scaled by it, read scaled down by GEGL (the
    dialog's preview)."""
    if Gimp.Selection.is_empty(image):
        return None
    x, y, w, h = rect
    buf = image.get_selection().get_buffer()
    # Linear "Y u8": GIMP's masks hold linear coverage, so it goes into a layer mask byte for
    # byte, and blends as the mask does.
    return bytes(buf.get(Gegl.Rectangle.new(x, y, w, h), scale, MASK_FORMAT,
                         Gegl.AbyssPolicy.NONE))


def write_pixels(drawable, rect, fmt, data):
    """``data`` (``fmt``) into ``rect`` of the drawable's own coordinates, shown at once."""
    x, y, w, h = rect
    buf = drawable.get_buffer()
    buf.set(Gegl.Rectangle.new(x, y, w, h), fmt, data)
    buf.flush()
    drawable.update(x, y, w, h)


def layer_type(image):
    """The type of a new layer that holds RGBA pixels in ``image`` (GRAYA in a gray image)."""
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    return Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE


def argument_values(config):
    """The procedure's settings as {name: value} (``nst_core.VALUE_ARGUMENTS``, those it has):
    what nst_core reads, without GIMP."""
    names = {spec.name for spec in config.list_properties()}
    return {name: config.get_property(name) for name in nst_core.VALUE_ARGUMENTS
            if name in names}


def check_style(config):
    """UserError unless a style layer is chosen."""
    style = config.get_property("style-layer")
    if style is None or not style.is_valid():
        raise UserError(_("Choose a style layer: the layer whose look should be "
                          "transferred."))


def second_style(config):
    """The second style layer, or None when there is none."""
    second = config.get_property("style-layer-2")
    return second if second is not None and second.is_valid() else None


def read_styles(config, longest=0):
    """[(RGBAImage, weight)]: the style layer, and the second one weighted by style-mix.
    ``longest`` > 0 reads them scaled down to at most that many px (the dialog's preview)."""
    from nst_bridge.wire import RGBAImage

    def pixels(layer):
        w, h = layer.get_width(), layer.get_height()
        scale = nst_core.fit_scale(w, h, longest)
        data = read_pixels(layer, (0, 0, w, h), scale)
        w, h = nst_core.scaled((0, 0, w, h), scale)[2:]
        # Checked here, before the engine starts, so the message can name the layer.
        if not any(data[3::4]):
            raise UserError(_("The style layer “{name}” is fully transparent, so it has no "
                              "style to transfer. Choose a layer with visible pixels.")
                            .format(name=layer.get_name()))
        return RGBAImage(w, h, data)

    first, second = config.get_property("style-layer"), second_style(config)
    mix = float(config.get_property("style-mix"))
    if second is None:
        return [(pixels(first), 1.0)]
    styles = []
    if mix < 1.0:
        styles.append((pixels(first), 1.0 - mix))
    if mix > 0.0:
        styles.append((pixels(second), mix))
    return styles


def device_of(cfg, config):
    """The device argument, with the dialog's "auto" deferring to the installer's choice."""
    device = config.get_property("device")
    return (cfg.get("device") or "auto") if device == "auto" else device


# ---------------------------------------------------------------------------- the engine

class Request:
    """What every job of a run asks the engine for besides its content: the preset, the
    overrides (StyleParams names), the device and the style pixels."""

    def __init__(self, preset, overrides, device, styles):
        self.preset, self.overrides, self.device, self.styles = preset, overrides, device, \
            styles

    @classmethod
    def of(cls, config, cfg):
        """The run's request from the procedure's arguments (every pixel read here, on GTK's
        thread, before the engine starts)."""
        return cls(config.get_property("preset"),
                   nst_core.overrides(argument_values(config)), device_of(cfg, config),
                   read_styles(config))

    def stylize(self, client, content, on_progress, animation=None):
        """One job on a started engine client: the styled ``content`` (RGBAImage, the
        content's size: the bridge checks it)."""
        return client.stylize(content, self.styles, preset=self.preset,
                              overrides=self.overrides, device=self.device,
                              on_progress=on_progress, animation=animation)


def engine_retry(load_config, client=None):
    """The bridge's FreshRetry, for both procedures' runs and the dialog's preview: every
    engine client the plug-in uses comes from here, so which failures mean a dead engine is
    decided in the bridge only. ``load_config()``: config.json's values when a client is made;
    ``client``: a started client to use first (the preview's, handed to the run)."""
    client_mod, _config = bridge()
    from nst_bridge.retry import FreshRetry

    return FreshRetry(lambda fresh: client_mod.EngineClient.from_config(load_config(),
                                                                        fresh=fresh), client)


def engine_message(e):
    """An EngineFailed's text for the user, naming the engine's log."""
    text = e.user_text()
    log = getattr(e, "log_path", None)
    if log and str(log) not in text:
        text += "\n" + _("Details are in {path}.").format(path=log)
    return text


def on_engine(cfg, work, *, client=None):
    """``work(client)`` on an engine (``nst_core.run_on_engine``: one more try on a fresh
    engine after a dead warm one, the client closed at the end). Returns (work's value, the
    engine's notices); an engine failure becomes EngineFailure with its message.
    ``client``: the dialog preview's started client, used first."""
    client_mod, _config = bridge()

    def say_fresh():
        Gimp.progress_set_text(_("Style Transfer: starting a new engine"))

    Gimp.progress_init(_("Style Transfer: starting the engine"))
    try:
        return nst_core.run_on_engine(engine_retry(lambda: cfg, client), work,
                                      on_fresh=say_fresh)
    except client_mod.EngineFailed as e:
        raise EngineFailure(engine_message(e)) from None


def progress_bar(count, unit):
    """nst_core's ProgressBar on GIMP's progress bar."""
    return nst_core.ProgressBar(count, unit, Gimp.progress_set_text, Gimp.progress_update)


def show_notices(notices):
    """The engine's notices where GIMP shows messages. E.g. weights that are not the verified
    VGG19: the user must know the result is not what real style transfer looks like."""
    for notice in notices:
        Gimp.message(_("Style Transfer: {notice}").format(notice=notice))
