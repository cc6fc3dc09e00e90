"""Streaming focus-stack fusion (UMS-Fusion) and offline refusion of saved stacks."""
import os

# Before numba (or torch) loads its OpenMP runtime, for any program that uses the engine, as run_session.py does
# for its own: idle OpenMP threads sleep instead of spinning. Spinning between the pyramid fold's kernels, they took
# a core from the OpenCV and NumPy work in between (a 5 MP slice's fold: ~0.41 s of CPU against ~0.22 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fusion import numba_layer  # noqa: E402, F401 -- before numba's first parallel kernel: TBB where installed

from fusion.engine import FusionResult, FusionSettings, StreamingFusion  # noqa: E402 -- after the setting above

__all__ = ["FusionResult", "FusionSettings", "StreamingFusion"]
