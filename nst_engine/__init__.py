"""VGG19 neural style transfer (Gatys et al.) for the GIMP plug-in and the command line.

``from nst_engine import stylize, StyleParams`` is the whole API. Importing this package does
not import torch: the ``presets`` command and the plug-in's bridge rely on that, so the torch
parts load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .params import StyleParams  # torch-free
from .progress import Progress  # torch-free

__all__ = ["stylize", "StyleParams", "Progress", "__version__"]


def __getattr__(name: str):
    if name == "stylize":
        from .transfer.pipeline import stylize

        return stylize
    raise AttributeError(name)
