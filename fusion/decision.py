"""Cleaning the per-pixel decision map: the paper's majority (mode) filter."""
from __future__ import annotations

import numpy as np

from fusion import kernels


def default_mode_filter_px(shape: tuple[int, ...]) -> int:
    """The paper's window: about min(H, W) / 20, odd, at least 3 pixels."""
    width_px = max(3, int(round(min(shape[0], shape[1]) / 20)))
    return width_px if width_px % 2 else width_px + 1


def clean_decision(chosen_index: np.ndarray, n_slices: int, window_px: int) -> np.ndarray:
    """Mode-filter a map of slice indices (H, W) with a window_px square; 0 or 1 returns a copy."""
    if window_px <= 1 or n_slices <= 1:
        return chosen_index.copy()
    return kernels.mode_filter(np.ascontiguousarray(chosen_index), n_slices, window_px)
