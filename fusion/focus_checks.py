"""Checks on what a focus measure returns, before the engine ranks slices by it."""
from __future__ import annotations

import numpy as np

from fusion.errors import InvalidFocusMeasureError, slice_name


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
        f"{slice_name(slice_index)}: the focus measure {measure!r} gave NaN or infinity at {bad} of "
        f"{focus_map.size} pixels{hint}; nothing can be ranked by it", stack)


def no_focus_information(focus_scores: list[float], stack: str) -> str | None:
    """A warning when no slice is sharper than another anywhere (all identical, or all blank),
    so that the depth map means nothing; None when the scores differ."""
    if len(focus_scores) < 2:
        return None
    scores = np.asarray(focus_scores, np.float64)
    spread = float(scores.max() - scores.min())
    if spread > 1e-6 * max(float(np.abs(scores).max()), 1e-30):
        return None
    what = "blank" if float(np.abs(scores).max()) == 0.0 else "equally sharp (identical?)"
    return (f"{stack}: no focus information: all {len(focus_scores)} slices are {what}; the fused image is "
            "their average and the depth map says nothing")
