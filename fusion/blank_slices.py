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


class HeldBlanks:
    """A composition's blank slices: each is told apart as it comes (``take``), and held while no slice with
    detail has come (``only_blank``), so that a stack of blank slices only can be fused from them at its end."""

    def __init__(self):
        self.held: list[BlankSlice] = []
        self.only_blank = True   # no slice with detail so far

    def take(self, pixels: np.ndarray, gray: np.ndarray, index: int, z: float) -> bool:
        """Whether the slice (``pixels``, its ``gray``) is blank: then it is held, while every slice so far is;
        a slice with detail lets go of those held (they get no say beside it)."""
        values = blank_values(pixels)
        if values is None:
            self.only_blank, self.held = False, []
            return False
        if self.only_blank:
            self.held.append(BlankSlice(values, float(gray.flat[0]), index, z))
        return True

    def mean_frame(self, shape: tuple[int, ...]) -> np.ndarray:
        """The held slices' mean as a float32 frame (H, W, C): what they fuse to."""
        mean = np.mean([blank.values for blank in self.held], axis=0, dtype=np.float64)
        channels = shape[2] if len(shape) == 3 else 1
        return np.broadcast_to(np.asarray(mean, np.float32), shape[:2] + (channels,)).copy()
