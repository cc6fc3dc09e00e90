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


# Below this share of the frame with a depth, the slices barely differ in focus anywhere. Sparse specimens
# (beads, a few cells on an empty field) still give several per cent; a drive that moves no focus gives ~1%.
LITTLE_DEPTH_SHARE = 0.02


def focus_warning(focus_scores: list[float], depth: np.ndarray, stack: str) -> str | None:
    """What a fused stack should say about its focus, if anything: ``no_focus_information`` where the slices are
    all alike; else "little focus information" where a depth is known at less than LITTLE_DEPTH_SHARE of the
    frame: the focus barely changed through the stack. Only the pyramid composition leaves a depth undefined
    (textureless areas); blend and pick give every pixel one, and never say the second."""
    if len(focus_scores) < 2:
        return None
    blank = no_focus_information(focus_scores, stack)
    share = float(np.isfinite(depth).mean()) if depth.size else 0.0
    if blank is not None or share >= LITTLE_DEPTH_SHARE:
        return blank
    return (f"{stack}: little focus information: a depth is known at only {100 * share:.1f}% of the frame, so the "
            "slices barely differ in focus anywhere (does the focus drive move the focus? is the specimen within "
            "the sweep?); the fused image is close to their average")
