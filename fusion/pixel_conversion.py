"""Pixel types the engine does not fuse natively, and what they are fused as: one rule for the readers, which convert
them (``fusion.readers.base.convert_dtype``), and for the engine, which converts nothing itself and says how."""
from __future__ import annotations

import numpy as np


def fused_as(dtype) -> np.dtype | None:
    """What slices of ``dtype`` are converted to for fusion: bool as uint8 (it loses nothing), every other number as
    float32; None where ``dtype`` holds no numbers."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind in "uif":
        return np.dtype(np.float32)
    return None


def digits_kept(dtype) -> str:
    """What converting ``dtype`` to float32 loses, in words in parentheses ('' where nothing): integers wider than
    float32's 24-bit mantissa lose their lowest bits, wider floats their digits."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and dtype.itemsize >= 4:
        return " (values beyond 2^24 = 16777216 keep 7 significant digits)"
    if dtype.kind == "f" and dtype.itemsize > 4:
        return " (7 significant digits)"
    return ""
