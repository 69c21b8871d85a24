"""The dialog's preview in GIMP's GUI (Xvfb), 3.0.4 and 3.2.6.

scripts/gui_preview.py opens the Style Transfer dialog interactively over a photo and a painting
layer; scripts/gui_preview_driver.py plays the user through X (xdotool): it waits for the
automatic preview, types a new strength, waits for the preview to be redone, then presses
Escape (Cancel). How the test sees the previews (decision): the plug-in's test hook
NST_PREVIEW_DUMP_DIR makes the dialog write every finished preview there as raw RGBA plus a JSON
description (size and the settings it was made with). A screenshot crop would depend on the
theme, scaling and the checkerboard; the dump is exactly the pixels the pane shows.
Random weights: this proves the plumbing and the behaviour, not the pictures' quality.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def preview(gimp):
    dump = f"{gimp.work}/previews"
    found = gimp.run_gui("gui_preview.py", "gui preview", timeout=900,
                         NST_PREVIEW_MODE="test", NST_PREVIEW_DUMP_DIR=dump,
                         NST_E2E_SCRIPTS=f"{gimp.src}/tests/gimp/scripts")
    assert "exception" not in found, found["exception"]
    found["pixels"] = [gimp.tree.host_path(f"{dump}/preview-{p['index']:03d}.rgba").read_bytes()
                       for p in found.get("driver", {}).get("previews", [])]
    return found


def test_a_preview_appears_without_pressing_anything(preview):
    previews = preview["driver"]["previews"]
    assert previews, f"no preview was shown: {preview['driver']['log']}"
    first = previews[0]
    # The whole 640x400 photo (no selection), at the preview's size.
    assert (first["width"], first["height"]) == (256, 160)
    assert len(preview["pixels"][0]) == 256 * 160 * 4
    assert first["settings"]["overrides"]["strength"] == 1.0
    assert first["settings"]["overrides"]["max_size"] == 256


def test_changing_a_setting_redoes_the_preview(preview):
    previews = preview["driver"]["previews"]
    assert len(previews) >= 2, f"the preview was not redone: {preview['driver']['log']}"
    last = previews[-1]
    assert last["settings"]["overrides"]["strength"] == 8.0
    # Same seed (the dialog's), same region: only the strength differs, and the pixels do.
    assert last["settings"]["overrides"]["seed"] == previews[0]["settings"]["overrides"]["seed"]
    first_px, last_px = preview["pixels"][0], preview["pixels"][-1]
    assert len(first_px) == len(last_px)
    changed = sum(a != b for a, b in zip(first_px, last_px)) / len(first_px)
    assert changed > 0.3, f"only {changed:.1%} of the preview's bytes changed"


def test_cancel_leaves_the_image_as_it_was(preview):
    assert preview["status"] == "cancel", preview.get("message")
    before, after = preview["before"], preview["after"]
    # No new layer, no pixel changed, and no undo step (the image was clean and still is).
    assert after["layers"] == before["layers"]
    assert not before["dirty"] and not after["dirty"]


def test_no_engine_or_gimp_process_is_left(preview):
    assert preview["procs"] == [], preview["procs"]
    assert preview["runner_rc"] == 0, "GIMP did not quit by itself"
