"""The end of a pyramid fusion's finest level in one pass: weighted mean, plus the coarser levels expanded,
scaled, kept within the slices' range and rounded to the slices' dtype.

Made the plain way, those are seven passes over a frame's worth of float32 (a 5 MP RGB frame: 60 MB each),
one after the other on one core, and the end of a live stack waits for them: 0.05 s of its 0.26 s at 5 MP.
Here each value is read once and written once, rows in parallel, with the same float32 operations in the
same order, so the image is the same to the bit (``tests/test_finest_level.py``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusion import pyramid
from fusion.parallel_kernels import one_at_a_time

TINY_WEIGHT = np.float32(1e-30)   # a pixel no slice weighed: its mean is 0, not 0 / 0


def finest_to_dtype(weighted: np.ndarray, weights: np.ndarray, coarser: np.ndarray, low: np.ndarray,
                    high: np.ndarray, scale: float, dtype: np.dtype, strip_values: int) -> np.ndarray:
    """The fused image (H, W, C) in ``dtype``: (weighted / weights + ``coarser`` expanded) * ``scale``, brought
    within [``low``, ``high``] (the slices' least and greatest value, per pixel and channel) and, for integer
    dtypes, rounded (half to even) and clipped to the dtype's range. ``weighted``, ``weights``: the finest level's
    running sums (H, W, C) float32; ``coarser``: the next level's image, collapsed (h, w, C) float32."""
    dtype = np.dtype(dtype)
    height, width, channels = weighted.shape
    n = width * channels
    out = np.empty(weighted.shape, dtype)
    rounds = dtype.kind in "ui"
    bounds = np.iinfo(dtype) if rounds else None
    smallest = np.float32(bounds.min if bounds is not None else 0)
    largest = np.float32(bounds.max if bounds is not None else 0)
    low_rows, high_rows = low.reshape(height, n), high.reshape(height, n)
    weighted_rows, weight_rows = weighted.reshape(height, n), weights.reshape(height, n)
    out_rows = out.reshape(height, n)
    for top, bottom in pyramid.row_strips(weighted.shape, strip_values):
        expanded = pyramid.expand_rows(coarser, weighted.shape, top, bottom).reshape(bottom - top, n)
        rows = slice(top, bottom)
        _finest_rows(weighted_rows[rows], weight_rows[rows], expanded, low_rows[rows], high_rows[rows],
                     np.float32(scale), scale != 1.0, rounds, smallest, largest, out_rows[rows])
    return out


@one_at_a_time  # (fusion.parallel_kernels: one at a time where the threading layer needs it)
@njit(parallel=True, cache=True, nogil=True)
def _finest_rows(weighted, weights, expanded, low, high, scale, scaled, rounds, smallest, largest, out):
    for y in prange(weighted.shape[0]):
        for j in range(weighted.shape[1]):
            value = weighted[y, j] / max(weights[y, j], TINY_WEIGHT) + expanded[y, j]
            if scaled:
                value *= scale
            # As np.maximum and np.minimum: NaN (no slice has data there) stays NaN.
            least, most = np.float32(low[y, j]), np.float32(high[y, j])
            if least != least or value < least:
                value = least
            if most != most or value > most:
                value = most
            if rounds:
                value = min(max(np.rint(value), smallest), largest)
            out[y, j] = value


def mean_plus_coarser(weighted: np.ndarray, weights: np.ndarray, coarser: np.ndarray, strip_values: int) -> np.ndarray:
    """A coarser level's part of the end: its weighted mean plus ``coarser`` (the next level's image, collapsed)
    expanded, made in ``weighted`` itself (H, W, C float32; returned) in one pass over rows in parallel, where the
    plain way took three on one core (np.maximum, np.divide, +=): the same float32 operations, the same numbers."""
    height, width, channels = weighted.shape
    weighted_rows, weight_rows = weighted.reshape(height, width * channels), weights.reshape(height, width * channels)
    for top, bottom in pyramid.row_strips(weighted.shape, strip_values):
        expanded = pyramid.expand_rows(coarser, weighted.shape, top, bottom).reshape(bottom - top, width * channels)
        _mean_plus_rows(weighted_rows[top:bottom], weight_rows[top:bottom], expanded)
    return weighted


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def _mean_plus_rows(weighted, weights, expanded):
    for y in prange(weighted.shape[0]):
        for j in range(weighted.shape[1]):
            weighted[y, j] = weighted[y, j] / max(weights[y, j], TINY_WEIGHT) + expanded[y, j]

