"""Animations on CUDA and Apple MPS (issue 31, items 1, 2, 5 and 6's device side), tested on
the CPU by faking what the engine asks torch: the device type, the torch version, the copies.

- MPS: the once-per-frame warps and masks run on the host; the reverse (loop) term samples by
  ``warp.BilinearMap``, whose backward needs no MPS grid sampler.
- CUDA: the same map makes the loop term's backward free of atomics: passes that each add into
  distinct pixels, so a seed repeats.
- Per-frame costs: one flow upload per frame (pinned, not waited for, on CUDA), the flows of a
  frame computed together, the next frame's ahead on a GPU, the device's cache kept between the
  frames of a clip that goes on and handed back when it ends, fails or goes quiet.

What these cannot show (the real kernels, their speed) is pending a GPU.
"""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nst_engine.server import jobs as jobs_module
from nst_engine.transfer import warp

GEN = torch.Generator().manual_seed(5)


def smooth_flow(h: int, w: int, amp: float = 3.0, dtype=torch.float32) -> torch.Tensor:
    """A smooth flow with zoom-like contraction and pixels leaving the frame."""
    coarse = torch.randn(1, 2, 4, 5, generator=GEN, dtype=torch.float64) * amp
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True).to(dtype)


def grid_sampled(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    grid = torch.stack((c[..., 0] * (2.0 / max(w - 1, 1)) - 1.0,
                        c[..., 1] * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


# ------------------------------------------------------------------ the gather-based sampler

@pytest.mark.parametrize("hw", [(24, 32), (7, 1), (1, 9), (13, 17)])
def test_the_bilinear_map_is_grid_sample_and_its_gradient(hw):
    h, w = hw
    x = torch.rand(1, 3, h, w, generator=GEN, dtype=torch.float64, requires_grad=True)
    c = warp.coords(smooth_flow(h, w, dtype=torch.float64))
    target = torch.rand(1, 3, h, w, generator=GEN, dtype=torch.float64)
    (grid_sampled(x, c) - target).pow(2).sum().backward()
    expected, x.grad = x.grad.clone(), None
    bmap = warp.BilinearMap(c, (h, w))
    out = bmap.sample(x)
    assert torch.allclose(out, grid_sampled(x, c), atol=1e-9)
    (out - target).pow(2).sum().backward()
    assert torch.allclose(x.grad, expected, atol=1e-9)


def test_the_maps_backward_adds_into_distinct_pixels_each_pass_and_repeats_bit_for_bit():
    h, w = 40, 56
    c = warp.coords(smooth_flow(h, w, amp=6.0))
    mask = (torch.rand(1, 1, h, w, generator=GEN) > 0.2).float()
    bmap = warp.BilinearMap(c, (h, w), mask)
    assert len(bmap.passes) > 4  # contraction: several entries land on one pixel
    for src, _, _ in bmap.passes:  # no two adds to one place within a pass: no atomic race
        assert src.unique().numel() == src.numel()
    carried = sum(int(s.numel()) for s, _, _ in bmap.passes)
    assert carried == int(((bmap.weight > 0) & (mask.reshape(1, -1) > 0)).sum())
    grad = torch.rand(3, h * w, generator=GEN) * mask.reshape(1, -1)
    dense = torch.zeros(h * w, h * w)  # the adjoint written out: [source, output]
    for k in range(4):
        dense.index_put_((bmap.index[k], torch.arange(h * w)), bmap.weight[k], accumulate=True)
    assert torch.allclose(bmap.transpose(grad), grad @ dense.T, atol=1e-5)
    assert torch.equal(bmap.transpose(grad), bmap.transpose(grad))


def test_the_reverse_term_by_gather_matches_grid_sample_whole_and_in_tiles():
    h, w = 24, 32
    x = torch.rand(1, 3, h, w, generator=GEN, requires_grad=True)
    earlier = torch.rand(1, 3, h, w, generator=GEN)
    mask = (torch.rand(1, 1, h, w, generator=GEN) > 0.3).float()
    reverse = [(earlier, mask, warp.coords(smooth_flow(h, w)))]
    for ys, xs in [(slice(0, h), slice(0, w)), (slice(4, 20), slice(10, 32))]:
        grads = []
        for gather in (False, True):
            term = warp.TemporalTerm([], 2.0, reverse, gather=gather).crop(ys, xs)
            x.grad = None
            loss = term(x[..., ys, xs])
            loss.backward()
            grads.append((float(loss.detach()), x.grad.clone()))
        assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
        assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


# ------------------------------------------------------------------ decisions per device

@pytest.mark.parametrize("version", [(2, 2), (2, 6), (2, 10), (3, 0)])
def test_mps_warps_on_the_host_until_a_torch_is_known_to_have_the_sampler(monkeypatch,
                                                                          version):
    mps, cuda, cpu = torch.device("mps"), torch.device("cuda"), torch.device("cpu")
    assert warp.grid_sample_works(mps, version) is False  # no release known: conservative
    assert warp.warp_device(mps, version) == cpu
    assert warp.warp_device(cuda, version) == cuda and warp.warp_device(cpu, version) == cpu
    monkeypatch.setattr(warp, "MPS_GRID_SAMPLE_TORCH", (2, 10))  # once one is verified
    assert warp.grid_sample_works(mps, version) is (version >= (2, 10))


def test_the_reverse_term_gathers_on_cuda_and_mps_and_keeps_grid_sample_on_the_cpu():
    assert warp.reverse_by_gather(torch.device("cuda")) is True   # no atomics: seeds repeat
    assert warp.reverse_by_gather(torch.device("mps")) is True    # no MPS backward otherwise
    assert warp.reverse_by_gather(torch.device("cpu")) is False   # faster there, serial


def test_a_warp_on_a_device_without_the_sampler_is_the_hosts(monkeypatch):
    img = torch.rand(1, 3, 12, 16, generator=GEN)
    flow = smooth_flow(12, 16)
    direct = warp.warp(img, flow, "bicubic")
    asked = []  # the first call says "not here", the host's own call computes
    monkeypatch.setattr(warp, "grid_sample_works",
                        lambda dev, version=None: asked.append(dev) or len(asked) > 1)
    assert torch.equal(warp.warp(img, flow, "bicubic"), direct) and len(asked) == 2


@pytest.mark.parametrize("kind,pinned,non_blocking", [("cuda", True, True),
                                                      ("cpu", False, False)])
def test_a_frames_flows_travel_in_one_copy_pinned_on_cuda(monkeypatch, kind, pinned,
                                                           non_blocking):
    pins, copies = [], []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pins.append(1) or self)
    monkeypatch.setattr(warp, "_copy", lambda host, dev, nb: copies.append((dev, nb)) or host)
    flows = [np.random.default_rng(i).random((6, 8, 2), dtype=np.float32) for i in range(8)]
    out = warp.upload(flows, torch.device(kind))
    assert copies == [(torch.device(kind), non_blocking)] and bool(pins) is pinned
    assert len(out) == 8 and all(t.shape == (1, 2, 6, 8) for t in out)
    assert torch.equal(out[3], warp.flow_tensor(flows[3]))


# ------------------------------------------------------------------ flows

def test_flows_computed_together_are_the_ones_computed_alone():
    pytest.importorskip("cv2")
    from nst_engine.testing import synthetic_clip
    from nst_engine.transfer.flow import Flow, grey
    frames = [grey(f) for f in synthetic_clip(4, (48, 64), seed=3)[0]]
    pairs = [(frames[0], f) for f in frames[1:]] + [(f, frames[0]) for f in frames[1:]]
    flow = Flow()
    alone = [flow(a, b) for a, b in pairs]
    together = flow.many(pairs)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


# ------------------------------------------------------------------ a frame on a faked MPS


def _animation(weights, loop=True, frames=4):
    pytest.importorskip("cv2")
    from PIL import Image
    from nst_engine import StyleParams
    from nst_engine.testing import synthetic_clip
    from nst_engine.transfer.animation import Animation
    clip = [Image.fromarray(f) for f in synthetic_clip(frames, (24, 32), seed=4)[0]]
    style = Image.fromarray((np.indices((16, 16)).sum(0) % 2 * 200).astype(np.uint8)) \
        .convert("RGB")
    params = StyleParams(max_size=64, levels=1, iterations=2, seed=1, full_resolution="never")
    return Animation(styles=[(style, 1.0)], params=params, frames=frames, loop=loop,
                     device="cpu", weights=weights), clip


def test_an_mps_frame_warps_on_the_host_and_computes_the_next_frames_flows_ahead(
        random_weights_file, monkeypatch):
    from nst_engine.transfer.animation import FrameHook, FrameStats
    anim, clip = _animation(random_weights_file)
    anim.frame(clip[0])
    anim.frame(clip[1])
    uploads = []
    real_upload = warp.upload
    monkeypatch.setattr(warp, "upload", lambda f, dev: uploads.append((len(f), dev))
                        or real_upload(f, dev))
    mps = torch.device("mps")  # only named: everything this frame makes must be on the host
    hook = FrameHook(anim, clip[2], FrameStats(3), upcoming=clip[3])
    hook.hw = anim.kept[0].rgb.shape[:2]
    start = hook.start(mps)
    assert start.device.type == "cpu"
    assert uploads == [(4, torch.device("cpu"))]  # both ways to frames 2 and 1: one copy
    assert all(t.device.type == "cpu" for pair in hook.targets for t in pair)
    assert [v.device.type for v in hook.reverse[0]] == ["cpu"] * 3
    assert anim.ahead is not None and anim.ahead.index == 4  # the next frame's, in a thread
    hook.keep(start)
    anim.count += 1
    # The next frame takes the flows computed ahead: the same as computed then.
    ahead = anim.ahead
    fresh = ahead.take(4, ahead.cur)
    monkeypatch.setattr(anim.flow, "many", lambda pairs: pytest.fail(f"recomputed {pairs}")
                        if pairs else [])
    nxt = FrameHook(anim, clip[3], FrameStats(4))
    nxt.hw = hook.hw
    nxt.start(mps)
    assert anim.ahead is None
    back, fwd = fresh[3]
    from nst_engine.transfer.flow import grey
    assert np.array_equal(back, anim.flow(ahead.cur, grey(anim.kept[0].rgb)))
    assert fwd.shape == back.shape


def test_the_cpu_computes_no_flows_ahead(random_weights_file):
    anim, clip = _animation(random_weights_file, loop=False, frames=3)
    anim.frame(clip[0], upcoming=clip[1])
    anim.frame(clip[1], upcoming=clip[2])
    assert anim.ahead is None  # the CPU's cores run the optimisation


def test_a_loop_clip_by_the_gather_sampler_is_the_grid_sample_one(random_weights_file,
                                                                  monkeypatch):
    """The loop term as CUDA and MPS run it, on the CPU: the same frames within rounding."""
    outs = []
    for gather in (False, True):
        monkeypatch.setattr(warp, "reverse_by_gather", lambda dev, g=gather: g)
        anim, clip = _animation(random_weights_file)
        outs.append([np.asarray(anim.frame(f), np.float32) for f in clip])
    for a, b in zip(*outs):
        assert np.abs(a - b).max() <= 2  # 8-bit results of float sums in another order


# ------------------------------------------------------------------ the device's cache


@pytest.fixture
def fake_cuda_cache(monkeypatch):
    released = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append(time.monotonic()))
    return released


class _Client:
    """A session as the queue sees it: its clip goes on until ``ends`` frames are done;
    ``log``: how often the cache was handed back before each of its jobs."""

    def __init__(self, released: list, ends: int | None = None) -> None:
        self.clip, self.ends, self.done = None, ends, 0
        self.released, self.log = released, []

    def send(self, header, *parts) -> bool:
        return True

    def run_job(self, request, cancel) -> None:
        if request.header.get("animation"):
            self.done += 1
            self.clip = None if self.done == self.ends else object()
        self.log.append(len(self.released))


def _work(queue, items, timeout=5.0, until=None):
    stopping = threading.Event()
    for client, req in items:
        queue.submit(client, req, threading.Event())
    t = threading.Thread(target=queue.work, args=(stopping,))
    t.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (queue.busy() or (until and not until())):
        time.sleep(0.02)
    stopping.set()
    t.join()


def _req(anim: bool):
    from nst_engine.bridge import wire
    h = {"type": "stylize", "id": 1}
    if anim:
        h["animation"] = {"clip": "c", "frame": 1, "frames": 3}
    return wire.Message(h, bytearray())


def test_the_cache_stays_between_a_clips_frames_and_goes_after_stills_and_its_end(
        fake_cuda_cache, monkeypatch):
    monkeypatch.setattr(jobs_module, "CACHE_IDLE_SECONDS", 60.0)
    queue = jobs_module.Jobs()
    clip, other = _Client(fake_cuda_cache, ends=3), _Client(fake_cuda_cache)
    _work(queue, [(clip, _req(True)), (clip, _req(True)), (other, _req(False)),
                  (clip, _req(True))])
    # Before each job: how often the cache was handed back. Frames 1-2: kept; the still after
    # frame 2 hands it back; frame 3 ended the clip: back again.
    assert clip.log == [0, 0, 1] and other.log == [0]
    assert len(fake_cuda_cache) == 2


def test_a_clip_that_goes_quiet_hands_the_cache_back(fake_cuda_cache, monkeypatch):
    monkeypatch.setattr(jobs_module, "CACHE_IDLE_SECONDS", 0.1)
    queue = jobs_module.Jobs()
    clip = _Client(fake_cuda_cache, ends=5)
    _work(queue, [(clip, _req(True))], until=lambda: fake_cuda_cache)
    assert clip.log == [0] and len(fake_cuda_cache) == 1 and not queue.cache_kept


def test_a_session_that_ends_or_fails_a_frame_hands_its_clips_memory_back(
        random_weights_file, fake_cuda_cache):
    """Item 6's device side on a real session: an ended session, and a failed frame (the clip
    is dropped), each hand the cache back once the clip's frames are freed."""
    pytest.importorskip("cv2")
    from nst_engine.server.session import Session
    for ending in ("session", "failed frame"):
        fake_cuda_cache.clear()
        session = Session(SimpleNamespace(device="cpu", weights=str(random_weights_file)),
                          io.BytesIO(), io.BytesIO(), jobs_module.Jobs())
        session._ended = lambda why: None
        session.run_job(make_request(1, 1), threading.Event())
        assert session.clip is not None and not fake_cuda_cache
        if ending == "session":
            session.stop(0, "client gone")
        else:  # cancelled while it is styled: the clip cannot go on
            session.run_job(make_request(2, 2), _SetAfter(1))
        assert session.clip is None
        assert jobs_module.clip_goes_on(session, make_request(3, 2)) is False
        if ending == "session":
            assert len(fake_cuda_cache) == 1


def make_request(rid, n):
    """A checked ``stylize`` for frame ``n`` of a 3-frame clip (tests/test_serve_clip.py's)."""
    from nst_engine.bridge import wire
    from nst_engine.bridge.wire import CLIENT_TYPES
    from nst_engine.testing import synthetic_clip
    frame = synthetic_clip(3, (24, 32), seed=4)[0][n - 1]
    content = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)]).tobytes()
    style = bytes((200 * (x // 4 % 2), 60, 255 - 8 * y, 255)[c]
                  for y in range(16) for x in range(16) for c in range(4))
    header = {"type": "stylize", "id": rid, "protocol": wire.PROTOCOL_VERSION, "preset": None,
              "overrides": {"iterations": 2, "max_size": 64, "levels": 1, "seed": 1},
              "device": "cpu",
              "images": [{"role": "content", "width": 32, "height": 24},
                         {"role": "style", "width": 16, "height": 16, "weight": 1.0}],
              "animation": {"clip": "c1", "frame": n, "frames": 3, "loop": False}}
    wire.check_message(header, len(content) + len(style), CLIENT_TYPES)
    return wire.Message(header, bytearray(content + style))


class _SetAfter:
    """Clear for the first ``checks`` looks (``run_job``'s own), then set: the frame is
    cancelled while it is styled."""

    def __init__(self, checks: int) -> None:
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0
