# Runs inside GIMP (gimp-console ... --batch-interpreter python-fu-eval -b - < this file).
# Every check records facts into one JSON file (NST_E2E_OUT); the pytest side asserts on them,
# so one GIMP start (and few engine starts) covers many tests.
import contextlib
import os
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import (CONFIG, ENGINE_LOG, FAST, PROC, add_layer, engine_log_size,  # noqa: E402
                     engine_pids, fill, pixels, run_plugin, save, set_config, stripes)

from gi.repository import Gegl, Gimp  # noqa: E402

OUT = os.environ["NST_E2E_OUT"]
ONLY = set(filter(None, os.environ.get("NST_E2E_CHECKS", "").split(",")))
results = {}


def check(fn):
    name = fn.__name__
    if ONLY and name not in ONLY:
        return fn
    t0 = time.monotonic()
    try:
        results[name] = fn()
    except Exception:
        results[name] = {"exception": traceback.format_exc()}
    results[name + ".seconds"] = round(time.monotonic() - t0, 2)
    save(results, OUT)
    return fn


def photo(x, y):  # smooth content with an alpha hole in one corner
    a = 0 if (x < 6 and y < 6) else 255
    return ((x * 3) % 256, (y * 4) % 256, (x * y) % 256, a)


def painting(x, y):  # stripes; its left columns fully transparent
    return (*stripes(x, y)[:3], 0 if x < 4 else 255)


@contextlib.contextmanager
def two_layer_image(base=Gimp.ImageBaseType.RGB, in_group=True):
    """photo (80x64, offsets 5,7, inside a group when in_group) and painting (40x36, offsets
    30,20) on a 96x80 image: (image, photo, painting), the image deleted at the end."""
    image = Gimp.Image.new(96, 80, base)
    kind = (Gimp.ImageType.GRAYA_IMAGE if base == Gimp.ImageBaseType.GRAY
            else Gimp.ImageType.RGBA_IMAGE)
    parent = None
    if in_group:
        parent = Gimp.GroupLayer.new(image, "group")
        image.insert_layer(parent, None, 0)
    src = add_layer(image, "photo", 80, 64, photo, offsets=(5, 7), parent=parent, kind=kind)
    style = add_layer(image, "painting", 40, 36, painting, offsets=(30, 20), kind=kind)
    try:
        yield image, src, style
    finally:
        image.delete()


def stack(image):
    """The layer tree as nested [name, offsets, size, children] lists."""
    def item(layer):
        _, x, y = layer.get_offsets()
        children = [item(c) for c in layer.get_children()] if layer.is_group() else None
        return [layer.get_name(), [x, y], [layer.get_width(), layer.get_height()], children]
    return [item(layer) for layer in image.get_layers()]


def added_layer(image, src):
    """The layer directly above src in src's parent, described."""
    parent = src.get_parent()
    siblings = parent.get_children() if parent is not None else image.get_layers()
    pos = image.get_item_position(src)
    if pos == 0:
        return None
    layer = siblings[pos - 1]
    _, x, y = layer.get_offsets()
    mask = layer.get_mask()
    return {"layer": layer, "name": layer.get_name(), "offsets": [x, y],
            "size": [layer.get_width(), layer.get_height()],
            "parent": parent.get_name() if parent is not None else None,
            "same_parent": (layer.get_parent().get_id() if layer.get_parent() else None)
            == (parent.get_id() if parent else None),
            "gray": layer.is_gray(), "has_alpha": layer.has_alpha(),
            "mask": mask is not None}


def describe_result(image, src, style, before_src, before_style, before_stack):
    info = added_layer(image, src)
    out = {"stack_before": before_stack, "stack_after": stack(image),
           "source_unchanged": pixels(src) == before_src,
           "style_unchanged": pixels(style) == before_style}
    if info is None:
        return out
    layer = info.pop("layer")
    out.update(info)
    _, sx, sy = src.get_offsets()
    lx, ly = info["offsets"]
    # Compare the result with the source over the same image area.
    rect = (lx - sx, ly - sy, *info["size"])
    new, old = pixels(layer), pixels(src, rect=rect)
    out["differs_rgb"] = sum(1 for i in range(0, len(new), 4) if new[i:i + 3] != old[i:i + 3]
                             and old[i + 3] > 0) / max(1, len(new) // 4)
    out["alpha_kept"] = new[3::4] == old[3::4]
    if info["mask"]:
        mask = pixels(layer.get_mask(), "Y u8")
        sel = pixels(image.get_selection(), "Y u8", (lx, ly, *info["size"]))
        out["mask_equals_selection"] = mask == sel
        out["mask_levels"] = len(set(mask))
        out["mask_partial"] = sum(1 for v in mask if 0 < v < 255)
    return out


def stylize_check(image, src, style, drawables=None, **args):
    before = (pixels(src), pixels(style), stack(image))
    r = run_plugin(image, drawables or [src], style, **{**FAST, **args})
    r.update(describe_result(image, src, style, *before))
    return r


# ------------------------------------------------------------------------------ the checks

@check
def registration():
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        return {"registered": False}
    args = proc.get_arguments()
    presets = []
    spec = next((a for a in args if a.name == "preset"), None)
    try:
        presets = [c for c in spec.get_choice().list_nicks()]  # Gimp.ParamSpecChoice
    except Exception:
        try:
            presets = list(Gimp.param_spec_choice_get_choice(spec).list_nicks())
        except Exception as e:
            presets = [f"unreadable: {e}"]
    return {"registered": True,
            "arguments": [a.name for a in args],
            "types": {a.name: a.value_type.name for a in args},
            "menu_label": proc.get_menu_label(),
            "menu_paths": list(proc.get_menu_paths()),
            "image_types": proc.get_image_types(),
            "sensitivity": int(proc.get_sensitivity_mask()),
            "sensitivity_drawables": int(Gimp.ProcedureSensitivityMask.DRAWABLES),
            "presets": presets,
            "gimp_version": Gimp.version()}


@check
def whole_layer():
    with two_layer_image() as (image, src, style):
        return stylize_check(image, src, style)


@check
def full_size():
    """max-size -1: the region's own size on any device (the contract's int, below 0)."""
    with two_layer_image() as (image, src, style):
        return stylize_check(image, src, style, **{"max-size": -1})


@check
def rect_selection():
    with two_layer_image() as (image, src, style):
        # Image coordinates; part of it lies outside the photo layer (which starts at 5,7).
        image.select_rectangle(Gimp.ChannelOps.REPLACE, 0, 20, 40, 30)
        return stylize_check(image, src, style)


@check
def feathered_ellipse():
    with two_layer_image() as (image, src, style):
        Gimp.context_push()
        Gimp.context_set_feather(True)
        Gimp.context_set_feather_radius(8.0, 8.0)
        image.select_ellipse(Gimp.ChannelOps.REPLACE, 30, 25, 44, 32)
        Gimp.context_pop()
        return stylize_check(image, src, style)


@check
def tiny_selection():
    with two_layer_image(in_group=False) as (image, src, style):
        image.select_rectangle(Gimp.ChannelOps.REPLACE, 40, 40, 3, 2)
        return stylize_check(image, src, style)


@check
def grayscale():
    with two_layer_image(base=Gimp.ImageBaseType.GRAY) as (image, src, style):
        return stylize_check(image, src, style)


@check
def two_layers_two_styles():
    with two_layer_image(in_group=False) as (image, src, style):
        other = add_layer(image, "photo 2", 50, 40,
                          lambda x, y: (x * 5 % 256, 90, y * 6 % 256, 255), position=2)  # bottom
        style2 = add_layer(image, "painting 2", 30, 30,
                           lambda x, y: (200, (x * y) % 256, 30, 255))
        before = stack(image)
        r = run_plugin(image, [src, other], style, **FAST,
                       **{"style-layer-2": style2, "style-mix": 0.4})
        a, b = added_layer(image, src), added_layer(image, other)
        for info in (a, b):
            if info:
                info.pop("layer")
        r.update({"stack_before": before, "stack_after": stack(image), "first": a, "second": b})
        return r


@check
def style_from_another_image():
    with two_layer_image(in_group=False) as (image, src, _):
        other = Gimp.Image.new(50, 40, Gimp.ImageBaseType.RGB)
        style = add_layer(other, "other painting", 50, 40,
                          lambda x, y: (250 if (x // 4) % 2 else 10, (y * 9) % 256, 90, 255))
        r = stylize_check(image, src, style)
        other.delete()
        return r


@check
def high_bit_depth():
    with two_layer_image(in_group=False) as (image, src, style):
        image.convert_precision(Gimp.Precision.U16_LINEAR)
        r = stylize_check(image, src, style)
        r["precision_after"] = image.get_precision().value_nick
        return r


@check
def partly_off_canvas():
    # A layer hanging over the top-left corner: the whole layer is stylised, offsets kept.
    with two_layer_image(in_group=False) as (image, src, style):
        src.set_offsets(-20, -10)
        return stylize_check(image, src, style)


@check
def group_layers():
    # A layer group as the source (its composite is repainted, the result lands above the
    # group) and as the style (its composite is the style).
    with two_layer_image(in_group=True) as (image, src, style):
        group = src.get_parent()
        before = stack(image)
        r = {"as_source": run_plugin(image, [group], style, **FAST)}
        r["after_source"] = stack(image)
        r["as_style"] = run_plugin(image, [style], group, **FAST)
        r.update({"stack_before": before, "stack_after": stack(image)})
        return r


@check
def transparent_style():
    with two_layer_image(in_group=False) as (image, src, style):
        fill(style, lambda x, y: (255, 0, 0, 0))
        return stylize_check(image, src, style)


@check
def absent_device():
    # The trees have no GPU: asking for CUDA must be a readable refusal, not a traceback.
    with two_layer_image(in_group=False) as (image, src, style):
        return stylize_check(image, src, style, device="cuda")


@check
def channel_as_drawable():
    with two_layer_image(in_group=False) as (image, src, style):
        channel = Gimp.Channel.new(image, "a channel", 96, 80, 50.0, Gegl.Color.new("black"))
        image.insert_channel(channel, None, 0)
        return stylize_check(image, src, style, drawables=[channel])


def with_engine_command(argv, fn):
    """Run fn() with config.json's engine_command replaced by argv, then restore the file."""
    with open(CONFIG, encoding="utf-8") as f:
        original = f.read()
    try:
        set_config(engine_command=argv)
        return fn()
    finally:
        with open(CONFIG, "w", encoding="utf-8") as f:
            f.write(original)


def failing_run():
    with two_layer_image() as (image, src, style):
        return stylize_check(image, src, style)


@check
def engine_missing():
    return with_engine_command(["/nonexistent/python3", "-m", "nst_engine", "serve"],
                               failing_run)


@check
def engine_crashes():
    return with_engine_command(["/usr/bin/python3", "-c",
                                "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
                               failing_run)


@check
def last_values_mode():
    # GIMP keeps last values only from interactive runs, so in batch this mode runs the
    # defaults (minutes on a CPU): with the engine made unstartable it still shows that the
    # mode goes through argument handling and pixel reading to the engine, cleanly.
    def go():
        with two_layer_image() as (image, src, style):
            before = (pixels(src), pixels(style), stack(image))
            r = run_plugin(image, [src], style, run_mode=Gimp.RunMode.WITH_LAST_VALS)
            r.update(describe_result(image, src, style, *before))
            return r
    return with_engine_command(["/nonexistent/python3", "-m", "nst_engine", "serve"], go)


@check
def config_missing():
    os.replace(CONFIG, CONFIG + ".away")
    try:
        return failing_run()
    finally:
        os.replace(CONFIG + ".away", CONFIG)


KILLER = r"""
import os, signal, sys, time
def find(pred):
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
            except OSError:
                continue
            if pred(cmd):
                return int(pid)
log, start = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 120
while time.time() < deadline:  # until the engine has said hello: its job is then running
    engine = find(lambda c: b'nst_engine' in c and b'serve' in c)
    with open(log, 'rb') as f:
        f.seek(start)
        if engine and b'weights' in f.read():
            break
    time.sleep(0.1)
else:
    print('no engine at work'); sys.exit(1)
time.sleep(1.0)
plugin = find(lambda c: any(a.endswith(b'nst-style-transfer.py') for a in c))
print('engine', engine, 'plugin', plugin, flush=True)
os.kill(plugin, signal.SIGKILL)
"""


@check
def killed_mid_run():
    with two_layer_image() as (image, src, style):
        before = stack(image)
        killer = subprocess.Popen(["/usr/bin/python3", "-c", KILLER, ENGINE_LOG,
                                   str(engine_log_size())],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        r = run_plugin(image, [src], style, **{**FAST, "iterations": 5000, "max-size": 96})
        killer_out = killer.communicate(timeout=60)[0].decode()
        t0 = time.monotonic()
        left = engine_pids()
        while left and time.monotonic() < t0 + 15:
            time.sleep(0.2)
            left = engine_pids()
        r["engine_gone_after"] = round(time.monotonic() - t0, 2)
        r.update({"killer": killer_out, "killer_rc": killer.returncode, "engines_left": left,
                  "stack_before": before, "stack_after": stack(image)})
        return r


save(results, OUT)
