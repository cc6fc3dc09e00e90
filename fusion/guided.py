"""Composing a stack from another stack's decision map, so that channels stay in register.

In fluorescence, each channel shows different structures at the same depths; fusing each
on its own lets them choose different slices where one is dark or noisy. Taking the
decision of one channel (the one with the most structure) and copying every other
channel's pixels from the slices it chose keeps the channels in register and gives them
one depth map.
"""
from __future__ import annotations

import numpy as np

from fusion import compose
from fusion.slice_store import SliceSource


def compose_from_decision(decision: np.ndarray, source: SliceSource, feather_px: float = 0.0) -> np.ndarray:
    """Each pixel from the slice ``decision`` (int, (H, W)) names, read from ``source``.

    ``feather_px`` > 0 blends across the seams with a Gaussian of that sigma. The result has
    the source's slice shape and dtype; each slice the decision uses is read once.
    """
    first = source.read_slice(int(decision.flat[0]))
    if first.shape[:2] != decision.shape:
        raise ValueError(f"the decision map is {decision.shape}, the slices are {first.shape[:2]}")
    if feather_px > 0:
        return compose.feather(decision, source, feather_px, first.dtype).reshape(first.shape)
    channels = compose.as_channels_last(first).shape[2]
    nothing_picked = np.full(decision.shape, -1, decision.dtype)
    empty = np.zeros((*decision.shape, channels), first.dtype)
    return compose.recompose_where_changed(empty, nothing_picked, decision, source).reshape(first.shape)
