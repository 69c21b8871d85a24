#!/usr/bin/env python3
"""Install Style Transfer for GIMP: the engine, the VGG19 weights, the plug-in, its configuration.

    python install.py                       # venv + PyTorch from PyPI, download weights, plug-in
    python install.py --python /usr/bin/python3 --weights vgg19.pth   # an existing PyTorch, offline
    python install.py --check               # each part: OK, or what is wrong and how to fix it
    python install.py --uninstall           # remove what the installer put there, nothing else

Five steps, each printed as ``[n/5]``: (1) the engine's Python environment, (2) the weights,
(3) the plug-in in every GIMP 3.x profile, (4) the configuration the plug-in reads, (5) a
self-check that stylizes a tiny image through the same bridge the plug-in uses. Running it
again changes nothing that is already right. Everything it creates is listed in
``install-manifest.json`` in the data folder, which is what ``--uninstall`` removes.

Standard library only; Python 3.10+ on Linux, Windows and macOS. Subprocesses get argv lists,
never a shell.
"""
# This first block must run on any Python 3 so an old one gets a sentence, not a SyntaxError:
# the whole file is parsed before it runs, so nothing below may use syntax newer than 3.6
# (no walrus, no match, no positional-only parameters, no `from __future__ import annotations`).
import sys

#: The same floor as the engine's (installer/engine.py), checked here before any import.
MIN_PYTHON = (3, 10)
if sys.version_info[:2] < MIN_PYTHON:
    sys.stderr.write(
        "Style Transfer needs Python %d.%d or newer to install; this is Python %d.%d (%s).\n"
        "Run the installer with a newer Python, e.g. `python3.12 install.py` "
        "(https://www.python.org/downloads/ or your system's python3.12 package).\n"
        % (MIN_PYTHON + tuple(sys.version_info[:2]) + (sys.executable,)))
    sys.exit(1)

import argparse
from pathlib import Path

# Run from anywhere (and loaded by tests as a file): the installer and nst_engine.bridge come
# from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from installer.check import check  # noqa: E402  (needs the path above)
from installer.errors import InstallError, write_error  # noqa: E402
from installer.steps import install  # noqa: E402
from installer.uninstall import uninstall  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python install.py",
        description="Install Style Transfer for GIMP 3: the engine (PyTorch), the VGG19 "
                    "weights, the plug-in in every GIMP 3.x profile, and its configuration.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="check an existing installation part by part and run a test job")
    mode.add_argument("--uninstall", action="store_true",
                      help="remove what the installer put there (and nothing else)")
    p.add_argument("--python", metavar="PATH",
                   help="use this interpreter as it is (it must have torch, torchvision, "
                        "pillow, numpy, pyyaml; e.g. Debian's /usr/bin/python3 with "
                        "python3-torch) instead of creating a venv")
    p.add_argument("--torch-index-url", metavar="URL",
                   help="install torch and torchvision from this index (e.g. "
                        "https://download.pytorch.org/whl/cpu for the CPU-only build, or "
                        ".../whl/cu126 for a CUDA build); venv only")
    p.add_argument("--weights", metavar="FILE",
                   help="a VGG19 weights file you already have (offline install) instead of "
                        "downloading it")
    p.add_argument("--gimp-dir", metavar="DIR", action="append",
                   help="install into this GIMP profile folder instead of the ones found "
                        "(repeatable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"),
                   help="the plug-in's default device (default: auto, or what was set before)")
    p.add_argument("--link", action="store_true",
                   help="for developers: symlink the plug-in and engine to this checkout "
                        "instead of copying (venv: an editable install)")
    args = p.parse_args(argv)
    if args.python and args.torch_index_url:
        p.error("--torch-index-url installs into the installer's venv; with --python, install "
                "PyTorch into that interpreter yourself")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.check:
            return check()
        if args.uninstall:
            return uninstall()
        return install(args)
    except InstallError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  What to do: {e.hint}", file=sys.stderr)
        return 1
    except OSError as e:
        err = write_error(e)
        print(f"error: {err.message}\n  What to do: {err.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
