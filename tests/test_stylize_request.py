"""The ``stylize`` command line's request: a still, a clip or a batch, made once from the
arguments with every input read and checked before the model loads; each kind carried out by
its own function (the clip's frames done kept when a frame fails)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nst_engine import cli
from nst_engine.errors import EngineError, InvalidInput, NumericalError
from nst_engine.imageio import Clip, write_clip
from nst_engine.stylize_cli import request as request_module
from nst_engine.stylize_cli.request import (BatchRequest, ClipRequest, StillRequest,
                                            request_from_args)

ROOT = Path(__file__).resolve().parents[1]


def png(path: Path, size=(40, 30), colour=(200, 30, 10)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def gif(path: Path, n=3, loop: int | None = 0) -> Path:
    frames = [Image.new("RGB", (40, 30), (60 * i, 0, 0)) for i in range(n)]
    write_clip(Clip(frames, [70, 90, 110][:n], loop), path)
    return path


def made(*argv) -> StillRequest | ClipRequest | BatchRequest:
    return request_from_args(cli._parser().parse_args(["stylize", *map(str, argv)]))


@pytest.fixture
def reads(monkeypatch):
    """The paths ``request_from_args`` reads as images, in order."""
    seen: list[str] = []
    real = request_module.read_image

    def counted(path):
        seen.append(Path(path).name)
        return real(path)
    monkeypatch.setattr(request_module, "read_image", counted)
    return seen


def test_one_image_is_a_still_with_its_styles_weights_and_settings(tmp_path, reads):
    photo = png(tmp_path / "photo.png", (40, 30))
    style = png(tmp_path / "paint.png", (16, 16), (1, 2, 3))
    req = made(photo, "-s", style, "-s", photo, "--style-weights", "0.7,0.3", "-o",
               tmp_path / "out.png", "--max-size", "64", "--iterations", "3", "--device", "cpu",
               "-q")
    assert type(req) is StillRequest
    assert req.content.size == (40, 30) and req.output == str(tmp_path / "out.png")
    assert [(img.size, w) for img, w in req.styles] == [((16, 16), 0.7), ((40, 30), 0.3)]
    assert (req.params.max_size, req.params.iterations) == (64, 3)
    assert (req.device, req.weights, req.quiet) == ("cpu", None, True)
    assert reads == ["photo.png", "paint.png", "photo.png"]  # each input read once, in order
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.output = "elsewhere.png"


def test_an_animated_file_is_a_clip_even_without_animation(tmp_path):
    src = gif(tmp_path / "in.gif", loop=0)
    style = png(tmp_path / "paint.png")
    req = made(src, "-s", style, "-o", tmp_path / "out.webp")
    assert type(req) is ClipRequest and not req.tied and not req.into_folder
    assert req.params.temporal_weight == 0  # untied frames: no temporal term
    assert req.durations == (70, 90, 110) and len(req.frames) == 3
    assert req.names == ("in-001.png", "in-002.png", "in-003.png")
    assert (req.loop, req.loop_count) == (True, 0)  # as the file says
    # --no-loop: the frames do not lead back, the output still loops as the input did.
    req = made(src, "-s", style, "-o", tmp_path / "out.webp", "--no-loop")
    assert (req.loop, req.loop_count) == (False, 0)
    tied = made(src, "-s", style, "-o", tmp_path / "out.webp", "--animation")
    assert tied.tied and tied.params.temporal_weight > 0
    once = made(gif(tmp_path / "once.gif", loop=None), "-s", style, "-o", tmp_path / "o.gif")
    assert (once.loop, once.loop_count) == (False, None)


def test_frame_files_with_animation_are_a_clip_named_after_them(tmp_path):
    files = [png(tmp_path / f"f{i}.png", colour=(i, 0, 0)) for i in range(3)]
    out = tmp_path / "frames"
    out.mkdir()
    req = made(*files, "--animation", "-s", files[0], "-o", out)
    assert type(req) is ClipRequest and req.tied and req.into_folder
    assert req.names == ("f0.png", "f1.png", "f2.png") and req.durations == (100, 100, 100)
    assert (req.loop, req.loop_count) == (False, None)
    looped = made(*files, "--animation", "--loop", "-s", files[0], "-o", tmp_path / "a.gif")
    assert (looped.loop, looped.loop_count, looped.into_folder) == (True, 0, False)


def test_several_images_without_animation_are_a_batch_into_a_folder(tmp_path):
    a, b = png(tmp_path / "a.png", (40, 30)), png(tmp_path / "b.jpg", (20, 10))
    out = tmp_path / "out"
    out.mkdir()
    req = made(a, b, "-s", a, "-o", out)
    assert type(req) is BatchRequest
    assert [c.size for c in req.contents] == [(40, 30), (20, 10)]
    assert req.names == ("a.png", "b.png") and req.output == str(out)


@pytest.mark.parametrize("argv, words", [
    (["A", "-s", "A", "-o", "OUT/x.bmp"], "unsupported extension '.bmp'"),
    (["A", "-s", "A", "-o", "OUT/nope/x.png"], "does not exist"),
    (["A", "B", "-s", "A", "-o", "OUT/x.png"], "a batch: -o must be an existing folder"),
    (["A", "SAME", "-s", "A", "-o", "OUT"], "the same file name"),
    (["A", "B", "--animation", "-s", "A", "-o", "OUT/x.bmp"], "the extension must be .gif"),
    (["A", "B", "--animation", "-s", "A", "-o", "OUT/nope/"], "the folder does not exist"),
    (["A", "-s", "A", "-s", "B", "--style-weights", "1", "-o", "OUT/x.png"],
     "1 values but 2 style"),
    (["A", "-s", "A", "--style-weights", "a,b", "-o", "OUT/x.png"], "numbers separated"),
    (["A", "-s", "A", "--preset", "no-such-preset", "-o", "OUT/x.png"], "no-such-preset"),
])
def test_wrong_arguments_are_refused_before_any_image_is_read(tmp_path, reads, argv, words):
    a = png(tmp_path / "a.png")
    b = png(tmp_path / "b.png")
    (tmp_path / "sub").mkdir()
    same = png(tmp_path / "sub" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    paths = {"A": str(a), "B": str(b), "SAME": str(same)}
    argv = [paths.get(x, x.replace("OUT", str(out))) for x in argv]
    with pytest.raises(EngineError) as e:  # InvalidInput, or PresetError for the preset
        made(*argv)
    assert words in e.value.user_text()
    assert reads == [] and list(out.iterdir()) == []


@pytest.mark.parametrize("case, words", [
    ("sizes", "frame 1 is 40x30 px, frame 2 is 30x40 px"),
    ("one frame", "single frame"),
    ("animated frame file", "is itself an animation"),
    ("style", "Image file not found"),
])
def test_frames_and_styles_that_cannot_be_styled_are_refused(tmp_path, case, words):
    a = png(tmp_path / "a.png", (40, 30))
    contents = {"sizes": [a, png(tmp_path / "b.png", (30, 40)), "--animation"],
                "one frame": [a, "--animation"],
                "animated frame file": [a, gif(tmp_path / "in.gif"), "--animation"],
                "style": [a]}[case]
    style = tmp_path / "missing.png" if case == "style" else a
    with pytest.raises(InvalidInput) as e:
        made(*contents, "-s", style, "-o", tmp_path / ("out.png" if case == "style" else
                                                       "out.gif"))
    assert words in e.value.message


def test_the_request_is_made_without_torch(tmp_path):
    """Everything before the model is torch-free: a refused command line answers at once."""
    photo = png(tmp_path / "photo.png")
    code = (f"import sys; from nst_engine import cli\n"
            f"from nst_engine.stylize_cli.request import request_from_args\n"
            f"args = cli._parser().parse_args(['stylize', {str(photo)!r}, '-s', "
            f"{str(photo)!r}, '-o', {str(tmp_path / 'out.png')!r}])\n"
            f"assert type(request_from_args(args)).__name__ == 'StillRequest'\n"
            f"assert cli.main(['stylize', {str(photo)!r}, '-s', {str(photo)!r}, '-o', "
            f"{str(tmp_path / 'out.bmp')!r}]) == 2\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]" and "unsupported extension" in done.stderr


def test_a_batch_with_two_inputs_of_one_name_is_refused_before_the_weights_load(tmp_path,
                                                                                capsys):
    (tmp_path / "x").mkdir()
    a, same = png(tmp_path / "a.png"), png(tmp_path / "x" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["stylize", str(a), str(same), "-s", str(a), "-o", str(out), "--weights",
                     str(tmp_path / "no-weights.pth")]) == 2
    err = capsys.readouterr().err
    assert "the same file name" in err and "weights" not in err.lower()


# --- a clip whose frame fails: the frames done are kept (fake frames: no optimisation) ------

@pytest.fixture
def third_frame_fails(monkeypatch):
    """Frames 1 and 2 come back as they went in; frame 3 raises what ``failure`` holds."""
    from nst_engine.transfer import animation
    failure: list[BaseException] = []

    def frame(self, content, **kw):
        self.count += 1
        if self.count == 3:
            raise failure[0]
        return content
    monkeypatch.setattr(animation.Animation, "frame", frame)
    return failure


def _styles_gif(tmp_path, out, weights, *more):
    return cli.main(["stylize", str(gif(tmp_path / "in.gif")), "-s",
                     str(png(tmp_path / "paint.png")), "-o", str(out), "--weights", str(weights),
                     "--device", "cpu", "-q", *more])


def test_a_failed_frame_of_a_folder_output_says_the_frames_done_are_there(
        tmp_path, random_weights_file, third_frame_fails, capsys):
    third_frame_fails.append(NumericalError("The optimisation diverged.", "Lower it."))
    out = tmp_path / "frames"
    out.mkdir()
    assert _styles_gif(tmp_path, out, random_weights_file) == 2
    err = capsys.readouterr().err
    assert (f"Frame 3 of 3 failed: The optimisation diverged. The 2 frame(s) done are in "
            f"'{out}' (in-001.png ...).\nLower it.") in err
    assert sorted(p.name for p in out.iterdir()) == ["in-001.png", "in-002.png"]


def test_a_bug_in_a_frame_surfaces_as_itself_with_the_frames_done_kept(
        tmp_path, random_weights_file, third_frame_fails, capsys):
    third_frame_fails.append(ZeroDivisionError("a bug"))
    out = tmp_path / "out.gif"
    with pytest.raises(ZeroDivisionError):  # a traceback, not a user's error message
        _styles_gif(tmp_path, out, random_weights_file)
    kept = tmp_path / "out-frames-done"
    assert f"note: frame 3 of 3 failed. The 2 frame(s) done were saved in '{kept}'." in \
        capsys.readouterr().err
    assert sorted(p.name for p in kept.iterdir()) == ["in-001.png", "in-002.png"]
    assert not out.exists()
