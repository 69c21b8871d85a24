"""The plug-in inside a real GIMP 3.0.4 and 3.2.6 (see conftest.py for the set-up).

The GIMP side (scripts/e2e_checks.py) records facts; the assertions live here so a failure
names what went wrong. Images are tiny and runs are 3 iterations: this proves the plumbing,
the pictures are random-weight noise.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gimp

ARGUMENTS = ["run-mode", "image", "drawables", "style-layer", "preset", "strength", "max-size",
             "iterations", "preserve-colors", "seed", "device", "style-layer-2", "style-mix",
             "seamless"]
NAME = "Style Transfer: quick (painting)"


def get(checks, name):
    r = checks.get(name)
    assert r is not None, f"check {name} did not run: {sorted(checks)}"
    assert "exception" not in r, r["exception"]
    return r


def assert_success(r):
    assert r["status"] == "success", r.get("message")


def assert_refused(r, words):
    """A readable error that says ``words``, and the image as it was."""
    assert r["status"] == "execution-error", r
    assert words in r["message"], r["message"]
    assert "Traceback" not in r["message"]
    assert r["stack_after"] == r["stack_before"]
    assert r["source_unchanged"] and r["style_unchanged"]


def test_registered_with_the_contracts_arguments(checks, gimp):
    r = get(checks, "registration")
    assert r["registered"], "plug-in-nst-style-transfer is not in the PDB"
    assert r["arguments"] == ARGUMENTS
    assert r["menu_label"] == "Style _Transfer…"
    assert r["menu_paths"] == ["<Image>/Filters"]
    assert r["image_types"] == "RGB*, GRAY*"
    assert r["sensitivity"] & r["sensitivity_drawables"], "greyed out with several layers"
    # The preset combo was filled from the engine's list at registration, not the fallback.
    assert {"balanced", "quick", "detailed"} <= set(r["presets"]), r["presets"]
    assert r["gimp_version"].startswith({"trixie": "3.0.", "forky": "3.2."}[gimp.tree.suite])


def test_whole_layer_gets_one_new_layer_above_the_source(checks):
    r = get(checks, "whole_layer")
    assert_success(r)
    assert r["name"] == NAME
    assert r["same_parent"] and r["parent"] == "group"
    assert r["offsets"] == [5, 7] and r["size"] == [80, 64]
    assert not r["mask"], "no selection: no mask"
    before, after = r["stack_before"], r["stack_after"]
    # [painting, group[photo]] -> [painting, group[result, photo]]
    assert after[0] == before[0]
    assert [c[0] for c in after[1][3]] == [NAME, "photo"], after
    assert after[1][3][1] == before[1][3][0]
    assert r["differs_rgb"] > 0.5, "the result is barely different from the source"
    assert r["alpha_kept"]
    assert r["source_unchanged"] and r["style_unchanged"]


def test_max_size_minus_one_is_accepted_and_runs_at_the_regions_size(checks):
    r = get(checks, "full_size")
    assert_success(r)
    assert r["size"] == [80, 64] and r["differs_rgb"] > 0.5
    assert r["source_unchanged"] and r["style_unchanged"]


def test_unverified_weights_are_announced(checks):
    # The suite runs on random weights: the plug-in must say the result is not real VGG19's.
    assert "Style Transfer: unknown checksum" in checks["gimp_output"]
    assert "not those of the real VGG19" in checks["gimp_output"]


@pytest.mark.parametrize("name", ["rect_selection", "feathered_ellipse"])
def test_selection_becomes_the_layer_mask(checks, name):
    r = get(checks, name)
    assert_success(r)
    assert r["mask"] and r["mask_equals_selection"]
    assert r["source_unchanged"] and r["style_unchanged"]
    assert r["alpha_kept"]
    if name == "rect_selection":
        # Selection 0,20 40x30 (image) ∩ photo layer at 5,7 → 35x30 at 5,20.
        assert r["offsets"] == [5, 20] and r["size"] == [35, 30]
    else:
        assert r["mask_partial"] > 20, "feathering lost: the mask is all-or-nothing"
        assert r["differs_rgb"] > 0.5


def test_tiny_selection_is_handled(checks):
    r = get(checks, "tiny_selection")
    assert_success(r)
    assert r["offsets"] == [40, 40] and r["size"] == [3, 2] and r["mask"]


def test_grayscale_image_gets_a_grayscale_layer(checks):
    r = get(checks, "grayscale")
    assert_success(r)
    assert r["gray"] and r["has_alpha"]
    assert r["name"] == NAME and r["size"] == [80, 64]
    assert r["source_unchanged"] and r["style_unchanged"]
    assert r["differs_rgb"] > 0.3


def test_several_layers_each_get_a_result_and_two_styles_mix(checks):
    r = get(checks, "two_layers_two_styles")
    assert_success(r)
    name = "Style Transfer: quick (painting + painting 2)"
    assert r["first"]["name"] == name
    assert r["second"]["name"].startswith(name)  # GIMP adds " #1": layer names are unique
    assert r["first"]["size"] == [80, 64] and r["second"]["size"] == [50, 40]
    assert len(r["stack_after"]) == len(r["stack_before"]) + 2


def test_style_from_another_image_works(checks):
    r = get(checks, "style_from_another_image")
    assert_success(r)
    assert r["name"] == "Style Transfer: quick (other painting)"
    assert r["size"] == [80, 64] and r["differs_rgb"] > 0.5
    assert r["source_unchanged"] and r["style_unchanged"]


def test_high_bit_depth_image_stays_high_bit_depth(checks):
    r = get(checks, "high_bit_depth")
    assert_success(r)
    assert r["precision_after"] == "u16-linear"
    assert r["name"] == NAME and r["size"] == [80, 64]
    assert r["source_unchanged"] and r["style_unchanged"] and r["alpha_kept"]


def test_layer_partly_off_canvas_keeps_its_offsets(checks):
    r = get(checks, "partly_off_canvas")
    assert_success(r)
    assert r["offsets"] == [-20, -10] and r["size"] == [80, 64]
    assert r["source_unchanged"] and r["style_unchanged"]


def test_layer_groups_work_as_source_and_as_style(checks):
    r = get(checks, "group_layers")
    assert_success(r["as_source"])
    assert_success(r["as_style"])
    # [painting, group] -> [painting, result of group, group] -> [result of painting, ...]
    first = r["after_source"]
    assert [x[0] for x in first] == ["painting", NAME, "group"], first
    assert first[1][1:3] == [[5, 7], [80, 64]], "the group's result is not aligned with it"
    assert first[2] == r["stack_before"][1], "the group changed"
    after = r["stack_after"]
    assert [x[0] for x in after] == ["Style Transfer: quick (group)", "painting", NAME, "group"]
    assert after[0][1:3] == [[30, 20], [40, 36]]


@pytest.mark.parametrize("name,words", [
    ("transparent_style", "“painting” is fully transparent"),
    ("channel_as_drawable", "mask or channel"),
    ("absent_device", "'cuda' was asked for but is not available"),
])
def test_unusable_input_is_refused_and_nothing_changes(checks, name, words):
    assert_refused(get(checks, name), words)


@pytest.mark.parametrize("name,words", [
    ("engine_missing", "could not be started"),
    ("engine_crashes", "exited with status 3"),
    ("last_values_mode", "could not be started"),
    ("config_missing", "install.py"),
])
def test_broken_engine_gives_a_readable_error_and_no_layer(checks, name, words):
    r = get(checks, name)
    assert_refused(r, words)
    if name != "config_missing":
        assert "engine.log" in r["message"], "the message must name the log file"


def test_killing_the_plug_in_takes_the_engine_down(checks):
    r = get(checks, "killed_mid_run")
    assert r["killer_rc"] == 0, r["killer"]
    assert r["status"] != "success"
    assert r["engines_left"] == [], f"engine still running after the plug-in died: {r}"
    assert r["stack_after"] == r["stack_before"], "a partial layer was left behind"
