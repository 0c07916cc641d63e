"""Running a fully convolutional model on an image too large for one session run, in overlapping tiles.

A tile's core is the part of the input it answers for; around it the tile carries a halo of real
neighbouring pixels at least as wide as the model's receptive field, so every output pixel of the core
sees exactly the inputs it sees in the whole image. Cropping each tile's output to its core and laying
the crops side by side gives the untiled output (within float rounding; tests/service/test_tiling.py).
Tile edges that are image edges need no halo: there the model pads exactly as it does untiled.

Geometry, per model: `ratio` is output side / input side (1/8 for an encoder of stride 8, 8 for its
decoder, 1 for the colorizer); `align` is what input sides and tile offsets must be multiples of (the
stride, so a tile's latent grid is the image's); `halo` is measured by `measure_halo`, in input units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

Region = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open), in input units


@dataclass(frozen=True)
class Geometry:
    ratio: Fraction  # output side / input side
    align: int  # input sides and tile offsets are multiples of this
    halo: int | None  # input units of context each side of a tile's core; None: not local, never tiled

    def out(self, n: int) -> int:
        """An input length (a multiple of align) in output units."""
        return int(n * self.ratio)


@dataclass(frozen=True)
class Tile:
    core: Region  # the input region this tile answers for
    src: Region  # the core plus its halo, clipped to the image: what the model runs on

    @property
    def src_pixels(self) -> int:
        y0, y1, x0, x1 = self.src
        return (y1 - y0) * (x1 - x0)


def plan_tiles(height: int, width: int, geometry: Geometry, max_src_pixels: int) -> list[Tile]:
    """Tiles covering a (height, width) input (multiples of align), each run at most `max_src_pixels` input
    positions where the halo allows (a tile's core is never smaller than one aligned unit).

    One tile (the whole input) when it fits or the model is not local."""
    if height * width <= max_src_pixels or geometry.halo is None:
        return [Tile((0, height, 0, width), (0, height, 0, width))]
    a, halo = geometry.align, geometry.halo
    # Square cores where the image allows; a thin image (one row of stride units) gets long, flat tiles.
    side = max(a, (math.isqrt(max_src_pixels) - 2 * halo) // a * a)
    core_h = min(height, side)
    core_w = min(width, max(a, (max_src_pixels // (core_h + 2 * halo) - 2 * halo) // a * a))
    tiles = []
    for y in range(0, height, core_h):
        for x in range(0, width, core_w):
            y1, x1 = min(y + core_h, height), min(x + core_w, width)
            tiles.append(Tile((y, y1, x, x1), (max(0, y - halo), min(height, y1 + halo), max(0, x - halo), min(width, x1 + halo))))
    return tiles


def run_tile(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, tile: Tile, geometry: Geometry, out: np.ndarray) -> None:
    """Run the model on one tile of x (N, C, H, W) and write its core's output into out (N, C', H*r, W*r)."""
    sy0, sy1, sx0, sx1 = tile.src
    cy0, cy1, cx0, cx1 = tile.core
    result = run(np.ascontiguousarray(x[:, :, sy0:sy1, sx0:sx1]))
    g = geometry.out
    out[:, :, g(cy0):g(cy1), g(cx0):g(cx1)] = result[:, :, g(cy0 - sy0):g(cy1 - sy0), g(cx0 - sx0):g(cx1 - sx0)]


def run_tiled(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, geometry: Geometry, max_src_pixels: int,
              out_channels: int) -> np.ndarray:
    """The whole model output for x (N, C, H, W), computed tile by tile."""
    n, _, h, w = x.shape
    out = np.empty((n, out_channels, geometry.out(h), geometry.out(w)), dtype=np.float32)
    for tile in plan_tiles(h, w, geometry, max_src_pixels):
        run_tile(run, x, tile, geometry, out)
    return out


def measure_halo(run: Callable[[np.ndarray], np.ndarray], channels: int, ratio: Fraction, align: int, side: int,
                 max_side: int, seed: int = 0) -> int | None:
    """The context a tile needs, in input units, measured the way a receptive field is defined: change one
    input position and see which outputs move.

    Two random inputs, one changed position each (ReLUs can hide a change along some paths; two inputs make
    that vanishingly unlikely at the field's edge). The farthest output that moves bounds the field; the
    halo adds an aligned unit and a quarter for safety. If outputs move up to the probe's border the field
    may be wider than the probe: it doubles, up to `max_side`, after which the model counts as not local
    (None: never tiled)."""
    rng = np.random.default_rng(seed)
    side = max(align, side // align * align)
    while True:
        reach = 0.0
        touches_border = False
        for trial in range(2):
            x = rng.random((1, channels, side, side), dtype=np.float32)
            base = run(x)
            cy, cx = side // 2 + trial, side // 2 - trial
            x[0, :, cy, cx] = 1.0 - x[0, :, cy, cx] + 0.5
            moved = np.abs(run(x) - base).max(axis=(0, 1)) > 1e-6
            ys, xs = np.nonzero(moved)
            if len(ys) == 0:
                continue
            out_side = moved.shape[0]
            touches_border |= bool(ys.min() == 0 or xs.min() == 0 or ys.max() == out_side - 1 or xs.max() == out_side - 1)
            # The centre of output position o, in input units.
            centre = lambda o: (o + 0.5) / float(ratio) - 0.5  # noqa: E731
            reach = max(reach, float(np.abs(centre(ys) - cy).max()), float(np.abs(centre(xs) - cx).max()))
        if not touches_border:
            pad = max(align, math.ceil(1 / float(ratio)))
            return math.ceil((math.ceil(reach * 1.25) + pad) / align) * align
        if side * 2 > max_side:
            return None
        side *= 2
