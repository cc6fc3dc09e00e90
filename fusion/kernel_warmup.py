"""Compile (or load from numba's cache) the kernels a stack of these frames will need, before it starts.

Why: a hardware-timed acquisition (a sequence on the camera's trigger, a free-running stream)
cannot wait for fusion. With a cold kernel cache (after a ``git pull`` that changed a kernel, or
a new ``NUMBA_CACHE_DIR``) the first slice's fusion compiles for 10-15 s, holding the GIL; the
camera's sequence thread starves and its first frame times out. Run on a crop of a real frame (its
dtype and channels are what the kernels are compiled for) with the session's fusion settings, this
costs tens of milliseconds with a warm cache and moves a cold compile before the first trigger.
"""
from __future__ import annotations

import warnings

import numpy as np

from fusion.engine import FusionSettings, StreamingFusion

CROP_PX = (256, 320)   # large enough to be aligned (192 px on the short side at least), quick to fuse


def warm_kernels(frame: np.ndarray, settings: FusionSettings, preview: bool = False) -> None:
    """Fuse two copies of a crop of ``frame`` (H, W[, C]) with ``settings`` in a throwaway engine; ``preview``: its
    preview too, before the end (the kernels a viewer of a stack being fused needs)."""
    crop = np.ascontiguousarray(frame[:CROP_PX[0], :CROP_PX[1]])
    with warnings.catch_warnings():  # about a throwaway crop ("too small to align"): the stack itself says so
        warnings.simplefilter("ignore")
        engine = StreamingFusion(crop.shape, crop.dtype, settings, channels_last=True)  # (a frame's crop)
        for z in (0.0, 1.0):
            engine.push(crop, z)
        if preview:
            engine.preview()
        engine.finish()
