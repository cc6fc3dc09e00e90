"""The Camera role: snap a frame (or a sequence) with its metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from collections.abc import Iterator

import numpy as np

from devices.errors import seconds_text


@dataclass(frozen=True)
class CameraTimestamp:
    """When the camera says it took a frame, on its own clock (GenTL's buffer timestamp): ``ticks`` of that clock, and
    how many make a second; None: the camera does not say how long its tick is."""

    ticks: int
    ticks_per_s: float | None

    def since(self, first: CameraTimestamp) -> tuple[float | None, int | None]:
        """The time since ``first`` (the first slice's): (seconds, None), or where the tick's length is not known
        (None, ticks)."""
        ticks = self.ticks - first.ticks
        if self.ticks_per_s and self.ticks_per_s == first.ticks_per_s:
            return round(ticks / self.ticks_per_s, 9), None
        return None, ticks


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
    camera_timestamp: CameraTimestamp | None = None  # the camera's own clock, where it gives one (GenICam)


def frame_wait_s(timeout_s: float, exposure_ms: float | None) -> float:
    """How long a camera waits for a frame: its exposure, then ``timeout_s`` beyond it (a 6 s exposure
    with a 5 s timeout waits 11 s). A timeout shorter than the exposure would lose every frame."""
    return max(0.0, exposure_ms or 0.0) / 1000 + timeout_s


def exposure_text(exposure_ms: float | None) -> str:
    """An exposure for a message: "10 ms", "6 s"."""
    exposure_ms = exposure_ms or 0.0
    return f"{exposure_ms:.3g} ms" if exposure_ms < 1000 else seconds_text(exposure_ms / 1000)


def no_frame_within(timeout_s: float, exposure_ms: float | None, why: str = "") -> str:
    """What a camera's DeviceTimeoutError says: how long it waited, and of that how much was the exposure."""
    parts = [f"{exposure_text(exposure_ms)} exposure + {seconds_text(timeout_s)} timeout"] if exposure_ms else []
    parts += [why] if why else []
    detail = f" ({'; '.join(parts)})" if parts else ""
    return f"no frame within {seconds_text(frame_wait_s(timeout_s, exposure_ms))}{detail}"


@runtime_checkable
class Camera(Protocol):
    """A camera. ``name`` appears in every error; ``snap`` and each frame of ``sequence`` wait for the
    exposure and then ``timeout_s`` more at most (``frame_wait_s``: one rule for every driver)."""

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
