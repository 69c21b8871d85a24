"""The ``stylize`` command: the request made once from the arguments (everything checked and
read), the model loaded once, then the request's own function: ``stylize_still``,
``stylize_batch`` (here) or ``clip.stylize_clip``.

Errors: what a user can act on is an ``EngineError``, which ``cli.main`` prints (exit 2);
anything else is a bug or a failure the engine does not know, and surfaces with its traceback
as in every command. A finished still is never lost to a failed write (``_write_or_rescue``);
a clip keeps its frames done (``clip``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EngineError, InvalidInput
from ..imageio import rescue_image, write_image
from .clip import stylize_clip
from .progress_bar import BarFactory, ProgressBar
from .request import BatchRequest, ClipRequest, StillRequest, request_from_args

if TYPE_CHECKING:
    import torch

UNVERIFIED_NOTICE = ("results made with unverified/random weights are not real style transfer "
                     "quality")


def stylize_command(args: argparse.Namespace) -> int:
    """``python -m nst_engine stylize ...``: the exit status (errors are raised)."""
    request = request_from_args(args)

    # torch loads only now: a refused command line has answered without it.
    from ..device.resolve import resolve_device
    from ..model.cache import model_for

    device = resolve_device(request.device)
    _, info = model_for(request.weights, request.weights_kind, request.params, device)
    if not info.verified:
        detail = f" ({info.notice})" if info.notice else ""
        print(f"notice: weights '{info.source}' are not a known VGG19 file{detail}; "
              f"{UNVERIFIED_NOTICE}.", file=sys.stderr)
    bar_for = _bar_factory(request.quiet)
    if isinstance(request, ClipRequest):
        return stylize_clip(request, device, bar_for)
    if isinstance(request, BatchRequest):
        return stylize_batch(request, device, bar_for)
    return stylize_still(request, device, bar_for)


def _bar_factory(quiet: bool) -> BarFactory:
    err = sys.stderr

    def bar_for(label: str) -> ProgressBar | None:
        return ProgressBar(err, label) if err.isatty() and not quiet else None
    return bar_for


def stylize_still(request: StillRequest, device: torch.device, bar_for: BarFactory) -> int:
    from ..transfer.pipeline import stylize

    err = sys.stderr
    bar = bar_for("")
    start = time.monotonic()
    try:
        result = stylize(content=request.content, styles=request.styles, params=request.params,
                         device=str(device), weights=request.weights,
                         weights_kind=request.weights_kind, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    for note in _write_or_rescue(result, request.output, request.overwrite):
        print(f"note: {note}", file=err)
    if not request.quiet:
        print(f"wrote {request.output} ({result.width}x{result.height}, {device.type}, "
              f"{time.monotonic() - start:.1f} s)", file=err)
    return 0


def _write_or_rescue(result, output: str | Path, replace: bool,
                     before: str = "") -> list[str]:
    """Write the result; when that fails after all (the folder changed while computing, the
    disk filled up, a file of that name appeared and --overwrite was not given), save it
    elsewhere and say where: a finished result is never lost. ``before``: what the message
    adds about earlier results (a batch's)."""
    try:
        return write_image(result, output, replace=replace)
    except InvalidInput as e:
        rescued = rescue_image(result, output)
        if rescued is None:
            raise
        raise InvalidInput(f"{e.message} The finished result was saved to '{rescued}' "
                           f"instead.{before}", f"Move it where you want it. {e.hint}") from None


def stylize_batch(request: BatchRequest, device: torch.device, bar_for: BarFactory) -> int:
    """Several unrelated inputs, one style and one model load, one result each in the
    folder."""
    from ..transfer.pipeline import stylize

    out = Path(request.output)
    n = len(request.contents)
    for i, (content, name) in enumerate(zip(request.contents, request.names)):
        # Each result is written as it is done: an early end keeps the earlier ones there.
        earlier = f" The {i} result(s) before it are in '{out}'." if i else ""
        bar = bar_for(f"image {i + 1}/{n}")
        try:
            result = stylize(content=content, styles=request.styles, params=request.params,
                             device=str(device), weights=request.weights,
                             weights_kind=request.weights_kind, progress=bar)
        except EngineError as e:
            raise type(e)(f"Image {i + 1} of {n} failed: {e.message}{earlier}",
                          e.hint) from e
        except KeyboardInterrupt:
            print(f"\nnote: stopped at image {i + 1} of {n}.{earlier}", file=sys.stderr)
            raise
        finally:
            if bar is not None:
                bar.close()
        for note in _write_or_rescue(result, out / name, request.overwrite, earlier):
            print(f"note: {note}", file=sys.stderr)
        if not request.quiet:
            print(f"wrote {out / name}", file=sys.stderr)
    return 0
