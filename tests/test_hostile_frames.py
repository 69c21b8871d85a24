"""The ``stylize`` command line given hostile or careless animations, batches and outputs
(issue 35, items 1-7): decompression bombs, frame caps counted before decoding, APNG
compositing, frames done kept on every early end, ``-o DIR/`` checked first, the overwrite
policy, every frame and delay kept. Styling is faked (a frame comes back as it went in) where
the test is about files, so these run in seconds."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_engine import cli, imageio
from nst_engine.imageio import Clip, read_clip, write_clip
from nst_engine.testing import png_declaring, write_apng

ROOT = Path(__file__).resolve().parents[1]


def run(*argv) -> int:
    return cli.main(["stylize", *map(str, argv)])


def png(path: Path, size=(20, 16), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def gif(path: Path, n=3, delays=None) -> Path:
    frames = [Image.new("RGB", (20, 16), (60 * i, 0, 0)) for i in range(n)]
    write_clip(Clip(frames, delays or [70] * n, 0), path)
    return path


def no_traceback(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: " in err, err
    return err


@pytest.fixture
def fake(monkeypatch):
    """Styling faked: each frame and each still comes back as it went in (a copy); ``hook``
    (frame number from 1 -> callable) runs just before that frame returns."""
    from nst_engine.transfer import animation, pipeline
    hooks: dict[int, object] = {}

    def frame(self, content, **kw):
        self.count += 1
        if self.count in hooks:
            hooks[self.count]()
        return content.copy()
    monkeypatch.setattr(animation.Animation, "frame", frame)
    monkeypatch.setattr(pipeline, "stylize", lambda content, **kw: content.copy())
    return hooks


@pytest.fixture
def common(random_weights_file):
    return ["--weights", random_weights_file, "--device", "cpu", "-q"]


# --- 1. decompression bombs ------------------------------------------------------------------

def test_a_declared_30000_px_png_is_refused_in_words_not_a_traceback(tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 30000, 30000)
    style = png(tmp_path / "style.png")
    proc = subprocess.run([sys.executable, "-m", "nst_engine", "stylize", str(bomb), "-s",
                           str(style), "-o", str(tmp_path / "out.png"), "--weights",
                           str(tmp_path / "none.pth")], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "900,000,000 pixels" in proc.stderr and "decompression bomb" in proc.stderr


@pytest.mark.parametrize("ext", [".png", ".gif", ".apng"])
def test_a_bomb_is_refused_before_the_animation_probe_for_every_kind(tmp_path, capsys,
                                                                     monkeypatch, ext):
    frames = [Image.new("RGB", (50, 50), (i, 0, 0)) for i in range(2)]
    src = tmp_path / f"big{ext}"
    if ext == ".png":
        frames[0].save(src)
    else:
        write_clip(Clip(frames, [100, 100], 0), src)
    style = png(tmp_path / "s.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2500 px: more than twice that
    for tied in ([], ["--animation"]):
        assert run(src, *tied, "-s", style, "-o", tmp_path / "out.gif",
                   "--weights", tmp_path / "none.pth") == 2
        assert "decompression bomb" in no_traceback(capsys)


# --- 2. the frame cap, counted before decoding -------------------------------------------------

def test_the_frame_cap_is_counted_before_any_frame_is_decoded(tmp_path, capsys, monkeypatch):
    from PIL import ImageFile

    from nst_engine.stylize_cli import request
    src = gif(tmp_path / "many.gif", n=5)
    apng = tmp_path / "many.apng"
    write_clip(Clip([Image.new("RGB", (8, 8), (i, 9, 9)) for i in range(5)], [10] * 5), apng)
    monkeypatch.setattr(request, "MAX_FRAMES", 3)
    loads = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1) or real(self))
    for path in (src, apng):
        assert run(path, "-s", png(tmp_path / "s.png"), "-o", tmp_path / "out.gif",
                   "--weights", tmp_path / "none.pth") == 2
        assert "has 5 frames; one run styles at most 3" in no_traceback(capsys)
        assert loads == []  # not one frame decoded


# --- 3. APNG: every disposal and blend, sub-rectangles ---------------------------------------

def _apng_case():
    rng = np.random.default_rng(5)

    def rgba(w, h, alpha):
        a = rng.integers(0, 255, (h, w, 4), dtype=np.uint8)
        a[..., 3] = alpha if np.isscalar(alpha) else alpha[:h, :w]
        return a
    holes = np.where(rng.random((16, 20)) < 0.4, 0, 255).astype(np.uint8)
    return [
        dict(image=rgba(20, 16, 255), dispose=0, blend=0, delay=(0, 0)),      # 0 ms
        dict(image=rgba(6, 5, holes), at=(2, 3), dispose=2, blend=1, delay=(5, 0)),  # 50 ms
        dict(image=rgba(5, 7, holes), at=(10, 2), dispose=1, blend=0, delay=(1, 8)),
        dict(image=rgba(8, 8, holes), at=(4, 4), dispose=2, blend=1, delay=(33, 1000)),
        dict(image=rgba(9, 6, 255), at=(11, 10), dispose=0, blend=0, delay=(2, 1)),
    ]


def _composite(frames, size):
    """The APNG rules, written out plainly (alpha only 0 or 255 here: over = where opaque)."""
    canvas = np.zeros((size[1], size[0], 4), np.uint8)
    out = []
    for i, f in enumerate(frames):
        img, (x, y) = f["image"], f.get("at", (0, 0))
        h, w = img.shape[:2]
        region = canvas[y:y + h, x:x + w]
        before = region.copy()
        if f["blend"] == 0:
            region[:] = img
        else:
            region[img[..., 3] == 255] = img[img[..., 3] == 255]
        out.append(canvas.copy())
        dispose = 1 if i == 0 and f["dispose"] == 2 else f["dispose"]
        if dispose == 1:
            region[:] = 0
        elif dispose == 2:
            region[:] = before
    return out


def test_apng_frames_are_composited_by_every_disposal_and_blend(tmp_path):
    frames = _apng_case()
    path = write_apng(tmp_path / "all.png", (20, 16), frames, loop=3)
    clip = read_clip(path)
    expected = _composite(frames, (20, 16))
    assert len(clip.frames) == 5 and clip.loop == 3
    assert clip.durations == [0, 50, 125, 33, 2000]
    for i, (got, want) in enumerate(zip(clip.frames, expected)):
        got = np.asarray(got.convert("RGBA"))
        visible = want[..., 3] > 0  # a transparent pixel's colour is nobody's business
        assert np.array_equal(got[..., 3], want[..., 3]), f"frame {i + 1}: alpha"
        assert np.array_equal(got[visible], want[visible]), f"frame {i + 1}"
        # A second witness: Pillow seeking straight to the frame (right in Pillow 13, unlike
        # reading the frames one after another, which keeps a "previous" frame's pixels).
        with Image.open(path) as direct:
            direct.seek(i)
            theirs = np.asarray(direct.convert("RGBA"))
        assert np.array_equal(theirs[visible], got[visible]), f"frame {i + 1}: Pillow"


# --- 4. frames done kept on every early end ----------------------------------------------------

def test_a_failed_final_write_keeps_every_frame_and_says_where(tmp_path, fake, common,
                                                              capsys, monkeypatch):
    rescue = tmp_path / "tmp"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    fake[3] = out_dir.rmdir  # the output folder removed during frame 3 of 3
    assert run(gif(tmp_path / "in.gif"), "-s", png(tmp_path / "s.png"), "-o",
               out_dir / "out.gif", *common) == 2
    err = no_traceback(capsys)
    [kept] = rescue.glob("out-frames-done-*")
    assert f"The 3 frame(s) done were saved in '{kept}'" in err
    assert sorted(p.name for p in kept.iterdir()) == ["in-001.png", "in-002.png", "in-003.png"]


@pytest.mark.parametrize("into", ["file", "folder"])
def test_ctrl_c_keeps_the_frames_done_and_says_where(tmp_path, fake, common, capsys, into):
    def ctrl_c():
        raise KeyboardInterrupt
    fake[3] = ctrl_c
    out = tmp_path / ("out.gif" if into == "file" else "frames")
    if into == "folder":
        out.mkdir()
    assert run(gif(tmp_path / "in.gif", n=6), "-s", png(tmp_path / "s.png"), "-o", out,
               *common) == 130
    err = capsys.readouterr().err
    kept = tmp_path / "out-frames-done" if into == "file" else out
    assert "interrupted" in err and "stopped at frame 3 of 6" in err and f"'{kept}'" in err
    assert sorted(p.name for p in kept.iterdir()) == ["in-001.png", "in-002.png"]
    assert not (tmp_path / "out.gif").exists()


def test_a_batch_ended_early_says_where_the_results_done_are(tmp_path, common, capsys,
                                                             monkeypatch):
    from nst_engine.errors import NumericalError
    from nst_engine.transfer import pipeline
    inputs = [png(tmp_path / f"{c}.png", seed=i) for i, c in enumerate("abc")]
    out = tmp_path / "out"
    out.mkdir()
    for failure, status in ((KeyboardInterrupt(), 130),
                            (NumericalError("The optimisation diverged.", "Lower it."), 2)):
        calls = []

        def stylize(content, **kw):
            calls.append(1)
            if len(calls) == 3:
                raise failure
            return content.copy()
        monkeypatch.setattr(pipeline, "stylize", stylize)
        assert run(*inputs, "-s", inputs[0], "-o", out, "--overwrite", *common) == status
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"The 2 result(s) before it are in '{out}'" in err
        assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_a_folder_output_lets_each_result_go_once_written(tmp_path, fake, common, monkeypatch):
    """Issue 31 item 6: into a folder, the full-size results are not all kept in memory."""
    from nst_engine.transfer import animation
    results: list[weakref.ref] = []

    def frame(self, content, **kw):
        self.count += 1
        gc.collect()
        # Only the result being written may still be alive when the next frame starts.
        assert sum(r() is not None for r in results) <= 1, "earlier results kept"
        made = content.copy()
        results.append(weakref.ref(made))
        return made
    monkeypatch.setattr(animation.Animation, "frame", frame)
    out = tmp_path / "frames"
    out.mkdir()
    assert run(gif(tmp_path / "in.gif", n=4), "-s", png(tmp_path / "s.png"), "-o", out,
               *common) == 0
    assert len(list(out.iterdir())) == 4


# --- 5. -o DIR/ checked before any work ----------------------------------------------------

def test_an_unwritable_output_folder_is_refused_before_the_model_loads(tmp_path, capsys,
                                                                       monkeypatch):
    out = tmp_path / "frames"
    out.mkdir()
    clip_in = [gif(tmp_path / "in.gif")]
    batch_in = [png(tmp_path / "a.png"), png(tmp_path / "b.png", seed=1)]

    def no_files(*a, **k):  # what a read-only folder does (root ignores permission bits)
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(imageio.tempfile, "mkstemp", no_files)
    for inputs in (clip_in, batch_in):
        # The weights do not exist: an answer about the folder proves it came first.
        assert run(*inputs, "-s", tmp_path / "a.png", "-o", f"{out}/", "--weights",
                   tmp_path / "none.pth") == 2
        err = no_traceback(capsys)
        assert "no new file can be made" in err and "Read-only" in err


# --- 6. the overwrite policy -------------------------------------------------------------------

def test_an_input_is_never_overwritten_not_even_with_overwrite(tmp_path, capsys):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "b.png", seed=1)
    before = {p.name: p.read_bytes() for p in (a, b)}
    cases = [[a, "-o", a],                              # a still onto itself
             [a, b, "-o", tmp_path],                    # a batch into its own folder
             [a, b, "--animation", "-o", f"{tmp_path}/"],  # frames into their own folder
             [a, "-o", b]]                              # onto the style
    for case in cases:
        for flag in ([], ["--overwrite"]):
            assert run(*case, "-s", b, *flag, "--weights", tmp_path / "none.pth") == 2
            assert "one of the inputs" in no_traceback(capsys)
    assert {p.name: p.read_bytes() for p in (a, b)} == before


def test_an_existing_output_is_refused_unless_overwrite(tmp_path, fake, common, capsys):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "b.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    existing = {"still": tmp_path / "still.png", "batch": out / "a.png",
                "clip": tmp_path / "clip.gif", "frames": out / "in-002.png"}
    argv = {"still": [a, "-o", existing["still"]], "batch": [a, b, "-o", out],
            "clip": [gif(tmp_path / "in.gif"), "-o", existing["clip"]],
            "frames": [tmp_path / "in.gif", "-o", out]}
    for kind, target in existing.items():
        target.write_bytes(b"the user's own file")
        assert run(*argv[kind], "-s", b, *common) == 2, kind
        err = no_traceback(capsys)
        assert "already exist" in err and "--overwrite" in err and str(target) in err, kind
        assert target.read_bytes() == b"the user's own file", kind
        assert run(*argv[kind], "-s", b, "--overwrite", *common) == 0, kind
        assert target.read_bytes() != b"the user's own file", kind
        capsys.readouterr()


def test_a_file_appearing_while_working_is_not_replaced(tmp_path, fake, common, capsys,
                                                        monkeypatch):
    rescue = tmp_path / "tmp"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    out = tmp_path / "out.gif"
    fake[2] = lambda: out.write_bytes(b"someone else's")
    assert run(gif(tmp_path / "in.gif"), "-s", png(tmp_path / "s.png"), "-o", out,
               *common) == 2
    err = no_traceback(capsys)
    assert "appeared while this run worked" in err and "frames-done" in err
    assert out.read_bytes() == b"someone else's"
    assert len(list((tmp_path / "out-frames-done").iterdir())) == 3


def test_frames_done_never_go_into_an_existing_folder(tmp_path, fake, common, capsys):
    from nst_engine.errors import NumericalError

    def fail():
        raise NumericalError("The optimisation diverged.", "Lower it.")
    fake[3] = fail
    taken = tmp_path / "out-frames-done"
    taken.mkdir()
    (taken / "in-001.png").write_bytes(b"an earlier run's")
    assert run(gif(tmp_path / "in.gif"), "-s", png(tmp_path / "s.png"), "-o",
               tmp_path / "out.gif", *common) == 2
    kept = tmp_path / "out-frames-done-2"
    assert f"saved in '{kept}'" in no_traceback(capsys)
    assert (taken / "in-001.png").read_bytes() == b"an earlier run's"
    assert sorted(p.name for p in kept.iterdir()) == ["in-001.png", "in-002.png"]


# --- 7. every frame and every delay kept -------------------------------------------------------

@pytest.mark.parametrize("ext", [".gif", ".webp", ".apng"])
def test_equal_frames_and_zero_delays_are_kept(tmp_path, ext):
    same = Image.new("RGB", (12, 10), (10, 200, 30))
    frames = [same, same.copy(), Image.new("RGB", (12, 10), (200, 10, 30))]
    write_clip(Clip(frames, [0, 0, 50], 0), tmp_path / f"a{ext}")
    back = read_clip(tmp_path / f"a{ext}")
    assert len(back.frames) == 3 and back.durations == [0, 0, 50]
    with Image.open(tmp_path / f"a{ext}") as img:
        assert img.n_frames == 3  # what any reader sees, not only ours


def test_gif_delays_are_written_to_the_nearest_10_ms(tmp_path):
    frames = [Image.new("RGB", (4, 4), (i * 50, 0, 0)) for i in range(3)]
    write_clip(Clip(frames, [14, 15, 99], None), tmp_path / "a.gif")
    assert read_clip(tmp_path / "a.gif").durations == [10, 20, 100]


def test_the_command_keeps_frame_count_and_delays(tmp_path, fake, common):
    src = tmp_path / "in.gif"
    same = Image.new("RGB", (20, 16), (9, 99, 9))
    write_clip(Clip([same, same.copy(), Image.new("RGB", (20, 16))], [0, 0, 50], 0), src)
    for ext in (".gif", ".webp", ".apng"):
        assert run(src, "-s", png(tmp_path / "s.png"), "-o", tmp_path / f"out{ext}",
                   *common) == 0
        back = read_clip(tmp_path / f"out{ext}")
        assert len(back.frames) == 3 and back.durations == [0, 0, 50], ext


def test_each_frame_is_given_the_next_one_for_its_flows(tmp_path, common, monkeypatch):
    """Issue 31 item 5: the command line knows every frame up front, so each frame hands the
    next one to the animation (its flows are computed while this frame optimises on a GPU)."""
    from nst_engine.transfer import animation
    given = []

    def frame(self, content, *, upcoming=None, **kw):
        self.count += 1
        given.append(None if upcoming is None else upcoming.getpixel((0, 0)))
        return content.copy()
    monkeypatch.setattr(animation.Animation, "frame", frame)
    out = tmp_path / "frames"
    out.mkdir()
    assert run(gif(tmp_path / "in.gif", n=3), "-s", png(tmp_path / "s.png"), "-o", out,
               *common) == 0
    firsts = [Image.open(p).convert("RGB").getpixel((0, 0)) for p in sorted(out.iterdir())]
    assert len(given) == 3 and given[-1] is None
    assert [g[:3] for g in given[:2]] == firsts[1:]
