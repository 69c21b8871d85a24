"""``python -m nst_engine``: the command line.

This module only parses arguments; each command's work lives in the module that owns it (the
``stylize`` command's in ``stylize_cli/``) and is imported when the command runs, so
``presets`` never imports torch and ``--help`` is instant. An ``EngineError`` (a user's error)
is printed without a traceback (exit 2); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .bridge.config import DEFAULT_KEEP_WARM
from .errors import EngineError
from .params import PARAM_FIELDS, describe_range

DEVICES = ("auto", "cpu", "cuda", "mps")
#: ``stylize`` flags that override one preset setting each: (flag, StyleParams field, metavar).
#: Their types, ranges and help come from the field (``params.py``); the value lands in
#: ``args.<field>`` (None = the preset's).
SETTING_FLAGS = (("--max-size", "max_size", "N|full"), ("--tile", "tile_size", "N"),
                 ("--iterations", "iterations", "N"), ("--strength", "strength", "X"),
                 ("--preserve-colors", "preserve_colors", None), ("--seamless", "seamless", None),
                 ("--seed", "seed", "N"),
                 ("--temporal-weight", "temporal_weight", "X"))
#: What a flag means beyond its setting's own doc.
_FLAG_NOTES = {
    "max_size": "full = the content's own size on any device (default: the preset's; on a "
                "GPU the content's own size as far as memory allows)",
    "tile_size": "levels larger than this run in overlapping tiles of at most this size "
                 "(default: only what does not fit in memory, in tiles that do)",
}


def _max_size(text: str) -> int | str:
    """``--max-size``: a number of pixels, or ``full``."""
    if text.strip().lower() == "full":
        return "full"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'full', got "
                                         f"'{text}'") from None


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for flag, name, metavar in SETTING_FLAGS:
        meta = PARAM_FIELDS[name].metadata
        words = [meta["doc"]]
        if meta["min"] is not None or meta["max"] is not None:
            words.append(describe_range(meta))
        words.append(_FLAG_NOTES.get(name, "default: the preset's"))
        help_text = "; ".join(words).replace("%", "%%")
        if meta["kind"] is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None,
                                help=help_text)
            continue
        kind = _max_size if name == "max_size" else meta["kind"]
        parser.add_argument(flag, dest=name, type=kind, metavar=metavar, help=help_text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nst_engine",
                                description="VGG19 neural style transfer (the engine of the "
                                            "Style Transfer plug-in for GIMP 3).")
    p.add_argument("--version", action="version", version=f"nst_engine {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("stylize", help="repaint CONTENT in the style of one or more STYLE images")
    s.add_argument("content", metavar="CONTENT", nargs="+",
                   help="the image to repaint (PNG, JPEG, TIFF); an animated GIF/WebP/APNG; "
                        "with --animation several frame files in playing order; several "
                        "images without it are a batch into -o DIR")
    s.add_argument("-s", "--style", action="append", required=True, metavar="STYLE",
                   help="a style image; repeat for a blend of several")
    s.add_argument("--style-weights", metavar="W1,W2,...",
                   help="blend weights, one per --style (default: equal)")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file; the format follows the extension (.png, .jpg, .tif); "
                        "for frames an animated .gif/.webp/.apng or a folder (one PNG per "
                        "frame); an existing file is not replaced without --overwrite; a clip "
                        "that ends early keeps its frames done in the folder, or beside an "
                        "animated file in NAME-frames-done/")
    s.add_argument("--preset", default=None, help="preset name (see `presets`)")
    _add_setting_flags(s)
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument("--weights", metavar="PATH", help="VGG19 weights file (default: the installed "
                                                      "cache; see `fetch-weights`)")
    s.add_argument("--weights-kind", choices=("torchvision", "caffe"),
                   help="preprocessing the weights expect, when the file does not tell")
    s.add_argument("--animation", action="store_true",
                   help="the frames are one animation: each is tied to the earlier ones by the "
                        "optical flow (temporal_weight; needs OpenCV: pip install "
                        "opencv-python-headless), so the style does not flicker")
    s.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None,
                   help="the animation loops: lead the frames back to the first, so the last "
                        "flows into it (default: as the input file says)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace output files that already exist (without it an existing "
                        "output is refused before any work); an input is never overwritten")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    pr = sub.add_parser("presets", help="list presets, or show one fully resolved")
    pr.add_argument("--show", metavar="NAME", help="print the resolved values of one preset")
    pr.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser("doctor", help="check torch, devices, weights and presets")
    d.add_argument("--weights", metavar="PATH")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--measure-cpu", action="store_true",
                   help="time bfloat16 against float32 on this CPU again (and cache the answer)")
    d.add_argument("--quick", action="store_true",
                   help="only what needs no torch import: Python, the packages found (not "
                        "imported), where the weights are, presets")

    f = sub.add_parser("fetch-weights", help="download VGG19 weights (hash-checked) and build "
                                             "the compact cache")
    f.add_argument("--kind", choices=("torchvision", "caffe"), default="torchvision")
    f.add_argument("--from-file", metavar="PATH",
                   help="build the cache from a file you already have (offline)")
    f.add_argument("--weights-kind", choices=("torchvision", "caffe"),
                   help="preprocessing the --from-file weights expect, when the file does not "
                        "tell")

    sv = sub.add_parser("serve", help="the GIMP plug-in's engine process (framed messages on "
                                      "stdin/stdout, logs on stderr)")
    sv.add_argument("--weights", metavar="PATH")
    sv.add_argument("--device", choices=DEVICES, default="auto")
    # Warm mode, as `attach` starts it (docs/PROTOCOL.md "The warm engine").
    sv.add_argument("--listen", metavar="SOCKET",
                    help="be the warm engine: serve clients on this Unix-domain socket (its "
                         "folder must be the user's own, mode 0700)")
    sv.add_argument("--keep-warm", type=float, default=DEFAULT_KEEP_WARM, metavar="SECONDS",
                    help="with --listen: exit this long after the last job")
    sv.add_argument("--warm-key", default="", help=argparse.SUPPRESS)
    sv.add_argument("--log", metavar="FILE", help="with --listen: append the log to FILE")

    a = sub.add_parser("attach", help="what the plug-in runs: connect to the warm engine "
                                      "(starting one if none) and relay stdin/stdout to it")
    a.add_argument("--weights", metavar="PATH")
    a.add_argument("--device", choices=DEVICES, default=None)
    a.add_argument("--keep-warm", type=float, default=DEFAULT_KEEP_WARM, metavar="SECONDS",
                   help="how long a started engine waits for the next job (0: run `serve`)")
    a.add_argument("--hello-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long a starting engine may take")
    a.add_argument("--fresh", action="store_true",
                   help="replace the running warm engine with a new one")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # Each command's function takes the arguments and returns the exit status.
        if args.command == "stylize":
            from .stylize_cli.command import stylize_command as command
        elif args.command == "presets":
            from .presets import run_command as command
        elif args.command == "doctor":
            from .doctor import run as command
        elif args.command == "fetch-weights":
            from .model.weights import run_fetch as command
        elif args.command == "attach":
            from .server.attach import run as command
        elif args.listen:
            from .server.listen import run as command
        else:
            from .server.stdio import run as command
        return command(args)
    except EngineError as e:
        print(f"error: {e.user_text()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
