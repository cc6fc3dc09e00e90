"""Focus measures that need no weights: larger means sharper, one float32 map per slice.

Every measure takes the slice as grayscale float32 (see ``to_gray``) and returns an
(H, W) map at full resolution, summed over a square window around each pixel.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fusion import kernels

DEFAULT_WINDOW_PX = 31  # the paper's 31 x 31 window
# A channel that carries next to no light is lifted at most this much against the brightest one:
# beyond it, what is lifted is the camera's noise, not detail.
MAX_CHANNEL_GAIN = 100.0


@runtime_checkable
class FocusMeasure(Protocol):
    """Maps a grayscale float32 slice (H, W) to a focus map (H, W); larger is sharper.

    ``__call__`` sums the response over the window (the single-scale compositions);
    ``energy`` is the squared response per pixel, unsummed (the pyramid pools it itself);
    ``measure_and_energy`` gives both from one response (``pick`` needs both).
    """

    name: str

    def __call__(self, gray: np.ndarray) -> np.ndarray: ...

    def energy(self, gray: np.ndarray) -> np.ndarray: ...

    def measure_and_energy(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def to_gray(pixels: np.ndarray, channel_weights: np.ndarray | None = None) -> np.ndarray:
    """A slice (H, W) or (H, W, C) of any supported dtype as float32 grey (H, W): colour as its luminance;
    with ``channel_weights`` (one per channel: ``even_channel_weights``), separate channels as their weighted sum."""
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels, dtype=np.float32)
    if channel_weights is not None:
        return kernels.weighted_channel_sum_f32(np.ascontiguousarray(pixels),
                                                np.ascontiguousarray(channel_weights, dtype=np.float32))
    if pixels.shape[2] >= 3:
        return kernels.luminance_f32(np.ascontiguousarray(pixels))
    return np.ascontiguousarray(pixels.mean(axis=2, dtype=np.float32))


def even_channel_weights(pixels: np.ndarray) -> np.ndarray:
    """Weights (float32, one per channel, summing to 1) under which each separate channel of a slice (H, W, C),
    such as fluorescence channels, has the same say in its grey however bright it is: 1 / the light the channel
    carries above its background (its mean less its 5th percentile). Blur moves light but keeps it, so any slice
    of a sweep, sharp or not in that channel, gives about the same weights."""
    sample = pixels[::4, ::4]  # plenty for a mean and a percentile, and quick at 5 MP
    light = np.array([float(np.mean(sample[:, :, c], dtype=np.float64)) - float(np.percentile(sample[:, :, c], 5))
                      for c in range(pixels.shape[2])])
    if not light.max() > 0:  # every channel flat (a blank slice): nothing to even out
        return np.full(pixels.shape[2], 1.0 / pixels.shape[2], np.float32)
    weights = 1.0 / np.maximum(light, light.max() / MAX_CHANNEL_GAIN)
    return (weights / weights.sum()).astype(np.float32)


@dataclass(frozen=True)
class SpatialFrequency:
    """The paper's spatial frequency on pixels: gradient magnitude summed over the window."""

    window_px: int = DEFAULT_WINDOW_PX
    name: str = "sf"

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        return kernels.box_sum(kernels.gradient_magnitude(gray), self.window_px)

    def energy(self, gray: np.ndarray) -> np.ndarray:
        magnitude = kernels.gradient_magnitude(gray)
        return np.square(magnitude, out=magnitude)  # in place: 20 MB less at 5 MP

    def measure_and_energy(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        magnitude = kernels.gradient_magnitude(gray)
        return kernels.box_sum(magnitude, self.window_px), np.square(magnitude, out=magnitude)


@dataclass(frozen=True)
class LaplacianEnergy:
    """Squared Laplacian summed over the window (a classic of focus stacking)."""

    window_px: int = DEFAULT_WINDOW_PX
    name: str = "laplacian"

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        return kernels.box_sum(kernels.laplacian_squared(gray), self.window_px)

    def energy(self, gray: np.ndarray) -> np.ndarray:
        return kernels.laplacian_squared(gray)

    def measure_and_energy(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        energy = kernels.laplacian_squared(gray)
        return kernels.box_sum(energy, self.window_px), energy


def _ums(window_px: int = DEFAULT_WINDOW_PX, device: str = "auto", weights: str | None = None):
    from fusion.deep.deep_measure import DEFAULT_WEIGHTS, DeepSpatialFrequency  # torch loads only when "ums" is asked

    return DeepSpatialFrequency(window_px=window_px, device=device,
                                weights=DEFAULT_WEIGHTS if weights is None else Path(weights))


MEASURES: dict[str, Callable[..., Any]] = {"sf": SpatialFrequency, "laplacian": LaplacianEnergy, "ums": _ums}


def make_measure(name: str, window_px: int = DEFAULT_WINDOW_PX, device: str = "auto",
                 weights: str | None = None) -> FocusMeasure:
    """The measure called ``name``; a clear error lists the known names.

    ``device`` (a torch device, or "auto" for CUDA when present) and ``weights`` (a weights file; None: the
    shipped ones) matter only to deep measures.
    """
    try:
        factory = MEASURES[name]
    except KeyError:
        raise ValueError(f"unknown focus measure {name!r}; choose one of {sorted(MEASURES)}") from None
    if window_px < 1:
        raise ValueError(f"focus window must be at least 1 pixel, got {window_px}")
    return factory(window_px=window_px, device=device, weights=weights) if factory is _ums else \
        factory(window_px=window_px)
