"""A clip's frames styled in order by ``transfer.animation.Animation`` (tied by the optical
flow with ``--animation``, else each an independent still), written as an animated file at the
end or into a folder as each is done.

Memory: with a folder output each result is written as it is done and let go; only an
animated output keeps the results (it is written from all of them at the end).

Frames done are never lost, however the run ends early: a frame that fails, a failed final
write (the folder went away, the disk filled up), Ctrl-C, a bug. They are in the output
folder, or saved in ``<name>-frames-done/`` beside the animated file (a new
``<name>-frames-done-2/``... when that exists; the temporary folder, else the home folder,
when the output's folder takes nothing), and the message says where. A user's error
(``EngineError``) says so in its message; Ctrl-C and a bug in a note before they surface as
themselves ("interrupted", exit 130; the traceback).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..errors import EngineError
from ..imageio import Clip, rescue_image, write_clip, write_image
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
    done: list[Image.Image] = []  # the results: kept only for an animated output
    count = 0                     # frames finished (and, into a folder, written)
    start = time.monotonic()
    stage = ""  # what the message of a failure starts with: the frame, or nothing (a write)
    try:
        for i, frame in enumerate(request.frames):
            bar = bar_for(f"frame {i + 1}/{n}")
            stage = f"Frame {i + 1} of {n} failed: "
            try:
                # The next frame's flows are computed while this one optimises on a GPU.
                upcoming = request.frames[i + 1] if i + 1 < n else None
                result = anim.frame(frame, progress=bar, upcoming=upcoming)
            finally:
                _close(bar)
            stage = ""  # a write's message names its file
            if request.into_folder:
                _write_frame(request, result, i)
            else:
                done.append(result)
            count += 1
        if not request.into_folder:
            write_clip(Clip(done, list(request.durations), request.loop_count),
                       request.output, replace=request.overwrite)
    except EngineError as e:
        # The same kind of error (its code), the frame and the frames done added.
        raise type(e)(f"{stage}{e.message} {_keep_frames_done(request, done, count)}",
                      e.hint) from e
    except KeyboardInterrupt:
        # Ctrl-C: cli.main says "interrupted" (exit 130); the frames done are kept first.
        at = f"frame {count + 1} of {n}" if count < n else f"writing '{request.output}'"
        print(f"\nnote: stopped at {at}. "
              f"{_keep_frames_done(request, done, count)}", file=err)
        raise
    except Exception:
        # Not a user's error: it surfaces as it is (traceback), but the frames done are
        # not lost with it.
        print(f"note: frame {min(count + 1, n)} of {n} failed. "
              f"{_keep_frames_done(request, done, count)}", file=err)
        raise
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


def _write_frame(request: ClipRequest, result: Image.Image, i: int) -> None:
    """Frame ``i`` into the output folder; when that fails after all (the folder went away),
    the frame is saved elsewhere and the error says where (the caller adds the earlier
    ones)."""
    target = Path(request.output) / request.names[i]
    try:
        write_image(result, target, replace=request.overwrite)
    except EngineError as e:
        rescued = rescue_image(result, target)
        saved = (f"Frame {i + 1} was saved to '{rescued}' instead."
                 if rescued else f"Frame {i + 1} could not be saved anywhere.")
        # Stops the run: a folder that lost its frames is no place for the next ones.
        raise type(e)(f"{e.message} {saved}", e.hint) from None


def _keep_frames_done(request: ClipRequest, done: list[Image.Image], count: int) -> str:
    """Where the frames done are (saving them first when they are only in memory), in
    words."""
    if not count:
        return "No frame was finished."
    if request.into_folder:
        if not Path(request.output).is_dir():
            return (f"The {count} frame(s) done were in '{request.output}', which is no "
                    "longer there.")
        return (f"The {count} frame(s) done are in '{Path(request.output)}' "
                f"({request.names[0]} ...).")
    output = Path(request.output)
    tries = [output.with_name(f"{output.stem}-frames-done")]
    tries += [output.with_name(f"{output.stem}-frames-done-{k}") for k in range(2, 100)]
    for folder in tries:
        if folder.exists() or folder.is_symlink():
            continue  # never into, or over, what is already there
        try:
            folder.mkdir()
        except OSError:
            break  # the output's folder takes nothing: somewhere else
        return _save_frames(done, request.names, folder)
    for place in (tempfile.gettempdir(), Path.home(), Path.cwd()):
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{output.stem}-frames-done-", dir=place))
        except OSError:
            continue
        return _save_frames(done, request.names, folder)
    return f"The {count} frame(s) done could not be saved anywhere."


def _save_frames(done: list[Image.Image], names: tuple[str, ...], folder: Path) -> str:
    try:
        for img, name in zip(done, names):
            write_image(img, folder / name, replace=False)
    except EngineError as e:  # write_image's InvalidInput: the disk filled up
        return f"The {len(done)} frame(s) done could not all be saved in '{folder}' ({e})."
    return f"The {len(done)} frame(s) done were saved in '{folder}'."
