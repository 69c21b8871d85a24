"""A run of the plug-in is one undo step, checked with GIMP's own Undo in the GUI.

GIMP's PDB has no undo call, so scripts/gui_undo.py runs in GIMP's GUI under Xvfb
(scripts/gui_run.py) and presses Ctrl+Z, then Ctrl+Y, in the image window; it records the image
before the run, after it, after the undo and after the redo. Below the plug-in's step lies exactly
one other step (the selection), so an extra undo would show too.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gimp

NAME = "Style Transfer: quick (painting)"


def names(layers):
    for layer in layers:
        yield layer["name"]
        yield from names(layer.get("children") or [])


@pytest.fixture(scope="module")
def undo(gui_undo):
    assert gui_undo["status"] == "success", gui_undo.get("message")
    return gui_undo


def test_the_run_added_the_result_layer(undo):
    group = undo["after_run"]["layers"][1]
    assert [c["name"] for c in group["children"]] == [NAME, "photo"], group
    assert group["children"][0]["mask"], "the selection should have become the mask"


def test_one_undo_restores_the_original_layer_stack(undo):
    before, after = undo["before"], undo["after_undo"]
    assert after != undo["after_run"], f"Ctrl+Z never reached GIMP: {undo['log']}"
    # Names, ids, parents, positions, offsets, sizes, masks: all as before the run.
    assert after["layers"] == before["layers"], after["layers"]
    assert NAME not in names(after["layers"])
    # The step below (the selection) is untouched: exactly one step was undone.
    assert after["selection"] == before["selection"]
    # Source and style pixels are what they were.
    assert after["pixels"] == before["pixels"]


def test_redo_brings_the_same_result_back(undo):
    assert undo["after_redo"] == undo["after_run"], undo["log"]


def test_gimp_and_xvfb_leave_no_process_behind(undo):
    assert undo["procs"] == [], undo["procs"]
    assert undo["runner_rc"] == 0, "GIMP did not quit by itself"
