# What the scripts that run inside GIMP (python-fu-eval: e2e_checks.py, gui_preview.py,
# gui_undo.py, warm_runs.py) share. python-fu-eval execs a script's text, so the script has no
# __file__ to find this module by: each one puts $NST_E2E_SCRIPTS (set by session.py) on
# sys.path and imports it, which works the same in GIMP 3.0 and 3.2.
import contextlib
import hashlib
import json
import os
import subprocess
import time
import traceback

import gi

gi.require_version("Gegl", "0.4")
gi.require_version("Gimp", "3.0")
from gi.repository import Gegl, Gimp  # noqa: E402

PROC = "plug-in-nst-style-transfer"
FMT = "R'G'B'A u8"
CONFIG = os.path.join(os.environ["HOME"], ".config", "nst-style-transfer", "config.json")
ENGINE_LOG = os.path.join(os.environ["HOME"], ".local", "share", "nst-style-transfer", "logs",
                          "engine.log")
#: The helper process that works a dialog through X (xdotool), in one of its modes.
DRIVER = os.path.join(os.environ["NST_E2E_SCRIPTS"], "gui_preview_driver.py")
# Tiny and fast: the point is the plumbing, not the picture.
FAST = {"preset": "quick", "iterations": 3, "max-size": 64, "seed": 7}

Gegl.init(None)


def save(found, path):
    """Write the findings as JSON; atomically, so the test never reads half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(found, f, indent=1)
    os.replace(path + ".tmp", path)


@contextlib.contextmanager
def recording(found, path):
    """Findings go into found, which is saved to path at the end whatever happens; an
    exception is recorded as its traceback, for the test to show, instead of ending GIMP's
    batch with no findings at all."""
    t0 = time.monotonic()
    try:
        yield
    except Exception:
        found["exception"] = traceback.format_exc()
    finally:
        found["seconds"] = round(time.monotonic() - t0, 2)
        save(found, path)


@contextlib.contextmanager
def driven(mode, out):
    """``DRIVER`` working, in ``mode``, the dialog the body opens (and runs to its end). Yields
    a dict that, once the body is done and the driver has ended (30 s at most), holds its exit
    code (``driver_rc``) and its report (``driver``, from ``{out}.driver.json``). A driver still
    running then, or when the body fails, is killed."""
    driver = subprocess.Popen(["python3", DRIVER, mode, out])
    report = {}
    try:
        yield report
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    report["driver_rc"] = driver.returncode
    with open(f"{out}.driver.json") as f:
        report["driver"] = json.load(f)


@contextlib.contextmanager
def displayed(image):
    """The image in a window of GIMP's GUI, closed at the end as clean: GIMP would otherwise
    ask whether to discard the changes, and never quit."""
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    try:
        yield display
    finally:
        image.clean_all()
        display.delete()


def pixels(drawable, fmt=FMT, rect=None):
    x, y, w, h = rect or (0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt,
                                           Gegl.AbyssPolicy.NONE))


def pixel_hash(drawable):
    return hashlib.sha1(pixels(drawable)).hexdigest()


def fill(layer, fn):
    """Write fn(x, y) -> (r, g, b, a) into every pixel of the layer. Values are cut to 0..255
    integers, so a picture may be drawn with float arithmetic."""
    w, h = layer.get_width(), layer.get_height()
    data = bytearray()
    for y in range(h):
        for x in range(w):
            data += bytes(max(0, min(255, int(v))) for v in fn(x, y))
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), FMT, bytes(data))
    buf.flush()


def add_layer(image, name, w, h, fn, offsets=(0, 0), parent=None, position=0,
              kind=Gimp.ImageType.RGBA_IMAGE):
    """A new layer in image, filled with fn (see fill)."""
    layer = Gimp.Layer.new(image, name, w, h, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, parent, position)
    layer.set_offsets(*offsets)
    fill(layer, fn)
    return layer


def stripes(x, y):
    """The style picture: red and blue stripes."""
    return (255 if (x // 3) % 2 else 20, 40, 255 if (y // 4) % 2 else 60, 255)


def run_plugin(image, drawables, style=None, run_mode=Gimp.RunMode.NONINTERACTIVE, **args):
    """Run the plug-in through the PDB, as any script would; args are its other arguments by
    name ("max-size": use **{...})."""
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    cfg = proc.create_config()
    cfg.set_property("run-mode", run_mode)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)  # set_property cannot set an array
    if style is not None:
        cfg.set_property("style-layer", style)
    for k, v in args.items():
        cfg.set_property(k, v)
    t0 = time.monotonic()
    res = proc.run(cfg)
    return {"status": res.index(0).value_nick,
            "message": res.index(1) if res.length() > 1 else None,
            "seconds": round(time.monotonic() - t0, 2)}


def set_config(**values):
    """Change keys of the installed plug-in's config.json."""
    with open(CONFIG, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(values)
    with open(CONFIG, "w", encoding="utf-8") as f:
        json.dump(cfg, f)


def engine_log_size():
    """Where the engine log ends now: engine_log(since) reads what a run adds after it."""
    return os.path.getsize(ENGINE_LOG) if os.path.exists(ENGINE_LOG) else 0


def engine_log(since=0):
    """The engine log's text from byte offset since on ("" while there is no log)."""
    try:
        with open(ENGINE_LOG, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def engine_pids():
    """Engines (`nst_engine serve`) and relays to a warm one (`nst_engine attach`) alive now."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if b"nst_engine" in cmd and (b"serve" in cmd or b"attach" in cmd):
                out.append(int(pid))
    return out
