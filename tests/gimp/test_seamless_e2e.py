"""Seamless tiles (issue 25) end to end in GIMP 3.0.4 and 3.2.6: Filters > Style Transfer with
the "Seamless tile" checkbox (the `seamless` argument, last) on a layer that tiles itself gives a
layer that GIMP's Layer > Transform > Offset (wrap-around, by half) leaves without a seam, by the
measure of benchmarks/bench_seamless.py and tests/test_seamless.py: the gradient energy in bands
an eighth of the side wide around the centre lines (where the borders now meet) against the
rest (``nst_engine.transfer.tiles.seam_ratio``; 1 = no seam). The same run without the option
shows its seam there. scripts/seamless_checks.py runs GIMP; the measure is taken here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def seams(gimp):
    folder = f"{gimp.work}/seamless"
    found = gimp.run_checks("seamless_checks.py", "seamless checks", NST_E2E_SEAM_DIR=folder)
    n = found["size"]

    def read(name):
        data = gimp.tree.host_path(f"{folder}/{name}.rgba").read_bytes()
        return np.frombuffer(data, np.uint8).reshape(n, n, 4)

    found["pixels"] = {name: read(name) for name in
                       ("content", "plain", "plain-offset", "seamless", "seamless-offset")
                       if gimp.tree.host_path(f"{folder}/{name}.rgba").is_file()}
    return found


def seam_in_the_middle(rgba: np.ndarray) -> float:
    """The seam measure of a picture whose borders were moved to its middle: bands of h//16
    lines each side of the centre lines against the rest (RGB)."""
    import torch

    from nst_engine.transfer import tiles

    a = rgba[..., :3].astype(np.float32) / 255
    return tiles.centre_seam(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1))


def _runs(seams):
    for key in ("plain", "seamless"):
        run = seams[key]
        assert run["status"] == "success", run.get("message")
        assert run["offset"], "GIMP's offset failed"
    return seams["pixels"]


def test_gimps_offset_wraps_by_half(seams):
    px = _runs(seams)
    n = seams["size"]
    for key in ("plain", "seamless"):
        assert np.array_equal(px[key + "-offset"], np.roll(px[key], (n // 2, n // 2), (0, 1)))


def test_the_content_tiles_itself(seams):
    content = seams["pixels"]["content"]
    n = seams["size"]
    assert abs(seam_in_the_middle(np.roll(content, (n // 2, n // 2), (0, 1))) - 1) <= 0.25


def test_a_seamless_result_shows_no_seam_after_gimps_offset(seams):
    # Measured 1.03-1.05 (bfloat16 and float32 CPUs) in the engine at these settings; the issue's
    # 1 +- 0.05 is at 256 px (benchmarks/bench_seamless.py).
    ratio = seam_in_the_middle(_runs(seams)["seamless-offset"])
    assert abs(ratio - 1) <= 0.25, ratio


def test_without_the_option_the_seam_shows(seams):
    # Measured about 2.8 in the engine at these settings: the borders are edges.
    ratio = seam_in_the_middle(_runs(seams)["plain-offset"])
    assert ratio > 1.5, ratio
