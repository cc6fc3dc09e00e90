"""Laplacian pyramids (Burt and Adelson): an image as band-pass levels plus a low-pass residual.

Level 0 is full resolution; each level halves height and width (rounding up), with the
5-tap binomial filter of ``cv2.pyrDown``/``pyrUp``. ``collapse(laplacian_pyramid(x, n))``
gives ``x`` back to float32 rounding. Arrays keep numpy order (H, W[, C]); a mono image
stays 2-D at every level.
"""
from __future__ import annotations

import math
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


WHOLE_STRIPS = 8   # a level of up to this many strips' worth goes whole: cutting it only adds calls


def strip_rows(shape: tuple[int, ...], strip_values: int) -> int:
    """Rows per strip of an array of ``shape`` (H, W[, C]) for strips of about ``strip_values`` values
    (all its rows where it holds no more than WHOLE_STRIPS strips' worth)."""
    row_values = max(1, math.prod(shape[1:]))
    if shape[0] * row_values <= WHOLE_STRIPS * strip_values:
        return max(1, shape[0])
    return max(1, strip_values // row_values)


def row_strips(shape: tuple[int, ...], strip_values: int) -> Iterator[tuple[int, int]]:
    """(top, bottom) of each strip of rows of an array of ``shape``, from the first row to the last."""
    rows = strip_rows(shape, strip_values)
    for top in range(0, shape[0], rows):
        yield top, min(shape[0], top + rows)


def reduce_in_strips(image: np.ndarray, strip_values: int) -> np.ndarray:
    """``reduce`` of ``image`` as float32, made strip by strip (of about ``strip_values`` values),
    without a float32 copy of the whole image (60 MB at 5 MP RGB). The same numbers to the bit:
    each strip reads two rows more than its 5-tap filter reaches, either side, and the image's
    own edges are the strips' edges."""
    height, width = image.shape[:2]
    out_height = (height + 1) // 2
    reduced = np.empty((out_height, (width + 1) // 2) + image.shape[2:], np.float32)
    # Strips sized by what they read, 4 of the image's values per reduced one (counted in reduced
    # values, a 5 MP frame's reduction went whole: a float32 copy of the frame, 60 MB).
    for top, bottom in row_strips(reduced.shape, max(1, strip_values // 4)):
        first = max(0, 2 * top - 4)  # even: the strip's rows reduce to rows first // 2 onwards
        strip = reduce(np.ascontiguousarray(image[first:min(height, 2 * bottom + 4)], dtype=np.float32))
        reduced[top:bottom] = strip[top - first // 2:bottom - first // 2]
    return reduced


def expand_rows(coarser: np.ndarray, shape: tuple[int, ...], top: int, bottom: int) -> np.ndarray:
    """Rows ``top``..``bottom`` of ``_expand(coarser, shape)``, from a strip of ``coarser``: the same
    numbers to the bit (each expanded row needs the coarse rows either side of it; the strip has
    two more, or the image's own edge)."""
    first, last = max(0, top // 2 - 2), min(coarser.shape[0], (bottom + 1) // 2 + 2)
    # The whole expansion ends on an odd row where ``shape`` is odd: so does the strip that reaches its end.
    height = shape[0] - 2 * first if last == coarser.shape[0] else 2 * (last - first)
    return _expand(coarser[first:last], (height,) + tuple(shape[1:]))[top - 2 * first:bottom - 2 * first]


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


def collapse_in_place(levels: list[np.ndarray], strip_values: int) -> np.ndarray:
    """``collapse``, summed into the bands themselves (they are overwritten; the image is the finest
    one), each coarser level expanded in strips of about ``strip_values`` values: no new memory the
    size of a level."""
    image = levels[-1]
    for band in reversed(levels[:-1]):
        for top, bottom in row_strips(band.shape, strip_values):
            band[top:bottom] += expand_rows(image, band.shape, top, bottom)
        image = band
    return image


def level_shapes(shape: tuple[int, ...], n_levels: int) -> list[tuple[int, ...]]:
    """The (H, W[, C]) of every level of a pyramid of a frame of ``shape``."""
    shapes = [tuple(shape)]
    for _ in range(n_levels):
        height, width = shapes[-1][:2]
        shapes.append(((height + 1) // 2, (width + 1) // 2) + tuple(shape[2:]))
    return shapes
