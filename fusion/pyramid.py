"""Laplacian pyramids (Burt and Adelson): an image as band-pass levels plus a low-pass residual.

Level 0 is full resolution; each level halves height and width (rounding up), with the
5-tap binomial filter of ``cv2.pyrDown``/``pyrUp``. ``collapse(laplacian_pyramid(x, n))``
gives ``x`` back to float32 rounding. Arrays keep numpy order (H, W[, C]); a mono image
stays 2-D at every level.
"""
from __future__ import annotations

import cv2
import numpy as np

COARSEST_SIDE_PX = 8   # the residual keeps at least this many pixels on its short side
MAX_LEVELS = 7         # 2^7 = 128 px: coarser bands carry illumination, not focus


def n_levels_for(shape: tuple[int, ...]) -> int:
    """How many band-pass levels a frame of this shape gets (0 for tiny frames)."""
    short_side = min(shape[0], shape[1])
    levels = 0
    while levels < MAX_LEVELS and short_side >= 2 * COARSEST_SIDE_PX:
        short_side = (short_side + 1) // 2
        levels += 1
    return levels


def _expand(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    expanded = cv2.pyrUp(image, dstsize=(shape[1], shape[0]))
    return expanded.reshape(shape[:2] + image.shape[2:])  # cv2 drops a trailing channel of 1


def reduce(image: np.ndarray) -> np.ndarray:
    reduced = cv2.pyrDown(image)
    return reduced.reshape(reduced.shape[:2] + image.shape[2:])


def gaussian_pyramid(image: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """[image, reduced once, ..., reduced n_levels times]."""
    levels = [image]
    for _ in range(n_levels):
        levels.append(reduce(levels[-1]))
    return levels


def laplacian_pyramid(image: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """n_levels band-pass float32 levels and the low-pass residual: n_levels + 1 arrays."""
    gaussian = gaussian_pyramid(np.ascontiguousarray(image, dtype=np.float32), n_levels)
    bands = []
    for k in range(n_levels):
        band = _expand(gaussian[k + 1], gaussian[k].shape)
        bands.append(np.subtract(gaussian[k], band, out=band))  # in place: one 5 MP temporary less per level
    return bands + [gaussian[-1]]


def collapse(levels: list[np.ndarray]) -> np.ndarray:
    """The image whose Laplacian pyramid is ``levels``."""
    image = levels[-1]
    for band in reversed(levels[:-1]):
        expanded = _expand(image, band.shape)
        image = np.add(band, expanded, out=expanded)
    return image


def level_shapes(shape: tuple[int, ...], n_levels: int) -> list[tuple[int, ...]]:
    """The (H, W[, C]) of every level of a pyramid of a frame of ``shape``."""
    shapes = [tuple(shape)]
    for _ in range(n_levels):
        height, width = shapes[-1][:2]
        shapes.append(((height + 1) // 2, (width + 1) // 2) + tuple(shape[2:]))
    return shapes
