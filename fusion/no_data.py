"""NaN in a float slice: no data there, as outside an aligned slice's coverage.

Registration tools pad what they moved in with NaN (Fiji's float stacks, MATLAB, napari's transforms), and a masked
acquisition leaves NaN where nothing was measured. One such pixel used to fail the whole stack. Now a slice's NaN
pixels are filled with the nearest pixel that has data, so that no focus measure sees an edge the specimen does not
have, and they count as not covered: the fused image takes them from the slices that have data there. Where no
slice has any, the fused image and the depth map say NaN. Infinity is no convention for "no data", and no measure
can rank it: it stays an error.
"""
from __future__ import annotations

import numpy as np

from fusion.errors import INFINITY_SAID, InvalidPixelsError, slice_name


def missing_pixels(pixels: np.ndarray, stack: str, index: int) -> np.ndarray | None:
    """(H, W) bool, True where the float slice has no data (NaN in any channel); None where it has data throughout.
    Raises InvalidPixelsError for infinity."""
    if np.isfinite(pixels).all():
        return None
    if np.isinf(pixels).any():
        raise InvalidPixelsError(f"{stack}: {slice_name(index)} {INFINITY_SAID}")
    missing = np.isnan(pixels)
    return missing.any(axis=2) if missing.ndim == 3 else missing


def filled(pixels: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """A copy of ``pixels`` with each pixel that has no data taken from the nearest pixel that has (0 in a slice
    with no data at all)."""
    from scipy import ndimage  # (here: only a slice with NaN needs it, and importing it cost every run some 0.2 s)

    if missing.all():
        return np.zeros_like(pixels)
    nearest = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return pixels[nearest[0], nearest[1]]


class MissingData:
    """What a stack's slices lacked: which slices had pixels without data, and where no slice had any."""

    def __init__(self):
        self.slices: list[tuple[int, float]] = []   # (slice index, its share of pixels without data)
        self._any_complete = False
        self._nowhere: np.ndarray | None = None   # True where no slice so far has data

    def add(self, index: int, missing: np.ndarray | None) -> None:
        if missing is None:
            self._any_complete, self._nowhere = True, None
            return
        self.slices.append((index, float(missing.mean())))
        if not self._any_complete:
            self._nowhere = missing.copy() if self._nowhere is None else np.logical_and(self._nowhere, missing)

    def nowhere(self) -> np.ndarray | None:
        """Where no slice had data (None: every pixel had data in some slice)."""
        return self._nowhere if self._nowhere is not None and self._nowhere.any() else None

    def warning(self, stack: str) -> str | None:
        if not self.slices:
            return None
        shown = ", ".join(f"{index} ({share:.1%})" for index, share in self.slices[:8])
        more = f" and {len(self.slices) - 8} more" if len(self.slices) > 8 else ""
        several = len(self.slices) > 1
        said = (f"{stack}: slice{'s' if several else ''} {shown}{more} (counting from 0; the share of pixels) "
                f"hold{'' if several else 's'} NaN, taken as no data: those pixels come from the slices that have data "
                "there")
        nowhere = self.nowhere()
        if nowhere is not None:
            said += f"; {int(nowhere.sum())} pixels have data in no slice, and are NaN in the fused image and depth map"
        return said
