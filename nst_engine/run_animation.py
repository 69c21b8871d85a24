"""The ``stylize`` command with several frames: an animated GIF/WebP/APNG, several frame files
(``--animation``), or several unrelated images (a batch into ``-o DIR``).

- An animation is styled frame by frame by ``transfer.animation.Animation``: with
  ``--animation`` each frame is tied to the earlier ones (the preset's ``temporal_weight``;
  the optical flow needs OpenCV), without it every frame is an independent still. ``-o`` is an
  animated file (``.gif``, ``.webp``, ``.apng``/``.png``: each frame's delay and the loop count
  kept) or a folder (one PNG per frame, written as each is done).
- A batch (several inputs, no ``--animation``): one style, one model load, one result per input
  in ``-o DIR``, named after the input.

Everything that can be checked before computing is (sizes, counts, the output), and a frame
that fails mid-way leaves the frames done on disk, said where.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .bridge.wire import MAX_ANIMATION_FRAMES as MAX_FRAMES
from .errors import EngineError, InvalidInput
from .imageio import (DEFAULT_DELAY_MS, Clip, check_output, frame_count, is_animation_path,
                      read_clip, read_image, write_clip, write_image)


def is_multi(args: Any) -> bool:
    """Whether this ``stylize`` has several frames or inputs (else the still's path)."""
    contents = _contents(args)
    if len(contents) > 1 or getattr(args, "animation", False):
        return True
    path = Path(contents[0])
    return path.is_file() and frame_count(path) > 1


def _contents(args: Any) -> list[str]:
    c = args.content
    return [c] if isinstance(c, (str, Path)) else list(c)


def load_clip(contents: list[str], animation: bool) -> Clip:
    """The frames in playing order: one animated file, or one frame per file."""
    if len(contents) == 1:
        clip = read_clip(contents[0])
        if len(clip.frames) < 2:
            raise InvalidInput(f"'{contents[0]}' has a single frame: an animation needs at "
                               "least 2.", "For a still, leave out --animation; else give an "
                               "animated GIF/WebP/APNG or several frame files.")
    else:
        clip = Clip([], [], None, [])
        for path in contents:
            if Path(path).is_file() and frame_count(path) > 1:
                raise InvalidInput(f"'{path}' is itself an animation; with several inputs each "
                                   "must be one frame.", "Give one animated file, or one file "
                                   "per frame.")
            clip.frames.append(read_image(path))
            clip.durations.append(DEFAULT_DELAY_MS)
            clip.names.append(Path(path).stem)
    if len(clip.frames) > MAX_FRAMES:
        raise InvalidInput(f"The animation has {len(clip.frames)} frames; one run styles at "
                           f"most {MAX_FRAMES}.", "Split it into parts (the last frame of one "
                           "part as the first of the next keeps them coherent) or drop frames.")
    sizes = {f.size for f in clip.frames}
    if len(sizes) > 1:
        first = clip.frames[0].size
        i, odd = next((i, f.size) for i, f in enumerate(clip.frames) if f.size != first)
        raise InvalidInput(f"The frames differ in size: frame 1 is {first[0]}x{first[1]} px, "
                           f"frame {i + 1} is {odd[0]}x{odd[1]} px.",
                           "Every frame of an animation must have the same size.")
    return clip


def _output_kind(output: str, several: bool) -> str:
    """``dir`` (one file per frame/input) or ``file`` (an animated file)."""
    out = Path(output)
    if out.is_dir() or output.endswith(("/", "\\")):
        if not out.is_dir():
            raise InvalidInput(f"Cannot write into '{output}': the folder does not exist.",
                               "Create the folder first.")
        return "dir"
    if not several:
        raise InvalidInput(f"Several inputs without --animation are a batch: -o must be an "
                           f"existing folder, not '{output}'.",
                           "Give -o DIR, or --animation to make the inputs one animation.")
    if not is_animation_path(out) and out.suffix.lower() != ".png":
        raise InvalidInput(f"Cannot write an animation to '{output}': the extension must be "
                           ".gif, .webp, .apng or .png (APNG), or -o must be a folder.",
                           "Example: -o styled.gif, or -o frames/ for one PNG per frame.")
    check_output(out.with_suffix(".png"))  # the folder exists and takes new files
    return "file"


def prepare(args: Any) -> Any:
    """Everything checked and read before the model loads: ``("batch", images)`` or
    ``("clip", clip, output kind)``."""
    contents = _contents(args)
    if len(contents) > 1 and not getattr(args, "animation", False):
        _output_kind(args.output, several=False)
        return ("batch", [read_image(p) for p in contents])  # all readable before any work
    kind = _output_kind(args.output, several=True)
    return ("clip", load_clip(contents, bool(getattr(args, "animation", False))), kind)


def run(args: Any, plan: Any, *, params, device, bar_for) -> int:
    err = sys.stderr
    contents = _contents(args)
    animation = bool(getattr(args, "animation", False))
    if plan[0] == "batch":
        return _batch(args, contents, plan[1], params=params, device=device, bar_for=bar_for)
    _, clip, kind = plan
    loop = getattr(args, "loop", None)
    if loop is None:
        loop = clip.loop is not None and len(contents) == 1
    if not animation:
        print("note: frames styled independently (they may flicker); add --animation to tie "
              "each frame to the earlier ones.", file=err)
        params = params.with_overrides(temporal_weight=0.0)
    elif params.temporal_weight == 0:
        print("note: temporal_weight is 0: frames styled independently.", file=err)
    styles = args._styles

    from .transfer.animation import Animation

    n = len(clip.frames)
    anim = Animation(styles=styles, params=params, frames=n, loop=loop, device=str(device),
                     weights=args.weights, weights_kind=args.weights_kind)
    out_dir = Path(args.output) if kind == "dir" else None
    names = _frame_names(clip, contents)
    done: list = []
    start = time.monotonic()
    for i, frame in enumerate(clip.frames):
        bar = bar_for(f"frame {i + 1}/{n}")
        try:
            result = anim.frame(frame, progress=bar)
        except (EngineError, Exception) as e:  # noqa: BLE001 - said with the frames kept
            if bar is not None:
                bar.close()
            raise _failed(e, i, n, done, clip, out_dir, args.output, names) from e
        if bar is not None:
            bar.close()
        done.append(result)
        if out_dir is not None:
            write_image(result, out_dir / names[i])
    if out_dir is None:
        write_clip(Clip(done, clip.durations, clip.loop if clip.loop is not None
                        else (0 if loop else None)), args.output)
    if not args.quiet:
        later = [s.seconds for s in anim.stats[1:]]
        per = f", {sum(later) / len(later):.1f} s per frame after the first" if later else ""
        print(f"wrote {n} frames to {args.output} ({clip.frames[0].width}x"
              f"{clip.frames[0].height}, {device.type}, {time.monotonic() - start:.1f} s"
              f"{per})", file=err)
    return 0


def _frame_names(clip: Clip, contents: list[str]) -> list[str]:
    if clip.names:
        return [f"{name}.png" for name in clip.names]
    stem = Path(contents[0]).stem
    return [f"{stem}-{i:03d}.png" for i in range(1, len(clip.frames) + 1)]


def _failed(e: BaseException, i: int, n: int, done: list, clip: Clip, out_dir: Path | None,
            output: str, names: list[str]) -> EngineError:
    """The error of a frame that failed, saying where the frames done are."""
    what = e.message if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
    hint = e.hint if isinstance(e, EngineError) else "The engine log or traceback has details."
    code_cls = type(e) if isinstance(e, EngineError) else EngineError
    if not done:
        kept = "No frame was finished."
    elif out_dir is not None:
        kept = f"The {len(done)} frame(s) done are in '{out_dir}' ({names[0]} ...)."
    else:
        folder = Path(output).with_name(Path(output).stem + "-frames-done")
        try:
            folder.mkdir(exist_ok=True)
            for img, name in zip(done, names):
                write_image(img, folder / name)
            kept = f"The {len(done)} frame(s) done were saved in '{folder}'."
        except (OSError, EngineError) as w:
            kept = f"The {len(done)} frame(s) done could not be saved ({w})."
    err = code_cls(f"Frame {i + 1} of {n} failed: {what} {kept}", hint)
    return err


def _batch(args: Any, contents: list[str], images: list, *, params, device, bar_for) -> int:
    """Several unrelated inputs, one result each in ``-o DIR``."""
    from .transfer.pipeline import stylize

    out = Path(args.output)
    names = [Path(p).stem + ".png" for p in contents]
    if len(set(names)) < len(names):
        raise InvalidInput("Two inputs have the same file name, so their results would "
                           "overwrite each other.", "Rename one of them or run them apart.")
    for i, (img, name) in enumerate(zip(images, names)):
        bar = bar_for(f"image {i + 1}/{len(images)}")
        try:
            result = stylize(content=img, styles=args._styles, params=params,
                             device=str(device), weights=args.weights,
                             weights_kind=args.weights_kind, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        write_image(result, out / name)
        if not args.quiet:
            print(f"wrote {out / name}", file=sys.stderr)
    return 0
