"""Blank slices: one value throughout, in every channel (a dark frame, a camera that started before the light,
a shutter that missed). They show nothing of the specimen, so the compositions give them no say; a stack of
blank slices only is fused from them all the same, to their value."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def blank_values(pixels: np.ndarray) -> np.ndarray | None:
    """The slice's value per channel where every channel holds one value throughout, else None."""
    first = pixels[0, 0]
    if not np.all(pixels[0] == first):  # (a slice with detail nearly always shows it in its first row)
        return None
    if not np.array_equal(np.min(pixels, axis=(0, 1)), np.max(pixels, axis=(0, 1))):
        return None
    return np.array(first, copy=True)


@dataclass(frozen=True)
class BlankSlice:
    """A blank slice held until a slice with detail comes: its value per channel, its grey's, its index."""

    values: np.ndarray   # () or (C,), in the slices' dtype
    gray: float
    index: int
    z: float             # its z, or its index where z is not known

    def frame(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The slice and its grey, remade."""
        return np.full(shape, self.values, dtype), np.full(shape[:2], self.gray, np.float32)


def mean_frame(blanks: list[BlankSlice], shape: tuple[int, ...]) -> np.ndarray:
    """The blank slices' mean as a float32 frame (H, W, C): what they fuse to."""
    mean = np.mean([blank.values for blank in blanks], axis=0, dtype=np.float64)
    channels = shape[2] if len(shape) == 3 else 1
    return np.broadcast_to(np.asarray(mean, np.float32), shape[:2] + (channels,)).copy()
