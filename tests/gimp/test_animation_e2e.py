"""Filters > Style Transfer (Animation)… inside a real GIMP 3.0.4 and 3.2.6: a 3-frame animation
with different delays (the middle frame a layer group) in, a new image out with 3 frames in
order and their tags, exported as an animated GIF by GIMP and read back with the same delays;
the source image unchanged; with a feathered selection, the new image the canvas's size and
each frame its source with the styled region laid over it through the selection, styled with
the still's context margin around the bounding box (clipped to the canvas) and cropped back
(scripts/animation_checks.py records, this file asserts)."""

from __future__ import annotations

import pytest
from PIL import Image

pytestmark = pytest.mark.gimp

NAMES = ["Background (80ms)", "Frame 2 (120ms) (combine)", "Frame 3 (200ms) (replace)"]


@pytest.fixture(scope="module")
def anim(gimp):
    gif = f"{gimp.work}/styled.gif"
    # One precision for every engine here: the selection checks compare pixels across runs,
    # and on a CPU where bfloat16 pays, an engine started while the machine is busy measures
    # the race untrusted and runs float32 (device/cpu_precision.py; as test_warm_e2e.py).
    found = gimp.run_checks("animation_checks.py", "animation checks", NST_E2E_GIF=gif,
                            NST_ENGINE_CPU_BF16="0")
    found["gif"] = gimp.tree.host_path(gif)
    return found


def test_registered_as_a_second_procedure(anim):
    assert anim["registered"]
    assert anim["menu_label"] == "Style Transfer (_Animation)…"
    assert anim["menu_paths"] == ["<Image>/Filters"]
    assert anim["arguments"][:4] == ["run-mode", "image", "drawables", "style-layer"]
    assert {"loop", "temporal-weight"} <= set(anim["arguments"])


def test_frames_in_a_new_image_in_order_with_their_tags(anim):
    assert anim["status"] == "success", anim.get("message")
    assert anim["new_is_other_image"]
    assert anim["new_size"] == [48, 40]
    # Top first, as GIMP lists layers: the last frame on top, each named as its source.
    assert [l[0] for l in anim["new_layers"]] == NAMES[::-1]
    assert all(l[1] == [48, 40] and l[2] is None for l in anim["new_layers"])
    assert anim["new_distinct"] == 3  # three styled frames, not one copied


def test_the_source_image_is_untouched(anim):
    assert anim["source_after"] == anim["source_before"]
    assert anim["source_before"][1][2] == ["inner"]  # the group frame kept its child
    assert anim["source_unchanged"] and anim["source_clean"]
    assert anim["images_after"] == anim["images_before"] + 1  # the new image only


def test_gimp_exports_it_as_an_animated_gif_with_the_same_delays(anim):
    assert anim["export"] == "success", anim["export_options"]
    with Image.open(anim["gif"]) as gif:
        delays = []
        for i in range(gif.n_frames):
            gif.seek(i)
            delays.append(gif.info.get("duration"))
    assert delays == [80, 120, 200]
    # GIMP loads it back as the same three frames, delays in the names.
    back = anim["loaded_back"][::-1]
    assert len(back) == 3 and all(f"({ms}ms)" in n for n, ms in zip(back, (80, 120, 200)))


def test_a_single_frame_is_refused_with_words(anim):
    status, message = anim["single"]
    assert status == "execution-error"
    assert "at least 2" in message and "Filters > Style Transfer" in message


def test_a_selection_limits_the_region_as_it_does_for_stills(anim):
    r = anim["selected"]
    assert r["status"] == "success", r["message"]
    # The ellipse's corners are inside its bounding box but not selected: a bounding box
    # pasted as a rectangle would change them.
    assert r["bbox"][2:] != [48, 40] and r["bbox_unselected"] > 20, r["bbox"]
    # The canvas's size (not the bounding box's), one layer per frame, named as its source.
    assert r["new_size"] == [48, 40]
    assert [l[0] for l in r["new_layers"]] == NAMES[::-1]
    assert all(l[1] == [48, 40] for l in r["new_layers"])
    for frame in r["changes"]:  # {bucket: [pixels, changed, mean largest difference]}
        n_out, changed_out, _ = frame["out"]
        assert n_out > 300 and changed_out == 0, frame  # outside: the source frame's pixels
        n_in, changed_in, diff_in = frame["in"]
        assert n_in > 100 and changed_in > 0.8 * n_in, frame  # inside: styled
        # Feathered edges kept: partly selected pixels change, less where less is selected.
        assert frame["low"][1] > 0 and frame["high"][1] > 0, frame
        assert frame["low"][2] < frame["high"][2] and frame["low"][2] < diff_in, frame


def test_a_selected_run_leaves_the_source_and_its_selection_alone(anim):
    r = anim["selected"]
    assert r["source_unchanged"] and r["selection_unchanged"] and r["source_clean"]


def test_a_selection_is_styled_with_the_stills_context_margin(anim):
    # The ellipse's bounding box plus margin (16 px) covers the whole 48x40 canvas: the engine
    # is sent exactly what the unselected run sent, so the fully selected pixels are that
    # run's. Sent the bounding box alone (no margin), they would differ.
    r = anim["selected"]
    assert r["status"] == "success", r["message"]
    assert len(r["inside_vs_whole_run"]) == 3
    for n_in, differ in r["inside_vs_whole_run"]:
        assert n_in > 100 and differ == 0, r["inside_vs_whole_run"]


def test_the_margin_is_clipped_to_the_canvas(anim):
    # A 14x12 rectangle at (2, 3): the engine is sent (0, 0, 32, 31), the margin clipped at the
    # left and top. An unselected run over a copy cropped to that rectangle gives the same
    # pixels over the selection; outside it the frames are the source's.
    c = anim["corner"]
    assert c["status"] == "success", c["message"]
    assert c["ref_status"] == "success", c["ref_message"]
    assert c["ref_size"] == c["crop"][2:] == [32, 31]
    assert c["inside_vs_ref"] == [0, 0, 0], c
    assert all(n > 0.8 * 14 * 12 for n in c["inside_vs_source"]), c  # styled
    assert c["outside_vs_source"] == [0, 0, 0], c
