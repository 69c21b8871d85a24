"""Animations: flow, warping, masks and the temporal loss on synthetic frames with a known
motion (``nst_engine.testing.synthetic_clip``: a textured square moving over a textured
background), the frame loop's coherence against independent frames, loop mode, animated
files and the CLI's messages for bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nst_engine.errors import InvalidInput
from nst_engine.testing import synthetic_clip, texture
from nst_engine.transfer import warp

cv2 = pytest.importorskip("cv2", reason="animations need opencv-python-headless (test extra)")

from nst_engine.transfer.flow import Flow, grey  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_serve's helpers

HW = (72, 96)
SPEED = (3.0, 1.0)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255.0


def _band(covers, width: int) -> np.ndarray:
    """Pixels within ``width`` px of the square's edges in any of ``covers``."""
    edge = torch.tensor(np.logical_or.reduce(covers).astype(np.float32))[None, None]
    k = 2 * width + 1
    dil = F.max_pool2d(edge, k, 1, width)
    ero = -F.max_pool2d(-edge, k, 1, width)
    band = (dil - ero)[0, 0].numpy() > 0
    band[:width] = band[-width:] = True
    band[:, :width] = band[:, -width:] = True
    return band


@pytest.fixture(scope="module")
def clip():
    # A square large enough to have an inside more than a DIS patch from its edges.
    return synthetic_clip(4, (96, 128), speed=SPEED, seed=3, square=44)


def test_warping_with_the_true_flow_reproduces_the_next_frame(clip):
    frames, flows, covered = clip
    for t in range(len(flows)):
        nxt, prev = _t(frames[t + 1]), _t(frames[t])
        back = warp.flow_tensor(flows[t])
        warped = warp.warp(prev, back)
        # Visible: not disoccluded (under the square before, background now), inside the frame.
        visible = torch.tensor(~(covered[t] & ~covered[t + 1]))[None, None].float()
        visible = visible * warp.in_frame(back)
        diff = (warped - nxt).abs().amax(dim=1, keepdim=True)
        assert float((diff * visible).max()) < 1e-3
        # ... and the disoccluded strip is where it does not (the test can fail).
        strip = torch.tensor(covered[t] & ~covered[t + 1])
        assert float(diff[0, 0][strip].mean()) > 0.02


def test_dis_flow_is_within_half_a_pixel_away_from_motion_boundaries(clip):
    frames, flows, covered = clip
    flow = Flow()
    for t in range(len(flows)):
        est = flow(grey(frames[t + 1]), grey(frames[t]))
        err = np.linalg.norm(est - flows[t], axis=-1)
        # "Away": more than one DIS patch (8 px) from the square's edges and the frame's.
        away = ~_band([covered[t], covered[t + 1]], 8)
        assert away.mean() > 0.3
        assert np.percentile(err[away], 99) <= 0.5, np.percentile(err[away], 99)
        assert err[away].mean() <= 0.15
        # On the moving square itself the flow is the square's motion, not the background's.
        inner = covered[t + 1] & away
        assert np.abs(est[inner] - SPEED * np.array([-1, -1])).max(axis=-1).mean() < 0.5


def test_the_mask_finds_the_disoccluded_strip(clip):
    frames, _, covered = clip
    flow = Flow()
    a, b = grey(frames[2]), grey(frames[1])
    mask = warp.consistency(warp.flow_tensor(flow(a, b)), warp.flow_tensor(flow(b, a)))[0, 0]
    strip = torch.tensor(covered[1] & ~covered[2])
    assert strip.sum() >= 20
    assert float(mask[strip].mean()) < 0.1           # left out where the square uncovered it
    away = torch.tensor(~_band([covered[1], covered[2]], 4) & ~(covered[1] & ~covered[2]))
    assert float(mask[away].mean()) > 0.9            # trusted almost everywhere else


def test_out_of_frame_and_long_term_masks():
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 3.0  # everything comes from 3 px to the right
    inside = warp.in_frame(flow)[0, 0]
    assert inside[:, :7].eq(1).all() and inside[:, 7:].eq(0).all()
    near = torch.tensor([[1.0, 0.0, 0.0, 1.0]]).view(1, 1, 1, 4)
    mid = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).view(1, 1, 1, 4)
    far = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).view(1, 1, 1, 4)
    out = warp.long_term([near, mid, far])
    assert out[0].flatten().tolist() == [1, 0, 0, 1]
    assert out[1].flatten().tolist() == [0, 1, 0, 0]   # only what the nearest frame misses
    assert out[2].flatten().tolist() == [0, 0, 1, 0]


def test_temporal_term_is_the_masked_mean_square_and_crops():
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    target = torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1.0
    term = warp.TemporalTerm([(target, mask)], weight=2.0)
    assert float(term(x).detach()) == pytest.approx(2.0 * 0.5)   # half the pixels, error 1
    term(x).backward()
    assert float(x.grad[..., 2:, :].abs().max()) == 0.0  # masked pixels get no gradient
    assert float(term.crop(slice(2, 4), slice(0, 4))(x[..., 2:, :]).detach()) == 0.0


def test_the_reverse_term_compares_an_earlier_frame_where_its_pixels_went():
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    earlier = x.roll(-1, dims=-1)  # the picture moved one pixel to the right since
    shift = torch.zeros(1, 2, 4, 4)
    shift[:, 0] = 1.0  # each earlier pixel went one pixel right
    mask = torch.ones(1, 1, 4, 4)
    mask[..., -1] = 0.0  # the last column left the frame
    term = warp.TemporalTerm([], 1.0, [(earlier, mask, warp.coords(shift))])
    assert float(term(x)) == pytest.approx(0.0, abs=1e-6)
    assert float(term(x.roll(1, dims=-1))) > 0.01  # not where they went: an error
    # A tile keeps the earlier pixels that went into it, in its own coordinates.
    right = term.crop(slice(0, 4), slice(2, 4))
    assert float(right(x[..., 2:])) == pytest.approx(0.0, abs=1e-6)
    assert float(right.reverse[0][1].sum()) == 4 * 2  # columns 1 and 2 went to 2 and 3


# --- the frame loop (needs the pipeline's frame hook) -------------------------------------

def _small_params(**kw):
    from nst_engine.params import StyleParams
    return StyleParams(max_size=96, levels=2, iterations=40, seed=5, learning_rate=0.05,
                       full_resolution="never").with_overrides(**kw)


def _style():
    return Image.fromarray((texture((96, 96), 11)[..., ::-1] * 255).astype(np.uint8))


def _warping_errors(outs, frames, gap=1):
    """Lai et al.'s warping error, with the same DIS flows and masks for every condition."""
    flow, errs = Flow(), []
    for t in range(len(outs) - gap):
        a, b = grey(frames[t + gap]), grey(frames[t])
        back, fwd = warp.flow_tensor(flow(a, b)), warp.flow_tensor(flow(b, a))
        errs.append(warp.warping_error(_t(np.asarray(outs[t + gap])),
                                       warp.warp(_t(np.asarray(outs[t])), back),
                                       warp.consistency(back, fwd)))
    return errs


def _run(frames, params, weights, loop=False):
    from nst_engine.transfer.animation import Animation
    anim = Animation(styles=[(_style(), 1.0)], params=params, frames=len(frames), loop=loop,
                     device="cpu", weights=weights)
    outs = [anim.frame(Image.fromarray(f)) for f in frames]
    return outs, anim


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from nst_engine.testing import make_random_vgg19_file
    return make_random_vgg19_file(tmp_path_factory.mktemp("w") / "random-vgg19.pth")


@pytest.fixture(scope="module")
def moving():
    frames, _, _ = synthetic_clip(4, HW, speed=(4.0, 1.0), pan=(2.0, 0.0), seed=8)
    return frames


@pytest.fixture(scope="module")
def independent(moving, weights):
    return _run(moving, _small_params(temporal_weight=0.0), weights)


def test_temporal_loss_halves_the_warping_error(moving, weights, independent):
    ind_outs, ind = independent
    tmp_outs, tmp = _run(moving, _small_params(), weights)
    e_ind = np.mean(_warping_errors(ind_outs, moving))
    e_tmp = np.mean(_warping_errors(tmp_outs, moving))
    assert e_tmp <= 0.5 * e_ind, (e_tmp, e_ind)
    # The frames after the first ran one level with at most FRAME_COST of a still's work, tied
    # to every earlier frame the losses use (1 and 2 back for frame 3).
    from nst_engine.transfer.animation import FRAME_COST
    assert [s.levels for s in tmp.stats] == [2, 1, 1, 1]
    assert [s.terms for s in tmp.stats] == [0, 1, 2, 2]
    assert all(s.steps <= FRAME_COST * 40 * (1 + 1 / 4) for s in tmp.stats[1:])
    assert [s.terms for s in ind.stats] == [0, 0, 0, 0]
    # Each result keeps the frame's size.
    assert all(o.size == (HW[1], HW[0]) for o in tmp_outs)


@pytest.fixture(scope="module")
def looping():
    """A clip that loops: forward then back (0, 1, 2, 1, then 0 again): the way from the last
    frame to the first is one frame's motion, as in any looping animation."""
    frames, _, _ = synthetic_clip(3, HW, speed=(4.0, 1.0), pan=(2.0, 0.0), seed=8)
    return frames + frames[1:2]


def test_loop_mode_closes_the_loop_like_any_other_step(looping, weights):
    outs_open, open_ = _run(looping, _small_params(), weights)
    outs_loop, loop = _run(looping, _small_params(), weights, loop=True)
    # Open: frame 4 is tied to frames 3 and 2 (1 and 2 back). Loop: every later frame also
    # leans on frame 1, both ways (the way back spread over the clip).
    assert [s.terms for s in open_.stats] == [0, 1, 2, 2]
    assert [s.terms for s in loop.stats] == [0, 3, 4, 4]
    assert loop.loop_share(2) == 1 / 4 and loop.loop_share(4) == 1 / 2
    assert np.array_equal(np.asarray(outs_loop[0]), np.asarray(outs_open[0]))

    def closing(outs):  # the last frame against the first, warped onto it
        return _warping_errors([outs[-1], outs[0]], [looping[-1], looping[0]])[0]
    adjacent = np.median(_warping_errors(outs_loop, looping))
    # Measured on a 2-core Xeon: closure / median adjacent 1.26 (float32 and bfloat16), the
    # issue's bar 1.5; closure loop / open 0.32 and 0.34.
    assert closing(outs_loop) <= 1.5 * adjacent, (closing(outs_loop), adjacent)
    assert closing(outs_loop) < 0.7 * closing(outs_open), (closing(outs_loop),
                                                           closing(outs_open))


def test_frames_of_another_size_are_refused(weights):
    from nst_engine.transfer.animation import Animation
    anim = Animation(styles=[(_style(), 1.0)], params=_small_params(iterations=2, levels=1),
                     device="cpu", weights=weights)
    anim.frame(Image.new("RGB", (64, 48), (90, 40, 20)))
    with pytest.raises(InvalidInput, match=r"Frame 2 is 48x64 px, but the animation's frames "
                                           r"are 64x48 px"):
        anim.frame(Image.new("RGB", (48, 64)))


def test_seamless_frames_are_refused_unless_independent(weights):
    from nst_engine.transfer.animation import Animation
    with pytest.raises(InvalidInput, match="Seamless tiles and frames tied") as e:
        Animation(styles=[(_style(), 1.0)], params=_small_params(seamless=True),
                  device="cpu", weights=weights)
    assert "temporal weight to 0" in e.value.hint
    anim = Animation(styles=[(_style(), 1.0)], device="cpu", weights=weights,
                     params=_small_params(seamless=True, temporal_weight=0.0, iterations=2,
                                          levels=1, max_size=64))
    assert anim.frame(Image.new("RGB", (64, 64), (90, 40, 20))).size == (64, 64)


def test_without_opencv_stills_work_and_the_message_says_what_to_install(monkeypatch):
    import builtins
    from nst_engine.errors import FlowUnavailable
    from nst_engine.transfer.animation import Animation
    real = builtins.__import__

    def no_cv2(name, *a, **kw):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(FlowUnavailable) as e:
        Animation(styles=[(_style(), 1.0)], params=_small_params(), device="cpu")
    assert "pip install opencv-python-headless" in e.value.hint
    assert "install.py" in e.value.hint
    # temporal_weight 0: independent frames need no flow.
    Animation(styles=[(_style(), 1.0)], params=_small_params(temporal_weight=0.0),
              device="cpu")


# --- files and the command line -------------------------------------------------------------

def test_animated_gif_webp_apng_keep_delays_and_loop(tmp_path):
    from nst_engine.imageio import Clip, read_clip, write_clip
    frames, _, _ = synthetic_clip(3, (24, 32), seed=1)
    clip = Clip([Image.fromarray(f) for f in frames], [80, 120, 200], 0)
    for ext in (".gif", ".webp", ".apng"):
        write_clip(clip, tmp_path / f"a{ext}")
        back = read_clip(tmp_path / f"a{ext}")
        assert back.durations == [80, 120, 200], ext
        assert back.loop == 0, ext
        assert [f.size for f in back.frames] == [(32, 24)] * 3
        if ext != ".gif":  # lossless: the frames themselves
            assert np.array_equal(np.asarray(back.frames[2].convert("RGB")), frames[2])


def _cli(*argv):
    from nst_engine.cli import main
    return main([str(a) for a in argv])


def test_cli_refuses_bad_animations_before_any_work(tmp_path, capsys):
    a = tmp_path / "a.png"
    b = tmp_path / "b.png"
    Image.new("RGB", (40, 30)).save(a)
    Image.new("RGB", (30, 40)).save(b)
    out = tmp_path / "out.gif"
    assert _cli("stylize", a, b, "--animation", "-s", a, "-o", out, "--weights",
                tmp_path / "none.pth") == 2
    err = capsys.readouterr().err
    assert "frame 1 is 40x30 px, frame 2 is 30x40 px" in err and "same size" in err
    # One frame is no animation.
    assert _cli("stylize", a, "--animation", "-s", a, "-o", out) == 2
    assert "single frame" in capsys.readouterr().err
    # Several inputs without --animation are a batch: -o must be a folder.
    assert _cli("stylize", a, b, "-s", a, "-o", out) == 2
    assert "batch" in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_too_many_frames(tmp_path, capsys, monkeypatch):
    from nst_engine.stylize_cli import request
    monkeypatch.setattr(request, "MAX_FRAMES", 3)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"f{i}.png")
        Image.new("RGB", (40, 30), (i, 0, 0)).save(paths[-1])
    assert _cli("stylize", *paths, "--animation", "-s", paths[0], "-o", tmp_path) == 2
    assert "4 frames; one run styles at most 3" in capsys.readouterr().err


def test_cli_styles_an_animated_gif_and_keeps_the_frames_done_when_one_fails(
        tmp_path, weights, capsys, monkeypatch):
    from nst_engine.errors import NumericalError
    from nst_engine.imageio import Clip, read_clip, write_clip
    from nst_engine.transfer import animation
    frames, _, _ = synthetic_clip(3, (30, 40), seed=2)
    src = tmp_path / "in.gif"
    write_clip(Clip([Image.fromarray(f) for f in frames], [70, 90, 110], 0), src)
    style = tmp_path / "style.png"
    _style().save(style)
    out = tmp_path / "out.webp"
    common = ["-s", style, "--weights", weights, "--device", "cpu", "--max-size", "64",
              "--iterations", "4", "--seed", "1", "-q"]
    assert _cli("stylize", src, "--animation", "-o", out, *common) == 0
    back = read_clip(out)
    assert back.durations == [70, 90, 110] and back.loop == 0 and len(back.frames) == 3
    # Frame 3 fails: frames 1 and 2 are saved and the message says where.
    real = animation.Animation.frame

    def fail_third(self, content, **kw):
        if self.count == 2:
            raise NumericalError("The optimisation diverged.", "Lower the learning rate.")
        return real(self, content, **kw)
    monkeypatch.setattr(animation.Animation, "frame", fail_third)
    out2 = tmp_path / "out2.gif"
    assert _cli("stylize", src, "--animation", "-o", out2, *common) == 2
    err = capsys.readouterr().err
    kept = tmp_path / "out2-frames-done"
    assert "Frame 3 of 3 failed: The optimisation diverged." in err and str(kept) in err
    assert sorted(p.name for p in kept.iterdir()) == ["in-001.png", "in-002.png"]
    assert not out2.exists()


# --- the protocol: one stylize per frame, the clip kept in the engine ------------------------

def test_engine_keeps_the_clip_between_frames_and_refuses_frames_out_of_order(tmp_path,
                                                                              weights):
    from test_serve import TINY, content_image, make_client, serve_argv, style_image

    from nst_engine.bridge.client import EngineFailed
    from nst_engine.bridge.wire import RGBAImage
    frames, _, _ = synthetic_clip(3, (24, 32), seed=4)

    def rgba(a):
        return RGBAImage(a.shape[1], a.shape[0],
                         np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]).tobytes())
    with make_client(serve_argv(weights), tmp_path) as engine:
        engine.start()
        style = [(style_image(), 1.0)]

        def frame(i, n, clip="c1"):
            return engine.stylize(rgba(frames[i]), style, overrides=TINY, device="cpu",
                                  animation={"clip": clip, "frame": n, "frames": 3,
                                             "loop": True})
        with pytest.raises(EngineFailed) as e:  # a clip starts with frame 1
            frame(1, 2)
        assert e.value.code == "invalid_input" and "frame 1 was expected" in e.value.message
        out1 = frame(0, 1)
        with pytest.raises(EngineFailed) as e:  # frame 3 cannot follow frame 1
            frame(2, 3)
        assert "Frame 3 of animation 'c1' arrived, but frame 2 was expected" in e.value.message
        out2 = frame(1, 2)
        out3 = frame(2, 3)
        assert (out1.width, out1.height) == (out3.width, out3.height) == (32, 24)
        assert len({out1.data, out2.data, out3.data}) == 3
        with pytest.raises(EngineFailed) as e:  # the clip is over
            frame(2, 3)
        assert e.value.code == "invalid_input"
        # A still between (or after) animations is untouched by them.
        assert engine.stylize(content_image(), style, overrides=TINY, device="cpu").width == 24
