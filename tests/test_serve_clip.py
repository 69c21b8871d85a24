"""A session's animation (``server/clip.py``): the order of a clip's frames, frame 1's styles and
settings holding for every frame, and the kept frames freed as soon as the clip cannot go on.

In-process: a ``Session`` on byte buffers, its jobs run by calling ``run_job`` as the queue's
thread does. Random weights, CPU, tiny frames; the freeing is checked with weak references to
the state and to a kept result, with no garbage collection forced: "freed" means at once.
"""

from __future__ import annotations

import io
import threading
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from nst_engine.bridge import wire
from nst_engine.bridge.wire import CLIENT_TYPES, Msg, RGBAImage
from nst_engine.server.jobs import Jobs
from nst_engine.server.session import Session
from nst_engine.testing import synthetic_clip

pytest.importorskip("cv2", reason="frames tied by their motion need opencv-python-headless")

TINY = {"iterations": 2, "max_size": 64, "levels": 1, "seed": 1}
FRAMES = synthetic_clip(3, (24, 32), seed=4)[0]


class _Session(Session):
    def _ended(self, why: str) -> None:
        self.ended = why


def make_session(weights, inp: bytes = b"") -> _Session:
    args = SimpleNamespace(device="cpu", weights=str(weights))
    return _Session(args, io.BytesIO(inp), io.BytesIO(), Jobs())


def rgba(a: np.ndarray) -> RGBAImage:
    return RGBAImage(a.shape[1], a.shape[0],
                     np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]).tobytes())


def style(shade: int = 0) -> RGBAImage:
    return RGBAImage(16, 16, b"".join(bytes(((200 * (x // 4 % 2) + shade) % 256, 60,
                                             255 - 8 * y, 255))
                                      for y in range(16) for x in range(16)))


def request(rid, n, *, clip="c1", content=None, styles=None, frames=3, overrides=TINY,
            loop=False) -> wire.Message:
    """A checked ``stylize`` for frame ``n`` of ``clip``, as the session's reader gives it."""
    content = content if content is not None else rgba(FRAMES[n - 1])
    styles = styles if styles is not None else [(style(), 1.0)]
    header = {"type": Msg.STYLIZE, "id": rid, "protocol": wire.PROTOCOL_VERSION,
              "preset": None, "overrides": overrides, "device": "cpu",
              "images": [{"role": "content", "width": content.width, "height": content.height}]
              + [{"role": "style", "width": s.width, "height": s.height, "weight": w}
                 for s, w in styles],
              "animation": {"clip": clip, "frame": n, "frames": frames, "loop": loop}}
    payload = content.data + b"".join(s.data for s, _ in styles)
    wire.check_message(header, len(payload), CLIENT_TYPES)
    return wire.Message(header, bytearray(payload))


def run(session: Session, req: wire.Message, cancel=None) -> wire.Message:
    """Run the job as the queue would; its reply (result or error), progress skipped."""
    start = session.out.tell()
    session.run_job(req, cancel or threading.Event())
    stream = io.BytesIO(session.out.getvalue()[start:])
    replies = []
    while (msg := wire.read_message(stream, accept=wire.ENGINE_TYPES)) is not None:
        if msg.type != Msg.PROGRESS:
            replies.append(msg)
    assert len(replies) == 1, replies
    assert replies[0].header["id"] == req.header["id"]
    return replies[0]


def held(session: Session):
    """Weak references to the session's clip state and to one of its kept results."""
    anim = session.clip.animation
    assert anim.kept, "frame 1's result is kept for the next frames"
    return weakref.ref(anim), weakref.ref(anim.kept[0].image)


def assert_freed(session: Session, refs) -> None:
    assert session.clip is None
    assert all(r() is None for r in refs), "the clip's frames are still held"


class CancelAfter:
    """A cancel flag that is clear for its first ``checks`` looks (``run_job``'s, before the
    job starts), then set: the frame is cancelled while it is styled."""

    def __init__(self, checks: int) -> None:
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


# ------------------------------------------------------------------------- the styles rule

def test_frame_1s_styles_and_settings_hold_and_a_frame_asking_other_ones_is_refused(
        random_weights_file):
    s = make_session(random_weights_file)
    assert run(s, request(1, 1)).type == Msg.RESULT
    kept = s.clip
    refused = {
        "style images": request(2, 2, styles=[(style(shade=1), 1.0)]),  # one pixel value off
        "style images ": request(3, 2, styles=[(style(), 0.5)]),  # another weight
        "settings (overrides)": request(4, 2, overrides={**TINY, "iterations": 3}),
        "loop": request(5, 2, loop=True),
        "number of frames": request(6, 2, frames=4),
    }
    for what, req in refused.items():
        reply = run(s, req)
        assert reply.header["code"] == "invalid_input", what
        assert f"Frame 2 of animation 'c1' asks for other {what.strip()} than its frame 1" \
            in reply.header["message"]
        assert "send the same with every frame" in reply.header["hint"]
    other_size = run(s, request(7, 2, content=rgba(FRAMES[1][:20])))
    assert other_size.header["code"] == "invalid_input"
    assert "is 32x20 px, but its frame 1 is 32x24 px" in other_size.header["message"]
    # A refused frame changes nothing: the clip goes on with the frame it expects.
    assert s.clip is kept and s.clip.done == 1
    assert run(s, request(8, 2)).type == Msg.RESULT
    assert s.clip is kept and s.clip.done == 2


def test_frames_out_of_order_are_refused_and_the_clip_waits_for_the_right_one(
        random_weights_file):
    s = make_session(random_weights_file)
    first = run(s, request(1, 2))
    assert first.header["code"] == "invalid_input"
    assert "Frame 2 of animation 'c1' arrived, but frame 1 was expected" in first.header["message"]
    assert run(s, request(2, 1)).type == Msg.RESULT
    assert "but frame 2 was expected" in run(s, request(3, 3)).header["message"]
    assert "but frame 1 was expected" in run(s, request(4, 2, clip="c2")).header["message"]
    assert s.clip.id == "c1" and s.clip.done == 1
    assert run(s, request(5, 2)).type == Msg.RESULT
    refs = held(s)
    assert run(s, request(6, 3)).type == Msg.RESULT  # the last frame: the clip is over
    assert_freed(s, refs)
    assert run(s, request(7, 3)).header["code"] == "invalid_input"


# ------------------------------------------------------------------------- freeing

def test_a_new_clip_frees_the_unfinished_one(random_weights_file):
    s = make_session(random_weights_file)
    assert run(s, request(1, 1)).type == Msg.RESULT
    refs = held(s)
    assert run(s, request(2, 1, clip="c2")).type == Msg.RESULT
    assert s.clip.id == "c2"
    assert all(r() is None for r in refs), "the replaced clip's frames are still held"


def test_a_cancelled_frame_ends_its_clip_at_once(random_weights_file):
    s = make_session(random_weights_file)
    assert run(s, request(1, 1)).type == Msg.RESULT
    refs = held(s)
    reply = run(s, request(2, 2), cancel=CancelAfter(1))  # cancelled once it has started
    assert reply.header["code"] == "cancelled"
    assert_freed(s, refs)
    assert "but frame 1 was expected" in run(s, request(3, 2)).header["message"]


def test_a_frame_that_fails_after_its_result_was_kept_ends_its_clip(random_weights_file,
                                                                     monkeypatch):
    """Why a failed frame cannot be sent again: the state may already hold part of it."""
    from nst_engine.transfer import animation

    s = make_session(random_weights_file)
    assert run(s, request(1, 1)).type == Msg.RESULT
    refs = held(s)
    real_keep = animation.FrameHook.keep

    def keep_then_fail(self, image):
        real_keep(self, image)
        raise RuntimeError("injected after keep")
    monkeypatch.setattr(animation.FrameHook, "keep", keep_then_fail)
    reply = run(s, request(2, 2))
    assert reply.header["code"] == "internal" and "injected after keep" in reply.header["message"]
    assert_freed(s, refs)


def test_a_frame_cancelled_before_it_ran_leaves_the_clip(random_weights_file):
    s = make_session(random_weights_file)
    assert run(s, request(1, 1)).type == Msg.RESULT
    cancelled = threading.Event()
    cancelled.set()  # cancelled while it waited in the queue: never styled
    assert run(s, request(2, 2), cancel=cancelled).header["code"] == "cancelled"
    assert s.clip.done == 1
    assert run(s, request(3, 2)).type == Msg.RESULT


def test_a_session_that_ends_frees_its_clip(random_weights_file):
    s = make_session(random_weights_file)  # its input is empty: the client has gone
    assert run(s, request(1, 1)).type == Msg.RESULT
    refs = held(s)
    s.read_loop()
    assert s.ended == "end of input (the plug-in exited)"
    assert_freed(s, refs)


def test_an_ended_session_keeps_no_clip_from_a_frame_that_was_running(random_weights_file):
    s = make_session(random_weights_file)
    s.stop(0, "the client went away")
    run(s, request(1, 1))
    assert s.clip is None


def test_a_loop_clip_whose_frame_count_changes_is_refused_not_an_internal_error(
        random_weights_file):
    """Issue 35, item 8: a loop clip started with ``frames: 2``, then sent frames 2-4 of 4, ended
    frame 4 in ``internal`` (ZeroDivisionError: the session used frame 1's count with the later
    frames' numbers). Every such frame is refused before any work, with words a user can act on
    (``invalid_input``: the plug-in shows its message and hint), and the clip can still finish."""
    s = make_session(random_weights_file)
    assert run(s, request(1, 1, frames=2, loop=True)).type == Msg.RESULT
    kept = s.clip
    replies = [run(s, request(10 + n, n, frames=4, loop=True, content=rgba(FRAMES[(n - 1) % 3])))
               for n in (2, 3, 4)]
    assert [r.type for r in replies] == [Msg.ERROR] * 3
    assert [r.header["code"] for r in replies] == ["invalid_input"] * 3
    assert "Frame 2 of animation 'c1' asks for other number of frames than its frame 1" \
        in replies[0].header["message"]
    assert "start a new animation (frame 1)" in replies[0].header["hint"]
    for r in replies[1:]:  # frame 2 was refused, so these are out of order
        assert "but frame 2 was expected" in r.header["message"]
        assert "starting with frame 1" in r.header["hint"]
    assert s.clip is kept and s.clip.done == 1  # nothing changed: the clip may still finish
    assert run(s, request(20, 2, frames=2, loop=True)).type == Msg.RESULT
    assert s.clip is None
