"""The ``stylize`` command given careless input: every problem that can be known before the
optimisation is found before it (with a message, no traceback), and a finished result is never
lost to a failed write."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_engine import imageio
from nst_engine.stylize_cli.command import stylize_command
from nst_engine.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("--max-size", "64", "--iterations", "2", "--seed", "1", "-q")


def png(path: Path, w: int = 32, h: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nst_engine", "stylize", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def refused(run: subprocess.CompletedProcess, words: str) -> None:
    assert run.returncode == 2, run.stderr
    assert words in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_missing_output_folder_is_found_before_anything_is_loaded(tmp_path):
    # The weights do not exist either: an answer about the folder proves it was checked first.
    photo = png(tmp_path / "photo.png")
    run = cli(str(photo), "-s", str(photo), "-o", str(tmp_path / "nope" / "out.png"),
              "--weights", str(tmp_path / "no-weights.pth"), *SMALL)
    refused(run, "the folder")
    assert "does not exist" in run.stderr and "weights" not in run.stderr.lower()


def test_output_that_is_a_folder_is_refused(tmp_path):
    photo = png(tmp_path / "photo.png")
    (tmp_path / "out.png").mkdir()
    run = cli(str(photo), "-s", str(photo), "-o", str(tmp_path / "out.png"),
              "--weights", str(tmp_path / "no-weights.pth"), *SMALL)
    refused(run, "it is a folder")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into a read-only folder")
def test_read_only_output_folder_is_found_before_anything_is_loaded(tmp_path):
    photo = png(tmp_path / "photo.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        run = cli(str(photo), "-s", str(photo), "-o", str(locked / "out.png"),
                  "--weights", str(tmp_path / "no-weights.pth"), *SMALL)
    finally:
        locked.chmod(0o755)
    refused(run, "no new file can be made")


def test_unwritable_folder_check_uses_a_real_file(tmp_path, monkeypatch):
    """What a read-only folder does (root ignores permission bits, so it is simulated)."""
    def no_files(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio.tempfile, "mkstemp", no_files)
    with pytest.raises(InvalidInput) as e:
        imageio.check_output(tmp_path / "out.png")
    assert "no new file can be made" in e.value.message and "Permission denied" in e.value.message


def test_finished_result_is_rescued_when_its_folder_vanished(tmp_path, monkeypatch,
                                                             random_weights_file):
    """The output folder is removed while the optimisation runs: the result goes to the
    temporary folder and the error says where."""
    import nst_engine.transfer.pipeline as transfer

    rescue = tmp_path / "tmp"
    rescue.mkdir()
    monkeypatch.setattr(imageio.tempfile, "tempdir", str(rescue))
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    real = transfer.stylize

    def stylize_then_lose_the_folder(**kw):
        result = real(**kw)
        out_dir.rmdir()
        return result

    monkeypatch.setattr(transfer, "stylize", stylize_then_lose_the_folder)
    photo = png(tmp_path / "photo.png")
    args = argparse.Namespace(
        content=str(photo), style=[str(photo)], style_weights=None,
        output=str(out_dir / "out.png"), preset="quick", max_size=64, iterations=2,
        strength=None, preserve_colors=None, seed=1, device="cpu",
        weights=str(random_weights_file), weights_kind=None, quiet=True, tile_size=None)
    with pytest.raises(InvalidInput) as e:
        stylize_command(args)
    saved = list(rescue.glob("out-*.png"))
    assert len(saved) == 1 and f"saved to '{saved[0]}'" in e.value.message
    with Image.open(saved[0]) as img:
        assert img.size == (32, 24)


def test_rescue_keeps_transparency_when_the_format_cannot(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio.tempfile, "tempdir", str(tmp_path))
    rgba = Image.new("RGBA", (3, 2), (1, 2, 3, 4))
    where = imageio.rescue_image(rgba, tmp_path / "gone" / "result.jpg")
    assert where.suffix == ".png" and where.parent == tmp_path
    with Image.open(where) as back:
        assert back.mode == "RGBA" and back.getpixel((0, 0)) == (1, 2, 3, 4)


def test_all_zero_content_layers_are_refused_up_front(tmp_path):
    presets_dir = tmp_path / "presets"
    presets_dir.mkdir()
    (presets_dir / "no-content.yaml").write_text("extends: quick\n"
                                                 "content_layers: {relu4_2: 0}\n")
    photo = png(tmp_path / "photo.png")
    run = cli(str(photo), "-s", str(photo), "-o", str(tmp_path / "out.png"), "--preset",
              "no-content", "--weights", str(tmp_path / "no-weights.pth"), *SMALL,
              env={"NST_PRESETS_DIR": str(presets_dir)})
    refused(run, "gives every layer the weight 0")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("which", ["weights", "content"])
def test_fifo_given_as_a_file_is_refused_not_waited_on(tmp_path, which):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    photo = png(tmp_path / "photo.png")
    content = str(fifo) if which == "content" else str(photo)
    weights = str(fifo) if which == "weights" else str(tmp_path / "no-weights.pth")
    run = cli(content, "-s", str(photo), "-o", str(tmp_path / "out.png"), "--weights",
              weights, *SMALL)
    refused(run, "not a regular file")


def test_decompression_bomb_zone_is_silent_and_beyond_it_in_our_words(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warned = png(tmp_path / "warned.png", 40, 40)   # 1600 px: Pillow's warning zone
    bomb = png(tmp_path / "bomb.png", 50, 50)       # 2500 px: more than twice the limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert imageio.read_image(warned).size == (40, 40)
    with pytest.raises(InvalidInput) as e:
        imageio.read_image(bomb)
    assert "2,500 pixels" in e.value.message and "2,000" in e.value.message
    assert "decompression bomb" in e.value.message and "DOS" not in e.value.message
