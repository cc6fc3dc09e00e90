"""Turning a decision map (or running weighted sums) into the fused image."""
from __future__ import annotations

import numpy as np

from fusion.slice_store import SliceSource


def to_dtype(values: np.ndarray, dtype: np.dtype, overwrite: bool = False) -> np.ndarray:
    """Float values back to the slices' dtype: rounded and clipped for integers. ``overwrite``:
    ``values`` is a temporary of the caller's, rounded in place (a 5 MP RGB array less)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        rounded = np.rint(values, out=values if overwrite and values.dtype.kind == "f" else None)
        return np.clip(rounded, info.min, info.max, out=rounded).astype(dtype)
    return values.astype(dtype)


def as_channels_last(pixels: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1) view; (H, W, C) unchanged."""
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def recompose_where_changed(picked: np.ndarray, running_index: np.ndarray, decision: np.ndarray,
                            source: SliceSource) -> np.ndarray:
    """Copy each pixel from its chosen slice, reading back only slices the cleaning brought in.

    ``picked`` already holds, per pixel, the slice of ``running_index`` (the raw argmax); only
    where ``decision`` differs is a slice read again, and each such slice once.
    """
    fused = picked.copy()
    changed = decision != running_index
    if not changed.any():
        return fused
    for index in np.unique(decision[changed]):
        where = changed & (decision == index)
        fused[where] = as_channels_last(source.read_slice(int(index)))[where]
    return fused


def feather(decision: np.ndarray, source: SliceSource, feather_px: float, dtype: np.dtype) -> np.ndarray:
    """Blend across decision-map boundaries with Gaussian weights of sigma ``feather_px``.

    Each slice that the decision map uses is read once; its weight is computed only inside the
    bounding box of its region grown by 3 sigma, so far from a seam a pixel is still a copy.
    """
    from scipy import ndimage  # a 0.4 s import that only feathering needs

    height, width = decision.shape
    margin = int(np.ceil(3 * feather_px))
    fused_sum = None
    weight_sum = np.zeros((height, width), np.float32)
    for index in np.unique(decision):
        mask = decision == index
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box = (slice(max(0, rows[0] - margin), min(height, rows[-1] + margin + 1)),
               slice(max(0, cols[0] - margin), min(width, cols[-1] + margin + 1)))
        weight = ndimage.gaussian_filter(mask[box].astype(np.float32), feather_px, mode="nearest")
        pixels = as_channels_last(source.read_slice(int(index)))
        if fused_sum is None:
            fused_sum = np.zeros((height, width, pixels.shape[2]), np.float32)
        fused_sum[box] += weight[:, :, None] * pixels[box]
        weight_sum[box] += weight
    return to_dtype(fused_sum / np.maximum(weight_sum, 1e-12)[:, :, None], dtype, overwrite=True)
