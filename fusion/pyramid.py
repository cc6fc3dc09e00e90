"""Laplacian pyramids (Burt and Adelson): an image as band-pass levels plus a low-pass residual.

Level 0 is full resolution; each level halves height and width (rounding up), with the
5-tap binomial filter of ``cv2.pyrDown``/``pyrUp``. ``collapse(laplacian_pyramid(x, n))``
gives ``x`` back to float32 rounding. Arrays keep numpy order (H, W[, C]); a mono image
stays 2-D at every level.
"""
from __future__ import annotations

from collections.abc import Iterator

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
    return list(laplacian_levels(image, n_levels))


def laplacian_levels(image: np.ndarray, n_levels: int) -> Iterator[np.ndarray]:
    """The levels of ``laplacian_pyramid`` one at a time, finest first. Each Gaussian level is let
    go once its band is made, so a caller that folds each band in and drops it holds about one
    band at a time instead of the whole pyramid (at 5 MP RGB, 80 MB less at the peak). The float32
    copy of ``image`` is made here, so that it too can go after the first band."""
    gaussian: list[np.ndarray | None] = list(gaussian_pyramid(np.ascontiguousarray(image, dtype=np.float32),
                                                              n_levels))
    del image
    for k in range(n_levels):
        finer, coarser = gaussian[k], gaussian[k + 1]
        assert finer is not None and coarser is not None
        gaussian[k] = None
        band = _expand(coarser, finer.shape)
        np.subtract(finer, band, out=band)  # in place: one temporary less per level
        del finer, coarser  # before the yield: the caller works on the band while this waits
        yield band
        del band
    residual = gaussian[-1]
    assert residual is not None
    yield residual


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
