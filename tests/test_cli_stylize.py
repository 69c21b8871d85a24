"""The ``stylize`` command end to end (subprocess), and image file reading/writing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from nst_engine.errors import InvalidInput
from nst_engine.imageio import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, w: int, h: int, seed: int, alpha: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        arr[..., 3] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    Image.fromarray(arr).save(path)
    return path


def _stylize(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nst_engine", "stylize", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


SMALL = ("--max-size", "64", "--iterations", "3", "--seed", "1", "-q")


def test_stylize_writes_png_and_jpeg(tmp_path, random_weights_file):
    content = _png(tmp_path / "photo.png", 80, 60, 0, alpha=True)
    style = _png(tmp_path / "paint.png", 64, 64, 1)
    out = tmp_path / "out.png"
    run = _stylize(str(content), "-s", str(style), "-o", str(out), "--weights",
                   str(random_weights_file), *SMALL)
    assert run.returncode == 0, run.stderr
    assert "unverified/random weights are not real style transfer quality" in run.stderr
    with Image.open(out) as img:
        assert img.size == (80, 60) and img.mode == "RGBA"
        assert np.array_equal(np.asarray(img.getchannel("A")),
                              np.asarray(Image.open(content).getchannel("A")))

    jpg = tmp_path / "out.jpg"
    run = _stylize(str(content), "-s", str(style), "-s", str(content), "--style-weights",
                   "0.7,0.3", "-o", str(jpg), "--weights", str(random_weights_file),
                   "--preset", "keep-colors", *SMALL)
    assert run.returncode == 0, run.stderr
    assert "flattened onto white" in run.stderr
    with Image.open(jpg) as img:
        assert img.format == "JPEG" and img.size == (80, 60) and img.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.jpg", "out.png", "paint.png", "photo.png"]  # no temporary files left


def test_unreadable_input_is_a_clear_error(tmp_path, random_weights_file):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    style = _png(tmp_path / "paint.png", 32, 32, 1)
    out = tmp_path / "out.png"
    run = _stylize(str(bad), "-s", str(style), "-o", str(out), "--weights",
                   str(random_weights_file), *SMALL)
    assert run.returncode == 2
    assert "Cannot read image" in run.stderr and str(bad) in run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["-o", "OUT.bmp"], "unsupported extension '.bmp'"),
    (["-o", "OUT.png", "--style-weights", "1,2,3"], "3 values but 1 style"),
    (["-o", "OUT.png", "--device", "cuda"], "Device 'cuda'"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, random_weights_file, args, words):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    content = _png(tmp_path / "photo.png", 32, 32, 0)
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    run = _stylize(str(content), "-s", str(content), "--weights", str(random_weights_file),
                   *args, *SMALL)
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == [content]


# --- image files ------------------------------------------------------------------------------

def test_icc_profile_is_converted_to_srgb(tmp_path):
    rgb = Image.new("RGB", (8, 8), (200, 60, 30))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    plain = tmp_path / "plain.png"
    rgb.save(plain, icc_profile=srgb.tobytes())
    assert read_image(plain).getpixel((0, 0)) == pytest.approx((200, 60, 30), abs=1)
    # The same colour stored as CIELAB with a LAB profile: only conversion gives it back.
    lab_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
    lab = ImageCms.profileToProfile(rgb, srgb, lab_profile, outputMode="LAB")
    tagged = tmp_path / "lab.tif"
    lab.save(tagged, icc_profile=lab_profile.tobytes())
    back = read_image(tagged)
    assert back.mode == "RGB"  # LAB's "A" band is not alpha
    assert back.getpixel((0, 0)) == pytest.approx((200, 60, 30), abs=3)


def test_exif_orientation_and_modes(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    assert read_image(path).size == (20, 40)

    sixteen = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(sixteen)
    assert read_image(sixteen).getpixel((0, 0)) == (255, 255, 255)

    pal = Image.new("P", (4, 4), 0)
    pal.info["transparency"] = 0
    pal_path = tmp_path / "pal.png"
    pal.save(pal_path, transparency=0)
    assert read_image(pal_path).mode == "RGBA"


def test_write_is_atomic_and_by_extension(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    for ext, fmt in ((".png", "PNG"), (".tif", "TIFF"), (".jpeg", "JPEG")):
        notes = write_image(img, tmp_path / f"x{ext}")
        with Image.open(tmp_path / f"x{ext}") as back:
            assert back.format == fmt
        assert bool(notes) == (fmt == "JPEG")
    with pytest.raises(InvalidInput, match="does not exist"):
        write_image(img, tmp_path / "missing" / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpeg", "x.png", "x.tif"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InvalidInput, match="not found: .*nope.png"):
        read_image(tmp_path / "nope.png")
