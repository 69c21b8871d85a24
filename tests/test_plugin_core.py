"""The plug-in's GIMP-free core (gimp_plugin/nst-style-transfer/nst_core.py) without GIMP: the
region and its context margin, the animation's canvas region, cropping back, the selection's
coverage blend, the preview's geometry, the overrides from the dialog's values, the progress
bar's wording and pace, running work on the engine with the bridge's fresh-engine retry (fake
clients, the real FreshRetry and EngineFailed), and the translations hook. What reads and
writes GIMP's pixels is covered by tests/gimp/."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nst_engine.bridge.client import EngineFailed
from nst_engine.bridge.retry import FreshRetry
from nst_engine.bridge.wire import Code

PLUGIN = Path(__file__).resolve().parents[1] / "gimp_plugin" / "nst-style-transfer"
sys.path.insert(0, str(PLUGIN))
import nst_core  # noqa: E402
from nst_core import MARGIN_MAX, MARGIN_MIN, UserError  # noqa: E402


# ---------------------------------------------------------------------------- regions

def test_the_margin_is_a_tenth_of_the_longest_side_within_its_bounds():
    # Middle of a large layer: nothing clipped, so the crop shows the margin itself.
    def margin(w, h):
        x, y, cw, ch = nst_core.widen((5000, 5000, w, h), 20000, 20000)
        assert (cw - w, ch - h) == (2 * (5000 - x), 2 * (5000 - y))
        assert 5000 - x == 5000 - y
        return 5000 - x

    assert margin(50, 20) == MARGIN_MIN == 16          # 5 px: raised to the minimum
    assert margin(159, 10) == MARGIN_MIN               # 15.9 px
    assert margin(170, 10) == 17                        # a tenth of the longest side
    assert margin(10, 1000) == 100                      # height is the longest side
    assert margin(2560, 100) == MARGIN_MAX == 256
    assert margin(3000, 3000) == MARGIN_MAX            # 300 px: capped


def test_the_margin_is_clipped_at_every_edge_and_corner_of_the_layer():
    w, h = 300, 200
    # 100x100 region: margin 16.
    assert nst_core.widen((0, 0, 100, 100), w, h) == (0, 0, 116, 116)          # top-left
    assert nst_core.widen((200, 0, 100, 100), w, h) == (184, 0, 116, 116)      # top-right
    assert nst_core.widen((0, 100, 100, 100), w, h) == (0, 84, 116, 116)       # bottom-left
    assert nst_core.widen((200, 100, 100, 100), w, h) == (184, 84, 116, 116)   # bottom-right
    assert nst_core.widen((5, 100, 100, 100), w, h) == (0, 84, 121, 116)       # 5 px from left
    assert nst_core.widen((100, 50, 100, 100), w, h) == (84, 34, 132, 132)     # inside
    assert nst_core.widen((0, 0, w, h), w, h) == (0, 0, w, h)                  # the whole layer


def test_a_layer_region_is_the_selections_box_plus_margin_or_the_tile_when_seamless():
    box = (True, 40, 30, 100, 60)
    region, crop = nst_core.layer_region(box, (400, 300), "photo")
    assert region == (40, 30, 100, 60) and crop == (24, 14, 132, 92)
    region, crop = nst_core.layer_region(box, (400, 300), "photo", seamless=True)
    assert region == crop == (40, 30, 100, 60)
    # Nothing selected: GIMP gives the whole layer, and the margin has nowhere to go.
    assert nst_core.layer_region((True, 0, 0, 400, 300), (400, 300), "photo") == \
        ((0, 0, 400, 300), (0, 0, 400, 300))
    # A 3x2 px selection keeps its size; the engine scales it up by itself.
    assert nst_core.layer_region((True, 399, 298, 1, 2), (400, 300), "x")[1] == \
        (383, 282, 17, 18)


@pytest.mark.parametrize("box", [(False, 0, 0, 0, 0), (True, 10, 10, 0, 5), (True, 3, 3, 4, 0)])
def test_a_selection_that_misses_the_layer_is_a_message_naming_the_layer(box):
    with pytest.raises(UserError) as e:
        nst_core.layer_region(box, (400, 300), "photo")
    assert "“photo”" in str(e.value) and "Select > None" in str(e.value)


def test_an_animations_region_is_the_canvas_or_the_selection_on_it_plus_margin():
    canvas = (320, 240)
    assert nst_core.canvas_region(None, canvas) == ((0, 0, 320, 240), (0, 0, 320, 240))
    region, crop = nst_core.canvas_region((100, 80, 200, 180), canvas)
    assert region == (100, 80, 100, 100) and crop == (84, 64, 132, 132)
    # Reaching past the canvas (a selection may): clipped first, then widened and clipped.
    region, crop = nst_core.canvas_region((-30, -10, 50, 40), canvas)
    assert region == (0, 0, 50, 40) and crop == (0, 0, 66, 56)
    region, crop = nst_core.canvas_region((300, 200, 400, 300), canvas)
    assert region == (300, 200, 20, 40) and crop == (284, 184, 36, 56)


@pytest.mark.parametrize("bounds", [(320, 0, 400, 50), (-50, -50, 0, 10), (10, 240, 20, 300)])
def test_a_selection_off_the_canvas_is_a_message(bounds):
    with pytest.raises(UserError, match="outside the canvas"):
        nst_core.canvas_region(bounds, (320, 240))


def test_image_rectangles_move_into_a_layers_coordinates_by_its_offsets():
    assert nst_core.in_layer((50, 40, 10, 20), (37, 23)) == (13, 17, 10, 20)
    assert nst_core.in_layer((0, 0, 10, 20), (-5, 8)) == (5, -8, 10, 20)


# ---------------------------------------------------------------------------- pixels

def rgba(w, h, seed=0):
    """A w x h RGBA buffer whose every byte says where it is (row, column, channel)."""
    return bytes((seed + 7 * y + 3 * x + 50 * c) % 256 for y in range(h) for x in range(w)
                 for c in range(4))


def px(data, width, x, y):
    return data[(y * width + x) * 4:(y * width + x + 1) * 4]


def test_crop_rgba_takes_the_rectangle():
    data = bytes(range(4 * 3 * 4))  # 4x3
    assert nst_core.crop_rgba(data, 4, (1, 1, 2, 2)) == bytes(range(20, 28)) + bytes(range(36, 44))
    assert nst_core.crop_rgba(data, 4, (0, 0, 4, 3)) == data


def test_crop_back_takes_the_region_out_of_the_result_with_the_sources_alpha():
    crop, region = (24, 14, 9, 7), (27, 16, 4, 3)   # region 3 px in, 2 down
    result, source = rgba(9, 7, seed=1), rgba(9, 7, seed=100)
    out = nst_core.crop_back(result, crop, region, alpha_from=source)
    assert len(out) == 4 * 3 * 4
    for y in range(3):
        for x in range(4):
            got, styled, src = px(out, 4, x, y), px(result, 9, x + 3, y + 2), \
                px(source, 9, x + 3, y + 2)
            assert got[:3] == styled[:3] and got[3] == src[3]
    # Without a source: the engine's alpha (the animation's frames).
    out = nst_core.crop_back(result, crop, region)
    assert out == nst_core.crop_rgba(result, 9, (3, 2, 4, 3))
    # Seamless: region == crop, only the alpha is replaced.
    out = nst_core.crop_back(result, crop, crop, alpha_from=source)
    assert out[0::4] == result[0::4] and out[3::4] == source[3::4]


def test_blend_by_coverage_is_the_source_outside_the_selection_and_styled_inside():
    # Four pixels, coverage 0 / 255 / 128 / 1: outside, inside, feathered edge, a faint edge.
    source = bytes([10, 200, 30, 255] * 4)
    styled = bytes([250, 0, 130, 255] * 4)
    out = nst_core.blend_by_coverage(source, styled, bytes([0, 255, 128, 1]))
    pixels = [out[i:i + 4] for i in range(0, 16, 4)]
    assert pixels[0] == source[:4] and pixels[1] == styled[:4]  # exactly: what the mask gives
    # Half selected: half way between (to within one level), opaque stays opaque.
    exact = [(s * 128 + x * 127) / 255 for s, x in zip(styled[:4], source[:4])]
    assert all(abs(a - b) <= 1 for a, b in zip(pixels[2], exact)), (list(pixels[2]), exact)
    assert 10 < pixels[2][0] < 250 and 0 < pixels[2][1] < 200 and pixels[2][3] == 255
    assert all(abs(a - b) <= 1 for a, b in zip(pixels[3], source[:4]))


def test_blend_by_coverage_follows_runs_across_rows_and_every_channel():
    # Every byte value against every coverage value, in runs of each kind (0, 255, partial)
    # of every length: the same as the formula byte by byte, alpha included.
    w = 256
    source = bytes((7 * i) % 256 for i in range(4 * w))
    styled = bytes(range(256)) * 4
    coverage = bytes([0] * 3 + [255] * 5 + list(range(1, 255, 7)) + [255] + [0] * 2
                     + list(range(254, 0, -1)))[:w]
    coverage += bytes(w - len(coverage))
    out = nst_core.blend_by_coverage(source, styled, coverage)
    want = [(styled[i] * coverage[i // 4] + source[i] * (255 - coverage[i // 4])) / 255
            for i in range(4 * w)]
    assert all(abs(w_ - o) <= 1 for o, w_ in zip(out, want)), out
    assert all(out[i] == (styled if coverage[i // 4] == 255 else source)[i]
               for i in range(4 * w) if coverage[i // 4] in (0, 255))


def test_every_feathered_coverage_lies_between_and_moves_towards_the_styled_pixel():
    # Coverage 1..254 (every feathered level) on one pixel each: strictly between for a big
    # difference, and never further from the styled value as the coverage grows.
    levels = bytes(range(1, 255))
    source, styled = bytes([0, 255, 40, 255]) * 254, bytes([255, 0, 40, 0]) * 254
    out = nst_core.blend_by_coverage(source, styled, levels)
    red = list(out[0::4])
    assert red == sorted(red) and all(0 <= r <= 255 for r in red)
    assert all(abs(r - c) <= 1 for r, c in zip(red, levels))          # 255 * c / 255
    assert all(abs(g - (255 - c)) <= 1 for g, c in zip(out[1::4], levels))
    assert set(out[2::4]) == {40}                                      # equal stays equal


# ---------------------------------------------------------------------------- the preview

def test_a_small_crop_is_read_as_it_is():
    scale, read, show, selected = nst_core.preview_geometry((24, 14, 132, 92),
                                                            (40, 30, 100, 60), 256, (5, 7))
    assert scale == 1.0 and read == (24, 14, 132, 92)
    assert show == (16, 16, 100, 60)                # the region in the content's pixels
    assert selected == (45, 37, 100, 60)            # the region in the image (offsets added)


def test_a_large_crop_is_read_scaled_and_the_region_and_selection_follow():
    # A 590x400 crop from layer x 5, read at 256 px; the layer at (37, 23) in the image.
    crop, region = (5, 0, 590, 400), (21, 16, 558, 368)
    scale, read, show, selected = nst_core.preview_geometry(crop, region, 256, (37, 23))
    assert scale == pytest.approx(256 / 590)
    assert read == (2, 0, 256, 174)                 # the content: 256 x 174
    assert show == (7, 7, 242, 160)
    assert selected == (round(42 * scale) + 7, round(23 * scale) + 7, 242, 160)
    sx, sy, sw, sh = show
    assert sx + sw <= read[2] and sy + sh <= read[3]


def test_the_shown_region_never_leaves_the_content():
    # A region at the crop's far corner, rounding up: clipped to the content, never empty.
    for crop, region in [((0, 0, 1000, 10), (999, 9, 1, 1)), ((0, 0, 777, 333), (700, 300, 77, 33)),
                         ((3, 3, 3, 3), (3, 3, 3, 3))]:
        _scale, read, (sx, sy, sw, sh), _sel = nst_core.preview_geometry(crop, region, 256)
        assert 0 <= sx < read[2] and 0 <= sy < read[3]
        assert sw >= 1 and sh >= 1 and sx + sw <= read[2] and sy + sh <= read[3]


def test_fit_scale_and_scaled():
    assert nst_core.fit_scale(100, 50, 256) == 1.0
    assert nst_core.fit_scale(1024, 50, 256) == 0.25
    assert nst_core.fit_scale(1024, 50, 0) == 1.0
    assert nst_core.scaled((10, 20, 30, 40), 1.0) == (10, 20, 30, 40)
    assert nst_core.scaled((10, 20, 30, 1), 0.1) == (1, 2, 3, 1)   # never 0 px


# ---------------------------------------------------------------------------- overrides

STILL_DEFAULTS = {"strength": 1.0, "max-size": 0, "iterations": 0, "preserve-colors": False,
                  "seed": -1, "seamless": False}


def test_the_dialogs_defaults_keep_every_preset_value_but_strength():
    assert nst_core.overrides(STILL_DEFAULTS) == {"strength": 1.0}
    anim = {**STILL_DEFAULTS, "temporal-weight": -1.0}
    del anim["seamless"]
    assert nst_core.overrides(anim) == {"strength": 1.0}
    # The registered defaults are the ones that keep the preset's values.
    for name in ("max-size", "iterations", "seed", "temporal-weight"):
        assert nst_core.overrides({"strength": 1, name: nst_core.ARGUMENT_RANGES[name][2]}) \
            == {"strength": 1.0}, name


@pytest.mark.parametrize("name, value, expected", [
    ("strength", 0, {"strength": 0.0}),
    ("strength", 2.5, {"strength": 2.5}),
    ("max-size", 384, {"max_size": 384}),
    ("max-size", -1, {"full_resolution": "always"}),    # the region's own size, any device
    ("iterations", 1, {"iterations": 1}),
    ("iterations", 20000, {"iterations": 20000}),
    ("preserve-colors", True, {"preserve_colors": True}),
    ("seamless", True, {"seamless": True}),
    ("seed", 0, {"seed": 0}),                           # 0 is a seed, not "the preset's"
    ("seed", 2 ** 31 - 1, {"seed": 2 ** 31 - 1}),
    ("temporal-weight", 0.0, {"temporal_weight": 0.0}),  # 0 = off, not "the preset's"
    ("temporal-weight", 250.0, {"temporal_weight": 250.0}),
])
def test_each_setting_becomes_its_override(name, value, expected):
    out = nst_core.overrides({**STILL_DEFAULTS, name: value})
    assert out == {"strength": 1.0, **expected}


def test_every_override_is_a_valid_engine_setting():
    from nst_engine.params import PARAM_FIELDS, check_value

    values = {"strength": 10.0, "max-size": 8192, "iterations": 20000, "preserve-colors": True,
              "seed": 2 ** 31 - 1, "seamless": True, "temporal-weight": 1e9}
    for vals in (values, {**values, "max-size": -1}):
        for key, value in nst_core.overrides(vals).items():
            problem, _ = check_value(PARAM_FIELDS[key].metadata, value)
            assert problem is None, (key, value, problem)
    assert set(nst_core.VALUE_ARGUMENTS) >= set(values)


def test_the_argument_ranges_are_the_engines_with_the_plugins_values_below():
    from nst_engine.params import PARAM_FIELDS

    def engine(name):
        meta = PARAM_FIELDS[name].metadata
        return meta["min"], meta["max"], PARAM_FIELDS[name].default

    r = nst_core.ARGUMENT_RANGES
    assert r["strength"] == engine("strength") == (0.0, 10.0, 1.0)
    assert r["max-size"] == (-1, engine("max_size")[1], 0)
    assert r["iterations"] == (0, engine("iterations")[1], 0)
    assert r["seed"] == (-1, nst_core.GINT_MAX, -1)      # a GIMP int is a gint
    assert r["temporal-weight"] == (-1.0, engine("temporal_weight")[1], -1.0)
    assert r["style-mix"] == (0.0, 1.0, 0.5)
    for name, (low, high, default) in r.items():
        assert low <= default <= high and type(low) is type(high) is type(default), name


def test_the_device_choice_is_the_engines_list_each_with_a_label(monkeypatch):
    from nst_engine.cli import DEVICES

    choices = nst_core.device_choices()
    assert [name for name, _ in choices] == list(DEVICES)
    assert all(label != name for name, label in choices), choices
    monkeypatch.setattr(nst_core, "DEVICES", (*DEVICES, "xpu"))
    assert nst_core.device_choices()[-1] == ("xpu", "xpu")   # a new device shows its name


# ---------------------------------------------------------------------------- progress

class Recorder:
    """GIMP's progress functions, recorded; a clock the test moves."""

    def __init__(self):
        self.texts, self.fractions, self.now = [], [], 100.0

    def bar(self, count, unit):
        return nst_core.ProgressBar(count, unit, self.texts.append, self.fractions.append,
                                    clock=lambda: self.now)


def step(it, total=10, **more):
    return {"stage": "optimizing", "iteration": it, "total": total, **more}


def test_one_layer_says_stage_size_step_and_time_left():
    r = Recorder()
    bar = r.bar(1, "layer")
    bar.start(1)
    assert (r.texts[-1], r.fractions[-1]) == ("Sending the image", 0.0)
    bar({"stage": "loading"})
    assert r.texts[-1] == "Loading the model" and r.fractions[-1] == 0.0
    r.now += 1
    bar(step(5, width=64, height=48, eta=65))
    assert r.texts[-1] == "Stylizing at 64×48 px 5/10, 1 min 05 s left"
    assert r.fractions[-1] == 0.5
    r.now += 1
    bar(step(6, width=512, height=384, tiles=4, eta=3, note="Out of memory: in tiles."))
    assert r.texts[-1] == ("Out of memory: in tiles. Stylizing at 512×384 px in 4 tiles 6/10, "
                           "3 s left")
    r.now += 1
    bar({"stage": "done", "iteration": 10, "total": 10})
    assert r.texts[-1] == "Finishing 10/10" and r.fractions[-1] == 1.0
    bar({"stage": "something new"})     # unknown stages are shown as the engine names them
    r.now += 1
    bar({"stage": "something new"})
    assert r.texts[-1] == "something new"


def test_updates_are_throttled_but_the_last_step_always_shows():
    r = Recorder()
    bar = r.bar(1, "layer")
    bar.start(1)
    bar(step(1))
    r.now += 0.5 / nst_core.PROGRESS_RATE
    bar(step(2))
    assert len(r.texts) == 2                         # too soon
    bar(step(10))
    assert len(r.texts) == 3 and r.fractions[-1] == 1.0
    r.now += 1.0 / nst_core.PROGRESS_RATE
    bar(step(3, total=20))
    assert len(r.texts) == 4 and r.fractions[-1] == 0.15


def test_several_layers_are_counted_and_share_the_bar():
    r = Recorder()
    bar = r.bar(2, "layer")
    bar.start(1)
    assert r.texts[-1] == "Layer 1 of 2: Sending the image"
    bar(step(5, eta=30))
    assert r.texts[-1] == "Layer 1 of 2: Stylizing 5/10, 30 s left for this layer"
    assert r.fractions[-1] == 0.25
    r.now += 20
    bar.start(2)
    assert r.fractions[-1] == 0.5
    r.now += 1
    bar(step(5, eta=4))
    assert r.texts[-1] == "Layer 2 of 2: Stylizing 5/10, 4 s left"   # the last one: all left
    assert r.fractions[-1] == 0.75


def test_frames_add_the_mean_time_of_the_frames_after_the_first_to_the_time_left():
    r = Recorder()
    bar = r.bar(4, "frame")
    bar.start(1)
    assert r.texts[-1] == "Frame 1 of 4: Sending the image"
    r.now += 30                                      # the first frame loads the model
    bar.start(2)
    bar(step(5, eta=5))
    assert r.texts[-1] == "Frame 2 of 4: Stylizing 5/10, 5 s left for this frame"
    r.now += 10
    bar.start(3)                                     # frame 2 took 10 s
    r.now += 1
    bar(step(5, eta=5))
    assert r.texts[-1] == "Frame 3 of 4: Stylizing 5/10, 15 s left"   # 5 + 10 x 1
    assert r.fractions[-1] == pytest.approx(2.5 / 4)
    r.now += 19
    bar.start(3)                 # again on a fresh engine: not a frame's time
    bar.start(4)                 # frame 3 took 20 s in all
    r.now += 1
    bar(step(1, eta=100))
    assert r.texts[-1] == "Frame 4 of 4: Stylizing 1/10, 1 min 40 s left"
    assert bar.later == [10.0, 20.0]


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (-3, "0 s"), (59.4, "59 s"),
                                           (59.6, "1 min 00 s"), (60, "1 min 00 s"),
                                           (3725, "62 min 05 s")])
def test_durations(seconds, text):
    assert nst_core.duration(seconds) == text


# ---------------------------------------------------------------------------- the engine

class Client:
    """An engine client: ``dies`` (a dead engine on the n-th job), ``fails`` (the job's own
    error), ``warm`` (shared, so a fresh one may replace it)."""

    def __init__(self, log, name, *, warm=False, dies=None, fails=None, notices=()):
        self.log, self.name, self.warm, self.dies, self.fails = log, name, warm, dies, fails
        self.jobs, self.closed, self.last_notices = 0, False, list(notices)

    def start(self):
        self.log.append(f"start {self.name}")

    def stylize(self, item):
        self.jobs += 1
        if self.dies == self.jobs:
            raise EngineFailed(Code.ENGINE_CRASHED, "The engine stopped.", "", "/log/engine.log")
        if self.fails:
            raise self.fails
        self.log.append(f"{self.name}: {item}")
        return item.upper()

    def close(self):
        self.log.append(f"close {self.name}")
        self.closed = True


def clients(log, *specs):
    """FreshRetry's ``make_client``: the next spec each time (name, kwargs)."""
    made, todo = [], list(specs)

    def make(fresh):
        name, kwargs = todo.pop(0)
        made.append(Client(log, name + (" (fresh)" if fresh else ""), **kwargs))
        return made[-1]
    return make, made


def items_work(items, done):
    """Work that goes on where it stopped: each item once, across engines."""
    def work(client):
        for item in items[len(done):]:
            done.append(client.stylize(item))
        return len(done)
    return work


def test_work_runs_on_one_started_client_which_is_closed_after():
    log, done = [], []
    make, made = clients(log, ("a", {"notices": ["unknown checksum", "unknown checksum",
                                                 "tiles"]}))
    result, notices = nst_core.run_on_engine(FreshRetry(make), items_work(["x", "y"], done))
    assert (result, done) == (2, ["X", "Y"])
    assert notices == ["unknown checksum", "tiles"]    # each once, in order
    assert log == ["start a", "a: x", "a: y", "close a"]


def test_a_dead_warm_engine_is_replaced_once_and_the_work_goes_on_where_it_stopped():
    log, done, fresh = [], [], []
    make, made = clients(log, ("warm", {"warm": True, "dies": 2}),
                         ("new", {"notices": ["from the fresh one"]}))
    result, notices = nst_core.run_on_engine(FreshRetry(make), items_work(["x", "y", "z"], done),
                                             on_fresh=lambda: fresh.append(len(done)))
    assert done == ["X", "Y", "Z"] and fresh == [1]
    assert log == ["start warm", "warm: x", "close warm", "start new (fresh)", "new (fresh): y",
                   "new (fresh): z", "close new (fresh)"]
    assert notices == ["from the fresh one"]


def test_a_dead_engine_of_this_run_only_is_not_retried_and_still_closed():
    log, fresh = [], []
    make, made = clients(log, ("own", {"dies": 1}))
    with pytest.raises(EngineFailed) as e:
        nst_core.run_on_engine(FreshRetry(make), items_work(["x"], []),
                               on_fresh=lambda: fresh.append(1))
    assert e.value.code == Code.ENGINE_CRASHED and fresh == []
    assert made[0].closed and log == ["start own", "close own"]


def test_a_fresh_engine_that_dies_too_reaches_the_caller():
    log = []
    make, made = clients(log, ("warm", {"warm": True, "dies": 1}), ("new", {"dies": 1}))
    with pytest.raises(EngineFailed):
        nst_core.run_on_engine(FreshRetry(make), items_work(["x"], []))
    assert [c.closed for c in made] == [True, True] and len(made) == 2


def test_the_jobs_own_failure_is_not_retried_and_the_client_is_closed():
    log = []
    oom = EngineFailed("out_of_memory", "Out of memory.", "Lower Max size.", None)
    make, made = clients(log, ("warm", {"warm": True, "fails": oom}))
    with pytest.raises(EngineFailed) as e:
        nst_core.run_on_engine(FreshRetry(make), items_work(["x"], []))
    assert e.value is oom and len(made) == 1 and made[0].closed


def test_any_other_exception_in_the_work_closes_the_client_too():
    log = []
    make, made = clients(log, ("a", {}))

    def work(client):
        raise UserError("GIMP could not merge a styled frame")

    with pytest.raises(UserError):
        nst_core.run_on_engine(FreshRetry(make), work)
    assert made[0].closed


def test_the_previews_started_client_is_used_first_without_starting_another():
    log, done = [], []
    make, made = clients(log)                        # would fail: no client may be made
    preview = Client(log, "preview", notices=["n"])
    result, notices = nst_core.run_on_engine(FreshRetry(make, preview),
                                             items_work(["x"], done))
    assert done == ["X"] and notices == ["n"] and made == []
    assert log == ["preview: x", "close preview"]


# ---------------------------------------------------------------------------- translations

def write_mo(path: Path, catalogue: dict[str, str]) -> None:
    """A GNU gettext catalogue (.mo), as msgfmt writes it, for ``catalogue``."""
    keys = sorted(catalogue)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(catalogue[k].encode() + b"\0" for k in keys)
    start = 7 * 4 + 16 * len(keys)
    offsets, pos = [], 0
    for k in keys:
        offsets.append((len(k.encode()), start + pos))
        pos += len(k.encode()) + 1
    toffsets, pos = [], 0
    for k in keys:
        toffsets.append((len(catalogue[k].encode()), start + len(ids) + pos))
        pos += len(catalogue[k].encode()) + 1
    path.parent.mkdir(parents=True)
    path.write_bytes(struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4,
                                 7 * 4 + 8 * len(keys), 0, 0)
                     + b"".join(struct.pack("ii", *o) for o in offsets + toffsets)
                     + ids + strs)


def test_untranslated_text_is_the_message_itself():
    assert nst_core._("Preparing") == "Preparing"
    assert nst_core.N_("Preparing") == "Preparing"


def test_a_catalogue_in_the_locale_folder_beside_the_plugin_translates_its_text(tmp_path):
    # A copy of the core with a catalogue for a made-up language: the domain and the folder
    # are the ones do_set_i18n gives GIMP, and the catalogue changes what the user reads.
    for name in ("nst_core.py", "nst_settings.py"):
        (tmp_path / name).write_bytes((PLUGIN / name).read_bytes())
    assert (PLUGIN / "locale").is_dir()
    write_mo(tmp_path / "locale" / "xx" / "LC_MESSAGES" / f"{nst_core.DOMAIN}.mo",
             {"Stylizing": "Stilisieren", "{time} left": "noch {time}",
              "{s} s": "{s} Sek."})
    code = ("import nst_core; bar = nst_core.ProgressBar(1, 'layer', print, lambda f: None); "
            "bar.start(1); bar({'stage': 'optimizing', 'iteration': 1, 'total': 2, 'eta': 4})")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**env, "LANGUAGE": "xx"}, check=True).stdout
    assert out.splitlines() == ["Sending the image", "Stilisieren 1/2, noch 4 Sek."]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**env, "LANGUAGE": "en"}, check=True).stdout
    assert out.splitlines()[-1] == "Stylizing 1/2, 4 s left"


def test_translate_with_replaces_the_translation(monkeypatch):
    monkeypatch.setattr(nst_core, "_translate", nst_core._translate)   # restored afterwards
    texts = []
    nst_core.translate_with(str.upper)   # as nst_gimp does with GLib's dgettext
    assert nst_core._("Preparing") == "PREPARING"
    nst_core.ProgressBar(1, "layer", texts.append, lambda f: None)({"stage": "loading"})
    assert texts == ["LOADING THE MODEL"]
