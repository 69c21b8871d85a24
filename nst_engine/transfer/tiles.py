"""Overlapping tiles for a pyramid level too large for memory, blended so no seam shows.

Every tile starts from the same image (the previous level's result, upsampled) and sees the
same style statistics (from the whole style image), so neighbouring tiles make closely related
textures where they overlap; ``blend_into`` joins them in two bands (colour and shading fade
over the whole overlap, fine texture over its middle half). (Starting a tile from its finished
neighbours instead leaves an edge where they end, which a tile's few steps do not smooth away:
a 28 % seam on the test image.)

Seamless levels (``wrap``) tile the image as a torus: the tiles are spread evenly around each
side, the last in a row or column reaching across the border into the first (``crop`` reads
it wrapped around), and it blends there too, so the wrap is a blended band like any other.

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
#: Blending (``blend_into``): the low band's Gaussian sigma is the overlap / LOW_PASS_FRACTION;
#: the fine texture switches over the overlap / NARROW_FRACTION (at least 2 px), in its middle.
#: Chosen on the seam measure over eight tiled runs (benchmarks/README.md, "Tiles"): fading the
#: texture over the whole overlap left the band 1.8 % softer on average (up to 3.7 %), a narrow
#: switch (1/8) 1.4 % busier; the middle half is within 1.1 % on average.
LOW_PASS_FRACTION, NARROW_FRACTION = 4, 2


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    bottom: int  # exclusive
    right: int   # exclusive
    overlap_top: int   # rows shared with the tile above (0: none)
    overlap_left: int  # columns shared with the tile to the left (0: none)
    # Seamless (``wrap``): the last tile row/column reaches across the image's border; rows /
    # columns it shares there with the first one (0: none). ``bottom``/``right`` then exceed
    # the image's size by that much.
    overlap_bottom: int = 0
    overlap_right: int = 0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    @property
    def wraps(self) -> bool:
        return bool(self.overlap_bottom or self.overlap_right)


def overlap_for(tile: int) -> int:
    return max(MIN_OVERLAP, min(MAX_OVERLAP, tile // 4))


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one side: as few tiles as keep at least ``overlap`` shared, spread
    evenly so all are the same size."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _torus_starts(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Starts and size of the tiles around a side that wraps: at least two (a tile as long
    as the side would meet itself), evenly spread, each sharing at least ``overlap`` with the
    next, the last with the first across the border."""
    overlap = min(overlap, length // 4)
    n = max(2, math.ceil(length / (tile - overlap)))
    # Full-size tiles, as ``_starts`` gives, so neighbours share as much; a side shorter than
    # a tile still gets two (a tile as long as the side would meet itself).
    size = tile if tile < length else math.ceil(length / n) + overlap
    return [round(i * length / n) for i in range(n)], size


def _torus_grid(hw: tuple[int, int], tile: int) -> list[Tile]:
    overlap = overlap_for(tile)
    (ys, th), (xs, tw) = (_torus_starts(n, tile, overlap) for n in hw)
    out = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            out.append(Tile(y, x, y + th, x + tw,
                            ys[i - 1] + th - y if i else 0, xs[j - 1] + tw - x if j else 0,
                            y + th - hw[0] if i == len(ys) - 1 else 0,
                            x + tw - hw[1] if j == len(xs) - 1 else 0))
    return out


def grid(hw: tuple[int, int], tile: int, wrap: bool = False) -> list[Tile]:
    """Tiles of at most ``tile`` px a side covering an ``hw`` image, in raster order;
    ``wrap`` (seamless): around a torus (see the module's doc) when it takes more than one."""
    tile = max(MIN_TILE, tile)
    if wrap and max(hw) > tile:
        return _torus_grid(hw, tile)
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


def crop(img: Tensor, tile: Tile) -> Tensor:
    """The tile's pixels of ``img`` ``[..., H, W]``, read around the border for a tile that
    wraps."""
    if not tile.wraps:
        ys, xs = tile.slices
        return img[..., ys, xs]
    rows, cols = _wrapped_indices(tile, img.shape[-2:], img.device)
    return img.index_select(-2, rows).index_select(-1, cols)


def _wrapped_indices(tile: Tile, hw, device) -> tuple[Tensor, Tensor]:
    """The image rows and columns a tile covers, around the border."""
    return (torch.arange(tile.top, tile.bottom, device=device) % hw[0],
            torch.arange(tile.left, tile.right, device=device) % hw[1])


def seams(tiles: list[Tile]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The blended bands: (row ranges, column ranges), each ``(start, end)`` exclusive."""
    rows = sorted({(t.top, t.top + t.overlap_top) for t in tiles if t.overlap_top})
    cols = sorted({(t.left, t.left + t.overlap_left) for t in tiles if t.overlap_left})
    return rows, cols


def _ramp(n: int, length: int, width: int | None = None,
          device: torch.device | None = None) -> Tensor:
    """``length`` weights, rising smoothly (smoothstep) from near 0 to near 1 over ``width``
    entries centred in the first ``n`` (``width`` None: over all ``n``), 1 after them."""
    width = n if width is None else max(1, min(n, width))
    out = torch.ones(length, device=device)
    if n > 0:
        t = ((torch.arange(n, dtype=torch.float32, device=device) + 0.5 - (n - width) / 2)
             / width).clamp(0, 1)
        out[:n] = t * t * (3 - 2 * t)
    return out


def _ramps(tile: Tile, texture: bool, device: torch.device | None = None
           ) -> tuple[Tensor, Tensor]:
    """The tile's blend weights as a column (rows) and a row (columns) factor."""
    h, w = tile.bottom - tile.top, tile.right - tile.left

    def ramp(n: int, length: int) -> Tensor:
        return _ramp(n, length, max(2, n // NARROW_FRACTION) if texture else None, device)
    return ramp(tile.overlap_top, h)[:, None], ramp(tile.overlap_left, w)[None, :]


def weights(tile: Tile, texture: bool = False) -> Tensor:
    """The tile's blend weights, ``[1, 1, h, w]``: 0→1 across its overlaps with earlier tiles,
    over the whole overlap, or (``texture``) over its middle 1/NARROW_FRACTION."""
    rows, cols = _ramps(tile, texture)
    return (rows * cols)[None, None]


def _low_pass(img: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur (reflected edges) of an ``[N, C, H, W]`` image."""
    radius = _radius(sigma)
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    c = img.shape[1]
    # Reflection needs a pad shorter than the side: a thin image gets a shorter kernel.
    pad_h, pad_w = min(radius, img.shape[-2] - 1), min(radius, img.shape[-1] - 1)
    k_h, k_w = k[radius - pad_h:radius + pad_h + 1], k[radius - pad_w:radius + pad_w + 1]
    out = torch.nn.functional.pad(img, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    out = torch.nn.functional.conv2d(out, (k_h / k_h.sum()).view(1, 1, -1, 1)
                                     .expand(c, 1, -1, 1), groups=c)
    return torch.nn.functional.conv2d(out, (k_w / k_w.sum()).view(1, 1, 1, -1)
                                      .expand(c, 1, 1, -1), groups=c)


def _radius(sigma: float) -> int:
    return max(1, math.ceil(3 * sigma))


def _blend_band(region: Tensor, result: Tensor, tile: Tile, rows: slice, cols: slice,
                sigma: float) -> Tensor:
    """The two-band blend of ``region`` (the canvas) and ``result`` inside the crop
    ``rows, cols`` of the tile. Exact where the crop reaches the blur's radius beyond."""
    old, new = region[..., rows, cols], result[..., rows, cols]
    w_rows, w_cols = _ramps(tile, False, region.device)
    n_rows, n_cols = _ramps(tile, True, region.device)
    wide = (w_rows[rows] * w_cols[:, cols])[None, None].to(region.dtype)
    narrow = (n_rows[rows] * n_cols[:, cols])[None, None].to(region.dtype)
    # The canvas's low band from the overlap alone (a normalised blur): past the overlap it
    # holds the level's starting image, which must not leak into the blend.
    shared = (wide < 1).to(region.dtype)
    low_old = _low_pass(old * shared, sigma) / _low_pass(shared, sigma).clamp_min(1e-6)
    low_new = _low_pass(new, sigma)
    high = (old - low_old).mul_(1 - narrow).add_((new - low_new).mul_(narrow))
    return low_old.mul_(1 - wide).add_(low_new.mul_(wide)).add_(high)


def blend_into(canvas: Tensor, tile: Tile, result: Tensor) -> None:
    """Join ``result`` (the tile's pixels) to ``canvas`` in place, in two bands, on the
    canvas's device.

    Colour and shading (a Gaussian low pass) cross-fade over the whole overlap, so no step
    shows; the fine texture (the rest) changes over the overlap's middle half.
    A cross-fade of the fine texture over the whole overlap averages two different textures
    over a wide band, and an average of two textures is flatter than either: the band was
    softer (seam measure −3.4 % at 384 px with one band, see benchmarks/README.md).

    Past the overlap the blend is the tile's own pixels (both weights are 1 there), so only the
    overlap bands are blurred, each with the blur's radius of context beyond it: the top band
    across the tile's width, the left one down its height. (Blurring the whole tile, as
    before, cost 0.59 s for a 512 px tile on 2 CPU cores; the result is the same within
    float rounding: ``tests/test_tiles.py``.)
    """
    if tile.wraps:
        _blend_across_the_border(canvas, tile, result)
        return
    ys, xs = tile.slices
    region = canvas[..., ys, xs]
    result = result.to(canvas.device, canvas.dtype)
    top, left = tile.overlap_top, tile.overlap_left
    if max(top, left) == 0:
        region.copy_(result)
        return
    sigma = max(1.0, max(top, left) / LOW_PASS_FRACTION)
    reach = _radius(sigma)
    h, w = region.shape[-2:]
    # The crops blurred: each band with the blur's reach beyond it; one crop of the whole tile
    # when the two would cover more (wide overlaps: the grid spreads its tiles evenly).
    crops = ([(slice(0, min(h, top + reach)), slice(0, w))] if top else []) + \
            ([(slice(0, h), slice(0, min(w, left + reach)))] if left else [])
    if sum((r.stop - r.start) * (c.stop - c.start) for r, c in crops) >= h * w:
        crops = [(slice(0, h), slice(0, w))]
    blended = [_blend_band(region, result, tile, rows, cols, sigma) for rows, cols in crops]
    # The bands' pixels, each from the first crop that holds it: the top band across the
    # width, the left band below it.
    bands = [(slice(0, top), slice(0, w), blended[0])] if top else []
    if left:
        bands.append((slice(top, h), slice(0, left), blended[-1]))
    region.copy_(result)
    for rows, cols, pixels in bands:
        region[..., rows, cols].copy_(pixels[..., rows, cols])


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


def centre_seam(img: Tensor, half: int | None = None) -> float:
    """``seam_ratio`` of the bands around the two centre lines of ``[C, H, W]``: where a
    wrapped result's borders meet once it is rolled (or offset) by half its size. ``half``:
    the bands' half width in lines (None: a sixteenth of the side, at least 2)."""
    h, w = img.shape[-2:]
    bh, bw = (half, half) if half else (max(2, h // 16), max(2, w // 16))
    return seam_ratio(img, [(h // 2 - bh, h // 2 + bh)], [(w // 2 - bw, w // 2 + bw)])


def _blend_across_the_border(canvas: Tensor, tile: Tile, result: Tensor) -> None:
    """``blend_into`` for a tile that reaches across the border (seamless), on a copy of the
    canvas's pixels under the tile (read and written back around the border): its top and left
    bands as any tile's; its bottom and right bands (the first tile row's and column's pixels)
    the same way on the copy flipped, where they are a top and a left band."""
    h, w = tile.bottom - tile.top, tile.right - tile.left
    rows, cols = _wrapped_indices(tile, canvas.shape[-2:], canvas.device)
    region = canvas.index_select(-2, rows).index_select(-1, cols)
    earlier = region.clone()
    blend_into(region, Tile(0, 0, h, w, tile.overlap_top, tile.overlap_left), result)
    for dim, band in ((-2, tile.overlap_bottom), (-1, tile.overlap_right)):
        if band:
            flipped = earlier.flip(dim)
            blend_into(flipped, Tile(0, 0, h, w, band if dim == -2 else 0,
                                     band if dim == -1 else 0), region.flip(dim))
            region.copy_(flipped.flip(dim))
    canvas[..., rows[:, None], cols[None, :]] = region
