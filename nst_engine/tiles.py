"""Overlapping tiles for a pyramid level too large for memory, blended so no seam shows.

Every tile starts from the same image (the previous level's result, upsampled) and sees the
same style statistics (from the whole style image), so neighbouring tiles make closely related
textures where they overlap; a smooth cross-fade over the overlap joins them. (Starting a tile
from its finished neighbours instead leaves an edge where they end, which a tile's few steps
do not smooth away: a 28 % seam on the test image.)

``seam_ratio`` is the seam measure the tests and ``benchmarks/bench_tiles.py`` use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Overlap between neighbouring tiles: a quarter of the tile, within these bounds (px).
MIN_OVERLAP, MAX_OVERLAP = 16, 256
#: No tile is smaller than this (px): below it VGG's deep layers see almost nothing but edges.
MIN_TILE = 64


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    bottom: int  # exclusive
    right: int   # exclusive
    overlap_top: int   # rows shared with the tile above (0: none)
    overlap_left: int  # columns shared with the tile to the left (0: none)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


def overlap_for(tile: int) -> int:
    return max(MIN_OVERLAP, min(MAX_OVERLAP, tile // 4))


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one side: as few tiles as keep at least ``overlap`` shared, spread
    evenly so all are the same size."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def grid(hw: tuple[int, int], tile: int) -> list[Tile]:
    """Tiles of at most ``tile`` px a side covering an ``hw`` image, in raster order."""
    tile = max(MIN_TILE, tile)
    overlap = overlap_for(tile)
    h, w = hw
    th, tw = min(tile, h), min(tile, w)
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    out = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            out.append(Tile(y, x, y + th, x + tw,
                            ys[i - 1] + th - y if i else 0, xs[j - 1] + tw - x if j else 0))
    return out


def seams(tiles: list[Tile]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The blended bands: (row ranges, column ranges), each ``(start, end)`` exclusive."""
    rows = sorted({(t.top, t.top + t.overlap_top) for t in tiles if t.overlap_top})
    cols = sorted({(t.left, t.left + t.overlap_left) for t in tiles if t.overlap_left})
    return rows, cols


def _ramp(n: int, length: int) -> Tensor:
    """``length`` weights, rising smoothly (smoothstep) over the first ``n`` from near 0 to
    near 1. Over the whole overlap: measured on the seam test's image, a fade over its middle
    half left a 2.3 % seam, the whole overlap 1.3 % (the tiles' edges matter less than a slow
    fade between two related textures)."""
    out = torch.ones(length)
    if n > 0:
        t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        out[:n] = t * t * (3 - 2 * t)
    return out


def weights(tile: Tile) -> Tensor:
    """The tile's blend weights, ``[1, 1, h, w]``: 0→1 across its overlaps with earlier tiles."""
    h, w = tile.bottom - tile.top, tile.right - tile.left
    return (_ramp(tile.overlap_top, h)[:, None] * _ramp(tile.overlap_left, w)[None, :])[None, None]


def blend_into(canvas: Tensor, tile: Tile, result: Tensor) -> None:
    """Cross-fade ``result`` (the tile's pixels) into ``canvas`` in place."""
    ys, xs = tile.slices
    wgt = weights(tile).to(canvas.device, canvas.dtype)
    region = canvas[..., ys, xs]
    region.mul_(1 - wgt).add_(result.to(canvas.device, canvas.dtype) * wgt)


def seam_ratio(img: Tensor, rows: list[tuple[int, int]], cols: list[tuple[int, int]],
               margin: int = 2) -> float:
    """Gradient energy in the blended bands divided by the energy elsewhere.

    ``img``: ``[1, C, H, W]`` or ``[C, H, W]``. Column bands are measured with horizontal
    differences, row bands with vertical ones, each against the lines outside every band (and
    ``margin`` lines away from them). A visible seam changes it: a hard edge raises it, a
    blurred band lowers it. Compare it with the same measure of an untiled result.
    """
    img = img.float().reshape(-1, *img.shape[-2:])
    parts = []
    for axis, bands in ((2, cols), (1, rows)):
        if not bands:
            continue
        diff = img.diff(dim=axis).pow(2).sum(dim=0)          # [H, W-1] or [H-1, W]
        lines = diff.mean(dim=0 if axis == 2 else 1)          # energy per column / per row
        inside = torch.zeros(lines.shape[0], dtype=torch.bool)
        near = torch.zeros_like(inside)
        for a, b in bands:
            inside[a:b] = True
            near[max(0, a - margin):b + margin] = True
        outside = ~near
        if inside.any() and outside.any():
            parts.append((lines[inside].mean(), lines[outside].mean()))
    if not parts:
        return 1.0
    return float(sum(p[0] for p in parts) / sum(p[1] for p in parts))
