"""The default composition as the engine drives it: ``fusion.multiscale`` fed with the focus
measure's energy, its noise floors calibrated on the first slice, its depth given in z.
"""
from __future__ import annotations

import threading

import numpy as np

from fusion import compose
from fusion.decision import clean_decision
from fusion.focus_checks import check_focus_map
from fusion.focus_measures import FocusMeasure
from fusion.multiscale import PyramidComposer, PyramidWeighting, flat_noisy_patch, minimum_noise_sigma, \
    noise_sigma
from fusion.pixel_range import PixelRange


class PyramidComposition:
    """Slices in (pixels, their grey, the pixels an aligned slice covers), the fused image out."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, measure: FocusMeasure, measure_name: str,
                 weighting: PyramidWeighting, mode_filter_px: int, name: str):
        self.shape, self.dtype, self.name = shape, np.dtype(dtype), name
        self._measure, self._measure_name = measure, measure_name
        self._mode_filter_px = mode_filter_px
        self._composer = PyramidComposer(shape, weighting)
        self._value_scale = 1.0   # float stacks: fused in units of their own range
        self._image_lock = threading.Lock()
        self._final_values: np.ndarray | None = None
        # The pyramid's sums overshoot at strong edges (ringing) and where slices disagree: a fused value that
        # no slice holds at that pixel (above a 12-bit sensor's 4095 in uint16, darker than every slice) is no
        # measurement of it.
        self._value_range = PixelRange()

    def add(self, pixels: np.ndarray, gray: np.ndarray, covered: np.ndarray | None, slice_index: int) -> float:
        """Fold one slice in; returns its focus score (its mean fine energy)."""
        self._value_range.add(pixels)
        if slice_index == 0 and self.dtype.kind == "f":
            # Float data of any magnitude (1e-30 or 1e30): squared energies and band powers
            # would otherwise leave float32.
            peak = float(np.percentile(np.abs(gray[::4, ::4]), 99.9))
            self._value_scale = peak if np.isfinite(peak) and peak > 0 else 1.0
        if self._value_scale != 1.0:
            pixels, gray = pixels / np.float32(self._value_scale), gray / np.float32(self._value_scale)
        energy = self._measure.energy(gray)
        check_focus_map(energy, self._measure_name, self.name, slice_index)
        if slice_index == 0:
            self._calibrate_noise(pixels, gray)  # (a channel at a time: no float32 copy of the frame)
        inside = energy if covered is None else energy[covered]
        score = float(inside.mean(dtype=np.float64)) if inside.size else 0.0
        self._composer.pool(energy)
        del energy, inside  # not needed while the pyramid is made (20 MB at 5 MP)
        # The composer reads the pixels a strip of float32 rows at a time (no copy of the whole frame).
        self._composer.fold(pixels, float(slice_index), slice_index, covered)
        return score

    def _calibrate_noise(self, image: np.ndarray, gray: np.ndarray) -> None:
        """Noise floors from the first slice: its noise, seen by the measure on a flat patch."""
        least = minimum_noise_sigma(image)
        sigma = max(noise_sigma(gray), least)
        patch = flat_noisy_patch(float(gray.mean()), sigma)
        noise_energy = float(self._measure.energy(patch).mean(dtype=np.float64))
        if image.ndim == 3:
            channel_var = np.array([max(noise_sigma(image[:, :, c]), least) ** 2 for c in range(image.shape[2])])
        else:
            channel_var = np.array([sigma ** 2])
        self._composer.calibrate(noise_energy, channel_var)

    def fused(self, final: bool = False) -> np.ndarray:
        """The fused image so far, (H, W, C) in the slices' dtype. ``final``: the last slice is in; the
        image is made in the composer's running sums (less fresh memory), which keep it for later calls."""
        with self._image_lock:  # a live view may ask from another thread while the stack finishes
            if self._final_values is not None:  # a fresh array each time, as before the end
                return compose.to_dtype(self._final_values, self.dtype)
            image = self._composer.final_image() if final else self._composer.image()
            if self._value_scale != 1.0:
                image *= np.float32(self._value_scale)
            self._value_range.clip(image)
            fused = compose.to_dtype(image, self.dtype, overwrite=True)  # (rounds ``image`` in place)
            if final:
                self._final_values = image  # the composer's sums, already rounded: no more memory
            return fused

    def depth_so_far(self, z_positions: list[float]) -> np.ndarray:
        """The depth (a fractional slice index from the pyramid) in the units of ``z_positions``."""
        if len(z_positions) == 1:  # nothing to compare: the one slice is where focus is
            return np.full(self.shape[:2], z_positions[0], np.float32)
        return self._composer.depth(len(z_positions), z_positions)

    def finish(self, z_positions: list[float], source=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fused, decision, depth). The decision, the slice with the most fine evidence cleaned as
        the paper cleans its own, is what a one-slice-per-pixel copy would use (reports, channels
        that follow another's decision); the pyramid itself never picks."""
        decision = clean_decision(np.maximum(self._composer.best_index, 0), len(z_positions), self._mode_filter_px)
        return self.fused(final=True), decision, self.depth_so_far(z_positions)
