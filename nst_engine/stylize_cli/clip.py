"""A clip's frames styled in order by ``transfer.animation.Animation`` (tied by the optical
flow with ``--animation``, else each an independent still), written as an animated file at the
end or into a folder as each is done.

A frame that fails leaves the frames done on disk, said where: in the output folder, or beside
the animated file in ``<name>-frames-done/``. A user's error (``EngineError``) says so in its
message; anything else (a bug) surfaces with its traceback after a note that says where.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..errors import EngineError
from ..imageio import Clip, write_clip, write_image
from .progress_bar import BarFactory
from .request import ClipRequest

if TYPE_CHECKING:
    import torch


def stylize_clip(request: ClipRequest, device: torch.device, bar_for: BarFactory) -> int:
    err = sys.stderr
    if not request.tied:  # request_from_args has set temporal_weight 0 for this
        print("note: frames styled independently (they may flicker); add --animation to tie "
              "each frame to the earlier ones.", file=err)
    elif request.params.temporal_weight == 0:
        print("note: temporal_weight is 0: frames styled independently.", file=err)

    from ..transfer.animation import Animation

    n = len(request.frames)
    anim = Animation(styles=request.styles, params=request.params, frames=n, loop=request.loop,
                     device=str(device), weights=request.weights,
                     weights_kind=request.weights_kind)
    done: list[Image.Image] = []
    start = time.monotonic()
    for i, frame in enumerate(request.frames):
        bar = bar_for(f"frame {i + 1}/{n}")
        try:
            result = anim.frame(frame, progress=bar)
        except EngineError as e:
            _close(bar)
            # The same kind of error (its code), the frame and the frames done added.
            raise type(e)(f"Frame {i + 1} of {n} failed: {e.message} "
                          f"{_keep_frames_done(request, done)}", e.hint) from e
        except Exception:
            # Not a user's error: it surfaces as it is (traceback), but the frames done are
            # not lost with it.
            _close(bar)
            print(f"note: frame {i + 1} of {n} failed. {_keep_frames_done(request, done)}",
                  file=err)
            raise
        _close(bar)
        done.append(result)
        if request.into_folder:
            write_image(result, Path(request.output) / request.names[i])
    if not request.into_folder:
        write_clip(Clip(done, list(request.durations), request.loop_count), request.output)
    if not request.quiet:
        later = [s.seconds for s in anim.stats[1:]]
        per = f", {sum(later) / len(later):.1f} s per frame after the first" if later else ""
        first = request.frames[0]
        print(f"wrote {n} frames to {request.output} ({first.width}x{first.height}, "
              f"{device.type}, {time.monotonic() - start:.1f} s{per})", file=err)
    return 0


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _keep_frames_done(request: ClipRequest, done: list[Image.Image]) -> str:
    """Where the frames done are (saving them beside an animated output first), in words."""
    if not done:
        return "No frame was finished."
    if request.into_folder:
        return (f"The {len(done)} frame(s) done are in '{Path(request.output)}' "
                f"({request.names[0]} ...).")
    output = Path(request.output)
    folder = output.with_name(output.stem + "-frames-done")
    try:
        folder.mkdir(exist_ok=True)
        for img, name in zip(done, request.names):
            write_image(img, folder / name)
    except (OSError, EngineError) as e:  # mkdir's OSError; write_image's InvalidInput
        return f"The {len(done)} frame(s) done could not be saved ({e})."
    return f"The {len(done)} frame(s) done were saved in '{folder}'."
