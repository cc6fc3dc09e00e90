"""How far a 3x3 transform of pixel coordinates moves a frame."""
from __future__ import annotations

import numpy as np


def max_displacement_px(transform: np.ndarray, shape: tuple[int, int]) -> float:
    """How far the transform moves the frame's corners (the most any pixel moves)."""
    height, width = shape
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    return float(np.abs((corners @ transform.T)[:, :2] - corners[:, :2]).max())
