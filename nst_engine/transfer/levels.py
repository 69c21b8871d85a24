"""The plan of a run: the size of each pyramid level, its steps, and whether it runs in tiles.

The finest level is the preset's ``max_size``, or the image's own size when
``full_resolution`` says so (``always``; ``gpu`` on CUDA/MPS, as large as fits in memory
untiled). A finest level above ``max_size`` adds levels (``StyleParams.level_sizes``), so
the coarsest level, where the style's layout forms, stays about the preset's. A level larger
than the memory budget allows, or than an explicit ``tile_size``, runs in tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from . import tiles
from ..device.memory import Budget
from ..params import StyleParams

#: Shortest side, in px, the optimisation runs at (VGG pools the image 4 times before relu5_1).
MIN_SIDE = 32
#: The longest side a level may have when the image is smaller (upsampling adds only cost).
MIN_LONGEST = 64


@dataclass(frozen=True)
class Level:
    index: int            # 1-based
    hw: tuple[int, int]   # the size it optimises at
    steps: int            # optimiser steps per tile
    tile: int | None      # longest side of its tiles; None = the whole image at once
    wrap: bool = False    # seamless: its tiles go around a torus (``tiles.grid``)

    @cached_property
    def tiles(self) -> list[tiles.Tile]:
        """Its tiles in the order they run (one covering it all when it runs whole)."""
        return tiles.grid(self.hw, self.tile or max(self.hw), self.wrap)

    @property
    def work(self) -> int:
        """Optimiser steps in all (tiles × steps)."""
        return self.steps * len(self.tiles)

    @property
    def px_work(self) -> int:
        """Pixel-steps in all (what its time is about proportional to)."""
        return self.steps * sum((t.bottom - t.top) * (t.right - t.left) for t in self.tiles)


#: Seamless levels have sides that are multiples of this: VGG pools 4 times (stride 16) up to
#: relu5_1, and a pooling keeps the wrap only on an even side.
WRAP_MULTIPLE = 16


def level_shape(h: int, w: int, longest: int, multiple: int = 1) -> tuple[int, int]:
    """The size of a level of longest side ``longest`` with the aspect of ``h, w``; each side
    a multiple of ``multiple`` (seamless: ``WRAP_MULTIPLE``)."""
    scale = longest / max(h, w)

    def side(n: int) -> int:
        return max(MIN_SIDE, multiple * round(n * scale / multiple))
    return side(h), side(w)


def finest_side(params: StyleParams, hw: tuple[int, int], device: torch.device,
                memory: Budget) -> int:
    """The longest side of the finest level for an image of size ``hw`` on ``device``."""
    own = max(*hw, MIN_LONGEST)
    preset = min(params.max_size, own)
    if params.full_resolution == "always":
        return own
    if params.full_resolution == "gpu" and device.type in ("cuda", "mps"):
        return max(preset, min(own, memory.largest_side(hw)))
    return preset


def plan(params: StyleParams, hw: tuple[int, int], device: torch.device,
         memory: Budget) -> list[Level]:
    finest = finest_side(params, hw, device, memory)
    multiple = WRAP_MULTIPLE if params.seamless else 1
    out = []
    for i, (size, steps) in enumerate(zip(params.level_sizes(finest),
                                          params.level_iterations(finest)), 1):
        lhw = level_shape(*hw, size, multiple)
        out.append(Level(i, lhw, steps, tile_for(lhw, params, memory), params.seamless))
    return out


def tile_for(hw: tuple[int, int], params: StyleParams, memory: Budget) -> int | None:
    """The tile side for a level of size ``hw``, or None when it runs whole."""
    if params.tile_size is not None:
        return params.tile_size if max(hw) > params.tile_size else None
    if memory.fits(hw):
        return None
    return max(tiles.MIN_TILE, memory.tile_side())


def smaller_tile(level: Level, memory: Budget) -> int | None:
    """The tile side to retry a level with after it ran out of memory, or None if there is no
    smaller one worth trying."""
    current = level.tile or max(level.hw)
    side = min(current // 2, memory.tile_side()) if level.tile is None else current // 2
    side = max(tiles.MIN_TILE, side)
    return side if side < current else None
