"""The ``stylize`` command: files in, file out, a progress bar on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .errors import InvalidInput
from .imageio import check_output, read_image, rescue_image, write_image

UNVERIFIED_NOTICE = ("results made with unverified/random weights are not real style transfer "
                     "quality")


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


class ProgressBar:
    """One self-overwriting line on a terminal: bar, percentage, level, loss, time left."""

    WIDTH = 28

    def __init__(self, stream: TextIO, label: str = "") -> None:
        self.stream, self.last, self.note = stream, 0.0, None
        self.label = f"{label} " if label else ""  # e.g. "frame 2/5"

    def __call__(self, p) -> None:
        now = time.monotonic()
        if p.stage == "optimizing" and p.iteration < p.total and now - self.last < 0.1:
            return
        self.last = now
        filled = round(self.WIDTH * p.fraction)
        eta = "" if p.eta is None else f" eta {_clock(p.eta)}"
        loss = f" loss {p.losses['total']:.3g}" if "total" in p.losses else ""
        level = f" level {p.level}/{p.levels}" if p.level else ""
        if p.width:
            level += f" at {p.width}x{p.height}" + (f" in {p.tiles} tiles" if p.tiles else "")
        if p.note and p.note != self.note:  # once, on its own line
            self.note = p.note
            self.stream.write(f"\r{p.note}\x1b[K\n")
        bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}]"
        self.stream.write(f"\r{self.label}{p.stage:<10} {bar} "
                          f"{p.iteration}/{p.total}{level}{loss} {_clock(p.elapsed)}{eta}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _params(args: Any):
    from .params import PARAM_FIELDS
    from .presets import resolve

    # The setting flags land in ``args.<field>`` (cli.SETTING_FLAGS); None = the preset's.
    overrides = {name: getattr(args, name, None) for name in PARAM_FIELDS}
    if overrides["max_size"] == "full":
        overrides.update(max_size=None, full_resolution="always")
    return resolve(args.preset, {k: v for k, v in overrides.items() if v is not None})


def _write_or_rescue(result, output) -> list[str]:
    """Write the result; when that fails after all (the folder changed while computing, the
    disk filled up), save it elsewhere and say where: a finished run is never lost."""
    try:
        return write_image(result, output)
    except InvalidInput as e:
        rescued = rescue_image(result, output)
        if rescued is None:
            raise
        raise InvalidInput(f"{e.message} The finished result was saved to '{rescued}' "
                           "instead.", f"Move it where you want it. {e.hint}") from None


def run(args: Any) -> int:
    from . import run_animation

    err = sys.stderr
    params = _params(args)
    multi = run_animation.is_multi(args)  # an animation or a batch: run_animation's job
    if not multi:
        check_output(args.output)  # a bad extension or folder fails now, not after the work
    blend = parse_style_weights(args.style_weights, len(args.style))
    content = None if multi else read_image(run_animation._contents(args)[0])
    plan = run_animation.prepare(args) if multi else None
    styles = [(read_image(path), w) for path, w in zip(args.style, blend)]

    from .device.resolve import resolve_device
    from .model.cache import model_for
    from .transfer.pipeline import stylize

    device = resolve_device(args.device)
    _, info = model_for(args.weights, args.weights_kind, params, device)
    if not info.verified:
        detail = f" ({info.notice})" if info.notice else ""
        print(f"notice: weights '{info.source}' are not a known VGG19 file{detail}; "
              f"{UNVERIFIED_NOTICE}.", file=err)

    if multi:
        args._styles = styles
        return run_animation.run(args, plan, params=params, device=device,
                                 bar_for=lambda label: ProgressBar(err, label)
                                 if err.isatty() and not args.quiet else None)
    bar = ProgressBar(err) if err.isatty() and not args.quiet else None
    start = time.monotonic()
    try:
        result = stylize(content=content, styles=styles, params=params, device=str(device),
                         weights=args.weights, weights_kind=args.weights_kind, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    for note in _write_or_rescue(result, args.output):
        print(f"note: {note}", file=err)
    if not args.quiet:
        print(f"wrote {args.output} ({result.width}x{result.height}, {device.type}, "
              f"{time.monotonic() - start:.1f} s)", file=err)
    return 0
