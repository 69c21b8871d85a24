"""What a ``stylize`` command line asks for, made once from argparse's arguments: a still, a
clip (an animation's frames, in playing order) or a batch (unrelated images, one result each).

``request_from_args`` checks and reads everything that can be known before the model loads:
the preset and the setting flags, the output path, the style weights, every input and every
style image. A wrong argument is refused here, before any work, with an ``InvalidInput``.
The request then holds the images and the decisions (the kind, where each result goes, the
clip's loop), so each kind's function only carries them out. No torch here: a refused command
line answers without loading it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..bridge.wire import MAX_ANIMATION_FRAMES as MAX_FRAMES
from ..errors import InvalidInput
from ..imageio import (DEFAULT_DELAY_MS, Clip, check_folder, check_output, frame_count,
                       is_animation_path, read_clip, read_image, too_many_frames)
from ..params import PARAM_FIELDS, StyleParams
from ..presets import resolve

#: The style images with their blend weights, in the order of ``-s``.
Styles = tuple[tuple[Image.Image, float], ...]


@dataclass(frozen=True)
class Request:
    """What every kind shares: the styles (read once), the resolved settings, where the results
    go and which model to load."""
    styles: Styles
    params: StyleParams
    output: str              # as the user typed it: the messages quote it so
    device: str              # auto | cpu | cuda | mps; resolved when the model loads
    weights: str | None      # None: the installed cache
    weights_kind: str | None
    quiet: bool
    overwrite: bool          # --overwrite: existing outputs may be replaced (never an input)


@dataclass(frozen=True)
class StillRequest(Request):
    """One image in, one file out (``output``; its format follows the extension)."""
    content: Image.Image


@dataclass(frozen=True)
class ClipRequest(Request):
    """An animation's frames. ``output`` is an animated file, or with ``into_folder`` a
    folder that gets each frame as a PNG (``names``) as soon as it is done."""
    frames: tuple[Image.Image, ...]
    durations: tuple[int, ...]   # ms per frame, kept in an animated output
    names: tuple[str, ...]       # each frame's PNG name: in the folder, or among the frames done
    into_folder: bool
    tied: bool                   # --animation: each frame tied to the earlier ones by the flow
    loop: bool                   # the last frame leads back to the first
    loop_count: int | None       # what an animated output says (0: forever; None: plays once)


@dataclass(frozen=True)
class BatchRequest(Request):
    """Unrelated images, one result each in the folder ``output``, named ``names``."""
    contents: tuple[Image.Image, ...]
    names: tuple[str, ...]


def request_from_args(args: argparse.Namespace) -> StillRequest | ClipRequest | BatchRequest:
    """The request that ``cli``'s ``stylize`` arguments make, every input read and checked.

    A Namespace made by hand (tests, scripts) may leave out ``animation`` and ``loop`` and give
    ``content`` as one path.
    """
    params = params_from_args(args)
    contents = _contents(args)
    tied = bool(getattr(args, "animation", False))
    kind = _kind(contents, tied)
    # Cheap checks first (the output's extension and folder, the style weights), then the
    # images: the inputs, then the styles.
    if kind == "still":
        check_output(args.output)
    else:
        into_folder = _into_folder(args.output, several=kind == "clip")
    blend = parse_style_weights(args.style_weights, len(args.style))
    if kind == "still":
        own: dict[str, object] = {"content": read_image(contents[0])}
    elif kind == "batch":
        own = _batch(contents)
    else:
        own = _clip(contents, tied, getattr(args, "loop", None), into_folder)
        if not tied:  # every frame an independent still: no flow, no temporal term
            params = params.with_overrides(temporal_weight=0.0)
    styles = tuple((read_image(path), weight) for path, weight in zip(args.style, blend))
    overwrite = bool(getattr(args, "overwrite", False))
    targets = ([Path(args.output)] if kind == "still" or not into_folder
               else [Path(args.output) / name for name in own["names"]])
    check_targets(targets, [*contents, *args.style, *([args.weights] if args.weights else [])],
                  overwrite)
    shared = dict(styles=styles, params=params, output=str(args.output), device=args.device,
                  weights=args.weights, weights_kind=args.weights_kind,
                  quiet=bool(args.quiet), overwrite=overwrite)
    made = {"still": StillRequest, "clip": ClipRequest, "batch": BatchRequest}[kind]
    return made(**shared, **own)


def check_targets(targets: list[Path], inputs: list[str], overwrite: bool) -> None:
    """The overwrite policy, the same for stills, clips and batches: an input is never
    written over (not even with --overwrite); an existing output is refused unless
    --overwrite says to replace it."""
    for target in targets:
        for given in inputs:
            if _same_file(target, Path(given)):
                raise InvalidInput(f"Cannot write '{target}': it is one of the inputs "
                                   f"('{given}'), which this command never overwrites.",
                                   "Choose another -o (a new file name or an empty folder).")
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} other result file(s)" if len(existing) > 1 else ""
        raise InvalidInput(f"'{existing[0]}'{more} already exist(s); nothing is overwritten "
                           "without --overwrite.",
                           "Choose another -o, or add --overwrite to replace the existing "
                           "file(s).")
    for target in existing:
        if target.is_dir():
            raise InvalidInput(f"Cannot write '{target}': it is a folder.",
                               "Move it away or choose another -o.")


def _same_file(a: Path, b: Path) -> bool:
    """The same file by identity (hard links, symlinks, ../), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # a missing output: compare where it would be
        return a.resolve() == b.resolve()


def params_from_args(args: argparse.Namespace) -> StyleParams:
    """The preset (``--preset``, None: the default one) with the setting flags over it."""
    # The setting flags land in ``args.<field>`` (cli.SETTING_FLAGS); None = the preset's.
    overrides = {name: getattr(args, name, None) for name in PARAM_FIELDS}
    if overrides["max_size"] == "full":
        overrides.update(max_size=None, full_resolution="always")
    return resolve(args.preset, {k: v for k, v in overrides.items() if v is not None})


def parse_style_weights(text: str | None, n_styles: int) -> list[float]:
    """``"0.7,0.3"`` -> [0.7, 0.3]; equal weights when not given."""
    if not text:
        return [1.0] * n_styles
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidInput(f"--style-weights must be numbers separated by commas, got '{text}'.",
                           "Example: -s a.png -s b.png --style-weights 0.7,0.3") from None
    if len(values) != n_styles:
        raise InvalidInput(f"--style-weights has {len(values)} values but {n_styles} style "
                           "image(s) were given.", "Give one weight per -s STYLE.")
    return values


def _contents(args: argparse.Namespace) -> list[str]:
    c = args.content
    return [str(c)] if isinstance(c, (str, Path)) else [str(p) for p in c]


def _kind(contents: list[str], tied: bool) -> str:
    """``still``, ``clip`` (--animation, or one animated file) or ``batch`` (several inputs
    without --animation)."""
    if len(contents) > 1:
        return "clip" if tied else "batch"
    path = Path(contents[0])
    # A FIFO or a missing file is no animation; read_image says what is wrong with it.
    if tied or (path.is_file() and frame_count(path) > 1):
        return "clip"
    return "still"


def _into_folder(output: str, several: bool) -> bool:
    """Whether ``-o`` is a folder (one file per frame or input), else an animated file;
    ``several`` (a clip): an animated file is allowed."""
    out = Path(output)
    if out.is_dir() or str(output).endswith(("/", "\\")):
        if not out.is_dir():
            raise InvalidInput(f"Cannot write into '{output}': the folder does not exist.",
                               "Create the folder first.")
        check_folder(out)  # read-only, a full disk: found before the model loads
        return True
    if not several:
        raise InvalidInput(f"Several inputs without --animation are a batch: -o must be an "
                           f"existing folder, not '{output}'.",
                           "Give -o DIR, or --animation to make the inputs one animation.")
    if not is_animation_path(out) and out.suffix.lower() != ".png":
        raise InvalidInput(f"Cannot write an animation to '{output}': the extension must be "
                           ".gif, .webp, .apng or .png (APNG), or -o must be a folder.",
                           "Example: -o styled.gif, or -o frames/ for one PNG per frame.")
    check_output(out.with_suffix(".png"))  # the folder exists and takes new files
    return False


def _batch(contents: list[str]) -> dict[str, object]:
    """A batch's own fields: the names first (two inputs of one name are refused before any
    image is read), then the images."""
    names = tuple(Path(p).stem + ".png" for p in contents)
    if len(set(names)) < len(names):
        raise InvalidInput("Two inputs have the same file name, so their results would "
                           "overwrite each other.", "Rename one of them or run them apart.")
    return {"contents": tuple(read_image(p) for p in contents), "names": names}


def _clip(contents: list[str], tied: bool, loop: bool | None,
          into_folder: bool) -> dict[str, object]:
    """A clip's own fields: its frames, each frame's name and delay, the loop decided."""
    clip = load_clip(contents)
    if loop is None:  # as the input file says; frame files say nothing
        loop = clip.loop is not None
    if clip.names:
        names = tuple(f"{name}.png" for name in clip.names)
    else:
        stem = Path(contents[0]).stem
        names = tuple(f"{stem}-{i:03d}.png" for i in range(1, len(clip.frames) + 1))
    return {"frames": tuple(clip.frames), "durations": tuple(clip.durations), "names": names,
            "into_folder": into_folder, "tied": tied, "loop": bool(loop),
            # The input's own loop count is kept; a clip that said none loops when asked to.
            "loop_count": clip.loop if clip.loop is not None else (0 if loop else None)}


def load_clip(contents: list[str]) -> Clip:
    """The frames in playing order: one animated file, or one frame per file; refused when
    one command could not style them (a single frame, too many, sizes that differ)."""
    if len(contents) > MAX_FRAMES:  # counted before any file is read
        raise too_many_frames(len(contents), MAX_FRAMES)
    if len(contents) == 1:
        clip = read_clip(contents[0], MAX_FRAMES)  # counted from the headers, not decoded
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
    sizes = {f.size for f in clip.frames}
    if len(sizes) > 1:
        first = clip.frames[0].size
        i, odd = next((i, f.size) for i, f in enumerate(clip.frames) if f.size != first)
        raise InvalidInput(f"The frames differ in size: frame 1 is {first[0]}x{first[1]} px, "
                           f"frame {i + 1} is {odd[0]}x{odd[1]} px.",
                           "Every frame of an animation must have the same size.")
    return clip
