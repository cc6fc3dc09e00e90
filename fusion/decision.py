"""Cleaning the per-pixel decision map: the paper's majority (mode) filter."""
from __future__ import annotations

import numpy as np

from fusion import kernels


def default_mode_filter_px(shape: tuple[int, ...]) -> int:
    """The paper's window: about min(H, W) / 20, odd, at least 3 pixels."""
    width_px = max(3, int(round(min(shape[0], shape[1]) / 20)))
    return width_px if width_px % 2 else width_px + 1


def clean_decision(chosen_index: np.ndarray, n_slices: int, window_px: int,
                   z_positions: list[float] | None = None) -> np.ndarray:
    """Mode-filter a map of slice indices (H, W) with a window_px square; 0 or 1 returns a copy.
    ``z_positions`` (each slice's): where two other slices tie for a window's majority, the one nearer
    the bottom of the stack wins, whatever order the slices came in (without them: the first one)."""
    if window_px <= 1 or n_slices <= 1:
        return chosen_index.copy()
    if z_positions is None or np.all(np.diff(np.asarray(z_positions, np.float64)) >= 0):  # in z order already
        return kernels.mode_filter(np.ascontiguousarray(chosen_index), n_slices, window_px)
    # Filtered as ranks in z: the filter breaks such ties by the label's number.
    by_z = np.argsort(np.asarray(z_positions, np.float64), kind="stable").astype(chosen_index.dtype)
    rank = np.empty_like(by_z)
    rank[by_z] = np.arange(n_slices, dtype=by_z.dtype)
    return by_z[kernels.mode_filter(np.ascontiguousarray(rank[chosen_index]), n_slices, window_px)]
