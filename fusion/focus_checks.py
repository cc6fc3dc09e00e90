"""Checks on what a focus measure returns, before the engine ranks slices by it."""
from __future__ import annotations

import numpy as np

from fusion.errors import InvalidFocusMeasureError


def check_focus_map(focus_map: np.ndarray, measure: str, stack: str, slice_index: int) -> None:
    """Raise InvalidFocusMeasureError when ``focus_map`` holds NaN or infinity.

    A NaN never wins a comparison, so without this check the first slice would be chosen
    everywhere and the result would look valid.
    """
    # A float64 sum cannot overflow for float32 input, and NaN or infinity anywhere carries into it.
    if np.isfinite(np.sum(focus_map, dtype=np.float64)):
        return
    bad = int(np.count_nonzero(~np.isfinite(focus_map)))
    hint = " (are its weights damaged?)" if measure == "ums" else ""
    raise InvalidFocusMeasureError(
        f"slice {slice_index}: the focus measure {measure!r} gave NaN or infinity at {bad} of "
        f"{focus_map.size} pixels{hint}; nothing can be ranked by it", stack)
