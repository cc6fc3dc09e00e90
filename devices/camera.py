"""The Camera role: snap a frame (or a sequence) with its metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from collections.abc import Iterator

import numpy as np


@dataclass
class Frame:
    """One image and what the camera said about it. pixels: (H, W) or (H, W, C), numpy order."""

    pixels: np.ndarray
    exposure_ms: float | None
    pixel_type: str            # e.g. "uint16", "RGB32", "Mono8"
    bit_depth: int             # significant bits per sample (12 for 12-bit data in uint16)
    timestamp_s: float         # time.time() when the frame arrived, unless the camera gives one
    metadata: dict = field(default_factory=dict)
    exposure_start_s: float | None = None   # time.time() when the exposure began, where the camera tells


@runtime_checkable
class Camera(Protocol):
    """A camera. ``name`` appears in every error; ``snap`` waits at most ``timeout_s``."""

    name: str

    def snap(self, timeout_s: float = 5.0) -> Frame:
        """Acquire one frame and return it."""

    def sequence(self, n_frames: int, timeout_s: float = 5.0) -> Iterator[Frame]:
        """Acquire ``n_frames`` frames in a row (hardware sequence where the device has one)."""

    @property
    def exposure_ms(self) -> float | None: ...

    def set_exposure_ms(self, exposure_ms: float) -> None:
        """Set the exposure, or raise UnsupportedFeatureError if the camera has none."""

    def close(self) -> None: ...
