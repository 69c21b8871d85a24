"""One session's animation in progress (``stylize`` with ``animation``): its typed state and the
rules a clip's frames follow (docs/PROTOCOL.md, "Animations").

- Frame 1 starts a clip and replaces an unfinished one, whose kept frames are dropped before
  the new clip keeps any. Frame ``n`` > 1 must follow frame ``n - 1`` of the same clip.
- Frame 1's request defines the clip: its style images and weights, ``preset``, ``overrides``,
  ``device``, ``frames`` and ``loop``, and its content's size. Every later frame must send the
  same (the plug-in does: one dialog's values for the whole run); one that differs is refused
  with ``invalid_input`` naming what differs. Why refuse rather than apply or ignore: each frame
  starts from and is tied to the results before it, so a style or setting that changed mid-clip
  would neither apply cleanly nor keep the clip coherent, and silently using frame 1's in place
  of what a client sent would surprise it.
- A refused frame (out of order, other styles, settings or size) changes nothing: the clip
  stays, and the frame it expects may still come.
- A frame that fails or is cancelled while it is styled ends its clip: the pipeline keeps a
  frame's result for the next ones before its last steps, so the state may hold part of the
  failed frame, and a resent frame would be tied to it. The kept frames are dropped at once; the
  client starts again with frame 1 (the plug-in stops and keeps the frames done, or sends the
  rest as a new clip to a fresh engine).
- After the last frame, and when the session ends, the clip is dropped.

Only the session touches its clip (``Session.clip``); this module holds no torch (the
``Animation`` is made by the session, from ``transfer.animation``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..bridge import wire
from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..transfer.animation import Animation


def asked_for(header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """What a checked ``stylize`` with ``animation`` asks of its clip, by the name a refusal
    uses: every frame of a clip must ask the same as its frame 1. The style images count by
    their sizes, weights and a digest of their bytes (not the bytes: a clip keeps no copy)."""
    images = header["images"]
    content, styles = images[0], images[1:]
    skip = content["width"] * content["height"] * 4
    digest = hashlib.blake2b(memoryview(payload)[skip:], digest_size=16).digest()
    anim = header["animation"]
    return {
        "style images": (tuple((im["width"], im["height"], float(im["weight"]))
                               for im in styles), digest),
        "preset": header.get("preset"),
        "settings (overrides)": header.get("overrides") or {},
        "device": header.get("device") or "auto",  # null and "auto" both mean the engine's
        "number of frames": anim["frames"],
        "loop": bool(anim.get("loop")),
    }


@dataclass
class Clip:
    """An animation a session is styling, frame by frame."""

    id: Any                  # the client's clip id (hashable: ``wire.check_request``)
    frames: int              # frames in the clip
    size: tuple[int, int]    # every frame's (width, height): frame 1's
    asked: dict[str, Any]    # ``asked_for`` frame 1: what every frame must ask
    animation: Animation     # ``transfer.animation.Animation``: the kept frames
    done: int = 0            # frames styled so far


def check_next(clip: Clip | None, header: dict[str, Any], payload: bytes) -> None:
    """Refuse (InvalidInput) a frame ``n`` > 1 that is not the next of ``clip`` (the session's;
    None: no clip started), or that asks for other styles, settings or size than its frame 1.
    Changes nothing either way."""
    anim = header["animation"]
    cid, n = anim["clip"], anim["frame"]
    name = f"Frame {n} of animation {wire.excerpt(cid)}"
    if clip is None or clip.id != cid or clip.done != n - 1:
        expected = 1 if clip is None or clip.id != cid else clip.done + 1
        raise InvalidInput(f"{name} arrived, but frame {expected} was expected.",
                           "Send an animation's frames in order, starting with frame 1.")
    asked = asked_for(header, payload)
    differs = [what for what in clip.asked if asked[what] != clip.asked[what]]
    if differs:
        raise InvalidInput(f"{name} asks for other {', '.join(differs)} than its frame 1.",
                           "An animation's frames share frame 1's style images and settings: "
                           "send the same with every frame, or start a new animation (frame 1) "
                           "to change them.")
    content = header["images"][0]
    size = (content["width"], content["height"])
    if size != clip.size:
        raise InvalidInput(f"{name} is {size[0]}x{size[1]} px, but its frame 1 is "
                           f"{clip.size[0]}x{clip.size[1]} px.",
                           "Every frame of an animation must have the same size: crop or scale "
                           "the frames (in GIMP: Image > Canvas Size / Layer to Image Size) and "
                           "run again.")
