"""The dialog's preview in GIMP's GUI (Xvfb), 3.0.4 and 3.2.6.

scripts/gui_preview.py opens the Style Transfer dialog interactively over a photo and a painting
layer; scripts/gui_preview_driver.py plays the user through X (xdotool). First dialog: it types a
lower Iterations (6: a short test; typed while the automatic preview is on its way, it also
cancels that one), waits for the preview, types strength 0, waits for the preview to be
redone, then presses Escape (Cancel). Second dialog: it types a tiny schedule, waits for a
preview and presses OK: the run must succeed on the preview's engine. The animation's dialog
(scripts/gui_animation_preview.py, the driver's "animation" mode): the same pane, previewing the
first frame over the selection's bounding box plus context margin (the bounding box shown, the
styled box blended over the frame by an ellipse's coverage, as the run's mask does); OK runs the
animation on the preview's engine. The still dialog over a feathered ellipse on a 600x400 layer
at offsets (37, 23) (scripts/gui_still_selection_preview.py, the driver's "selection" mode): one
2-step preview, read scaled down (256/590), then Cancel; the preview keeps the photo's bytes
where the selection's coverage is 0 and differs inside.

How the test sees the previews (decision): the plug-in's test hook NST_PREVIEW_DUMP_DIR makes the
dialog write every finished preview there as raw RGBA plus a JSON description (size and the
settings it was made with). A screenshot crop would depend on the theme, scaling and the
checkerboard; the dump is exactly the pixels the pane shows, and says which settings made it.
Random weights: this proves the plumbing and the behaviour, not the pictures' quality.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def gui(gimp):
    dump = f"{gimp.work}/previews"
    found = gimp.run_gui("gui_preview.py", "gui preview", timeout=1200,
                         NST_PREVIEW_MODE="test", NST_PREVIEW_DUMP_DIR=dump)
    found["dump"] = dump
    return found


@pytest.fixture(scope="module")
def preview(gui, gimp):
    """The first dialog: previews, a changed setting, Cancel."""
    found = gui["cancel"]
    found["before"] = gui["before"]
    found["pixels"] = [gimp.tree.host_path(f"{gui['dump']}/preview-{p['index']:03d}.rgba")
                       .read_bytes() for p in found["driver"].get("previews", [])]
    return found


def test_the_preview_is_the_region_with_the_dialogs_settings(preview):
    previews = preview["driver"]["previews"]
    assert previews, f"no preview was shown: {preview['driver']['log']}"
    first = previews[0]
    # The whole 640x400 photo (no selection), at the preview's size.
    assert (first["width"], first["height"]) == (256, 160)
    assert len(preview["pixels"][0]) == 256 * 160 * 4
    assert first["settings"]["preset"] == "balanced"
    assert first["settings"]["overrides"]["strength"] == 1.0
    # The preview's own schedule, under the Iterations typed into the dialog.
    assert first["settings"]["overrides"]["max_size"] == 256
    assert first["settings"]["overrides"]["iterations"] == 6, preview["driver"]["log"]


def test_changing_a_setting_redoes_the_preview(preview):
    previews = preview["driver"]["previews"]
    assert len(previews) >= 2, f"the preview was not redone: {preview['driver']['log']}"
    first, last = previews[0]["settings"], previews[-1]["settings"]
    assert last["overrides"]["strength"] == 0.0
    # Same seed (the dialog's), region and steps: only the strength differs, and the pixels do.
    # (Strength 0: no style at all. At 6 steps, 1 vs 8 changes few pixels: Adam normalises the
    # step size, and the content loss is still near zero. Same settings give the same bytes.)
    assert {**last["overrides"], "strength": 1.0} == first["overrides"]
    assert {**last, "overrides": None} == {**first, "overrides": None}
    first_px, last_px = preview["pixels"][0], preview["pixels"][-1]
    assert len(first_px) == len(last_px)
    changed = sum(a != b for a, b in zip(first_px, last_px)) / len(first_px)
    assert changed > 0.3, f"only {changed:.1%} of the preview's bytes changed"


def test_the_dialog_never_froze_while_previews_ran(preview):
    # The pane's test hook measures the longest time GTK's main loop went without running
    # while the dialog was up. A preview run on GTK's thread would stall it for the whole
    # preview; a ratio, not a time, so a slow or busy machine does not matter.
    previews = preview["driver"]["previews"]
    assert previews
    longest = max(p["seconds"] for p in previews)
    stall = max(p["longest_main_loop_stall_s"] for p in previews)
    assert stall < 0.5 * longest, f"main loop stalled {stall} s; previews took {longest} s"


def test_cancel_leaves_the_image_as_it_was(preview):
    assert preview["status"] == "cancel", preview.get("message")
    before, after = preview["before"], preview["after"]
    # No new layer, no pixel changed, and no undo step (the image was clean and still is).
    assert after["layers"] == before["layers"]
    assert not before["dirty"] and not after["dirty"]


def test_ok_runs_the_full_job_on_the_previews_engine(gui):
    ok = gui["ok"]
    assert ok["driver"].get("pressed_ok"), ok["driver"]["log"]
    assert ok["status"] == "success", ok.get("message")
    names = [lay["name"] for lay in ok["after"]["layers"]]
    assert names == ["Painting", "Style Transfer: balanced (Painting)", "Photo"], names
    # One engine start in this dialog's life: the preview's, handed to the run on OK. (The
    # suite's sessions use keep_warm 0, so every client starts its own engine and logs it.)
    assert ok["engine_log"].count("starting engine") == 1, ok["engine_log"]


def test_no_engine_or_gimp_process_is_left(gui):
    assert gui["procs"] == [], gui["procs"]
    assert gui["runner_rc"] == 0, "GIMP did not quit by itself"


# ---------------------------------------------------------------- the animation's dialog

@pytest.fixture(scope="module")
def anim_gui(gimp):
    """scripts/gui_animation_preview.py: the Style Transfer (Animation) dialog over a 3-frame
    animation (an ellipse selected, the painting in another image), worked by the driver:
    Iterations 2, a preview, strength 0, a preview, OK."""
    dump = f"{gimp.work}/animation-previews"
    found = gimp.run_gui("gui_animation_preview.py", "gui animation preview", timeout=900,
                         NST_PREVIEW_DUMP_DIR=dump)
    found["pixels"] = [gimp.tree.host_path(f"{dump}/preview-{p['index']:03d}.rgba")
                       .read_bytes() for p in found["driver"].get("previews", [])]
    return found


def _mean_difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of the RGB bytes of two same-size RGBA buffers."""
    assert len(a) == len(b)
    diffs = [abs(x - y) for i, (x, y) in enumerate(zip(a, b)) if i % 4 != 3]
    return sum(diffs) / len(diffs)


def test_the_animation_dialog_previews_its_first_frame(anim_gui):
    previews = anim_gui["driver"]["previews"]
    assert previews, f"no preview was shown: {anim_gui['driver']['log']}"
    x, y, w, h = anim_gui["selection"]
    # Shown: the selection's bounding box (small: at its own size). Read and sent: what the run
    # reads, the box plus the still's 16 px margin, clipped to the 96x64 canvas.
    assert all((p["width"], p["height"]) == (w, h) for p in previews), previews
    assert all(p["settings"]["crop"] == [max(0, x - 16), max(0, y - 16), 80, 64]
               for p in previews), previews
    # Strength 0 (no style): the picture is the first frame's region, not another frame's.
    last = previews[-1]
    assert last["settings"]["overrides"]["strength"] == 0.0, anim_gui["driver"]["log"]
    frames = [bytes.fromhex(f) for f in anim_gui["frames_in_region"]]
    distance = [_mean_difference(anim_gui["pixels"][-1], f) for f in frames]
    assert distance[0] < 12 and distance[0] < 0.3 * min(distance[1:]), distance


def test_the_animation_preview_keeps_the_source_outside_an_elliptical_selection(anim_gui):
    # The run masks the styled box with the selection: outside the ellipse (the box's corners)
    # the frame's own pixels stay, inside it the styled ones. The preview must show that, not
    # the styled box (it did before: shown over the whole bounding box). Coverage 0 is the
    # source's bytes exactly; the first preview (strength 1) differs inside.
    previews = anim_gui["driver"]["previews"]
    assert previews, f"no preview was shown: {anim_gui['driver']['log']}"
    w, h = anim_gui["selection"][2:]
    coverage = bytes.fromhex(anim_gui["coverage"])
    source = bytes.fromhex(anim_gui["frames_in_region"][0])
    corners = [0, w - 1, (h - 1) * w, h * w - 1]
    centre = (h // 2) * w + w // 2
    assert [coverage[i] for i in corners] == [0] * 4 and coverage[centre] == 255
    outside = [i for i, c in enumerate(coverage) if c == 0]
    inside = [i for i, c in enumerate(coverage) if c == 255]
    assert len(outside) > 4 * 20 and len(inside) > w * h // 2

    def px(data, i):
        return data[4 * i:4 * i + 4]

    for p, data in zip(previews, anim_gui["pixels"]):
        kept = sum(px(data, i) == px(source, i) for i in outside)
        assert kept == len(outside), (p["index"], kept, len(outside))
    first = anim_gui["pixels"][0]
    styled = sum(px(first, i) != px(source, i) for i in inside) / len(inside)
    assert px(first, centre) != px(source, centre) and styled > 0.5, styled


def test_ok_runs_the_animation_on_the_previews_engine(anim_gui):
    assert anim_gui["driver"].get("pressed_ok"), anim_gui["driver"]["log"]
    assert anim_gui["status"] == "success", anim_gui.get("message")
    assert anim_gui["new_size"] == [96, 64]  # a selection keeps the canvas
    assert anim_gui["new_layers"] == ["Frame 3 (200ms) (replace)", "Frame 2 (120ms) (combine)",
                                      "Background (80ms)"]
    # One engine start in this dialog's life: the preview's, handed to the run on OK.
    assert anim_gui["engine_log"].count("starting engine") == 1, anim_gui["engine_log"]
    assert anim_gui["after"] == anim_gui["before"] and not anim_gui["dirty"]


def test_the_animation_dialog_leaves_no_process(anim_gui):
    assert anim_gui["procs"] == [], anim_gui["procs"]
    assert anim_gui["runner_rc"] == 0, "GIMP did not quit by itself"


# ------------------------------------------ the still dialog over a selection, scaled down

@pytest.fixture(scope="module")
def still_sel(gimp):
    """scripts/gui_still_selection_preview.py: the still dialog over a feathered ellipse on a
    600x400 layer at offsets (37, 23): Iterations 2, one preview (read scaled down), Cancel."""
    dump = f"{gimp.work}/selection-previews"
    found = gimp.run_gui("gui_still_selection_preview.py", "gui still selection preview",
                         timeout=600, NST_PREVIEW_DUMP_DIR=dump)
    found["pixels"] = [gimp.tree.host_path(f"{dump}/preview-{p['index']:03d}.rgba")
                       .read_bytes() for p in found["driver"].get("previews", [])]
    return found


def test_the_still_preview_keeps_the_source_outside_a_feathered_ellipse_scaled_down(still_sel):
    # The region plus margin (590x400 px) is read at 256/590: the layer on its scaled grid,
    # the selection on the image's (offsets 37, 23: up to one preview pixel apart). Where the
    # coverage is 0 in a pixel's whole 3x3 neighbourhood the preview must hold the source's
    # bytes exactly (the photo read at the same scale); well inside the ellipse, the styled.
    assert "exception" not in still_sel, still_sel["exception"]
    previews = still_sel["driver"].get("previews")
    assert previews, f"no preview was shown: {still_sel['driver']['log']}"
    assert still_sel["status"] == "cancel" and still_sel["unchanged"], still_sel.get("message")
    p, data = previews[-1], still_sel["pixels"][-1]
    assert p["settings"]["overrides"]["iterations"] == 2
    rx, ry, rw, rh = still_sel["region"]
    crop, scale = still_sel["crop"], still_sel["scale"]
    assert scale < 0.5 and crop == p["settings"]["crop"], (crop, scale)
    cw, ch = still_sel["content_size"]
    sx, sy = round((rx - crop[0]) * scale), round((ry - crop[1]) * scale)
    w, h = p["width"], p["height"]
    assert (w, h) == (round(rw * scale), round(rh * scale)) and len(data) == 4 * w * h, p
    content, coverage = (bytes.fromhex(still_sel[k]) for k in ("content", "coverage"))
    assert len(content) == 4 * cw * ch and len(coverage) == cw * ch

    def near(i, j):  # the coverage of (i, j) of the preview and its 8 neighbours
        return [coverage[(sy + j + b) * cw + sx + i + a]
                for b in (-1, 0, 1) for a in (-1, 0, 1)
                if 0 <= sx + i + a < cw and 0 <= sy + j + b < ch]

    def shown(i, j):
        return data[4 * (j * w + i):4 * (j * w + i) + 4]

    def source(i, j):
        k = (sy + j) * cw + sx + i
        return content[4 * k:4 * k + 4]

    cells = [(i, j) for j in range(h) for i in range(w)]
    outside = [c for c in cells if max(near(*c)) == 0]
    inside = [c for c in cells if min(near(*c)) == 255]
    corners = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
    assert all(c in outside for c in corners) and (w // 2, h // 2) in inside
    assert len(outside) > 4 * 100 and len(inside) > w * h // 2, (len(outside), len(inside))
    kept = sum(shown(*c) == source(*c) for c in outside)
    assert kept == len(outside), (kept, len(outside), [(c, shown(*c), source(*c))
                                                       for c in corners])
    styled = sum(shown(*c) != source(*c) for c in inside) / len(inside)
    assert shown(w // 2, h // 2) != source(w // 2, h // 2) and styled > 0.5, styled


def test_the_still_selection_dialog_leaves_no_process(still_sel):
    assert still_sel["procs"] == [], still_sel["procs"]
    assert still_sel["runner_rc"] == 0, "GIMP did not quit by itself"
