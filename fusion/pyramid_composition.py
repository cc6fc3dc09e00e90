"""The default composition as the engine drives it: ``fusion.multiscale`` fed with the focus
measure's energy, its noise floors calibrated on the first slice with detail, its depth given in z.

A blank slice (one value throughout, in every channel: a dark frame, a camera that started before the
light) says nothing about the stack's value scale or noise. Calibrated on it, the floors were in units
unrelated to the data (1e-4 whatever the range): under a uint16 stack's detail, every slice's evidence
passed the weights' cap and tied, and over a float stack in units of 1e-3 or less, none left the floor;
either way the fused image was the slices' average. Blank slices before the first one with detail are
held, as their value alone, and then given no weight: they show nothing of the specimen, as an aligned
slice shows nothing outside its coverage (folded with coverage 0 they would change none of the sums).
A stack of blank slices only is fused as before, calibrated on its first slice: to their mean.

A blank slice later in the stack (a black frame from a shutter that missed, the light going off) gets no weight
either: its evidence would tie with the noise of the flat areas, and each such slice darkened them by up to 1/n.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from fusion import compose
from fusion.blank_slices import HeldBlanks
from fusion.decision import clean_decision
from fusion.focus_checks import check_focus_map
from fusion.focus_measures import FocusMeasure
from fusion.multiscale import MIN_NOISE_SHARE, PyramidComposer, PyramidWeighting, calibration_patch, \
    minimum_noise_sigma, noise_sigma
from fusion.overlap import kernels_may_run_concurrently, made_now, started_beside
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
        self._blanks = HeldBlanks()   # blank slices before the first with detail, in order
        # Whether every slice so far came with its z: the depth is then their weighted mean z, in whatever
        # order they came; else a weighted mean slice index (see ``depth_so_far``).
        self._every_z_known = True
        self._image_lock = threading.Lock()
        self._final_fused: np.ndarray | None = None   # the fused image once the last slice is in
        # The pyramid's sums overshoot at strong edges (ringing) and where slices disagree: a fused value that
        # no slice holds at that pixel (above a 12-bit sensor's 4095 in uint16, darker than every slice) is no
        # measurement of it.
        self._value_range = PixelRange()

    @property
    def left_out(self) -> list[int]:
        """The slices given no say beside slices with detail (``fusion.blank_slices``)."""
        return self._blanks.left_out

    def add(self, pixels: np.ndarray, gray: np.ndarray, covered: np.ndarray | None, slice_index: int,
            z: float | None = None) -> float:
        """Fold one slice in; returns its focus score (its mean fine energy). ``z``: its focus position, if known."""
        self._every_z_known = self._every_z_known and z is not None
        z = float(slice_index) if z is None else float(z)
        if self._blanks.take(pixels, gray, slice_index, z, covered):  # (held, in case every slice is blank, or dark)
            # its score all the same (0 for the classical measures)
            return _checked_score(self._measure.energy(gray), covered, self._measure_name, self.name, slice_index)
        for held in self._blanks.released():  # slices of noise held until now, and not dark beside this one
            self._fold_next(held.pixels, held.gray, held.covered, held.index, held.z)
        return self._fold_next(pixels, gray, covered, slice_index, z)

    def _fold_next(self, pixels: np.ndarray, gray: np.ndarray, covered: np.ndarray | None, slice_index: int,
                   z: float) -> float:
        """Fold the next slice with detail in (the first calibrates)."""
        calibrate = self._composer.evidence_floor is None
        self._value_range.add(pixels)
        return self._fold(pixels, gray, covered, slice_index, z, calibrate=calibrate)

    def _fold(self, pixels: np.ndarray, gray: np.ndarray, covered: np.ndarray | None, slice_index: int, z: float,
              calibrate: bool = False) -> float:
        """Fold one slice into the composer (``calibrate``: the value scale and noise floors from it first)."""
        if calibrate and self.dtype.kind == "f":
            # Float data of any magnitude (1e-30 or 1e30): squared energies and band powers
            # would otherwise leave float32.
            peak = float(np.percentile(np.abs(gray[::4, ::4]), 99.9))
            self._value_scale = peak if np.isfinite(peak) and peak > 0 else 1.0
        if self._value_scale != 1.0:
            pixels, gray = pixels / np.float32(self._value_scale), gray / np.float32(self._value_scale)
        energy = self._measure.energy(gray)
        score = _checked_score(energy, covered, self._measure_name, self.name, slice_index)
        if calibrate:
            self._calibrate_noise(pixels, gray)  # (a channel at a time: no float32 copy of the frame)
        self._composer.pool(energy)
        del energy  # not needed while the pyramid is made (20 MB at 5 MP)
        # The composer reads the pixels a strip of float32 rows at a time (no copy of the whole frame).
        self._composer.fold(pixels, z, slice_index, covered)
        return score

    def _fold_blank(self) -> None:
        """A stack of blank slices (and of noise) only, at its end: its slices folded in as any stack's, a blank one
        remade from its value (one frame at a time), the first calibrating."""
        for n, held in enumerate(self._blanks.held):
            pixels, gray = held.frame(self.shape, self.dtype)
            self._value_range.add(pixels)
            self._fold(pixels, gray, held.covered, held.index, held.z, calibrate=n == 0)
        self._blanks.held = []

    def _calibrate_noise(self, image: np.ndarray, gray: np.ndarray) -> None:
        """Noise floors from the slice that calibrates: its noise, seen by the measure on a flat patch."""
        least = minimum_noise_sigma(image)
        sigma = max(noise_sigma(gray), least)
        patch = calibration_patch(gray, sigma, self._measure_name)
        noise_energy = float(self._measure.energy(patch).mean(dtype=np.float64))
        if not noise_energy > 0:  # a measure that sees nothing of such noise (the deep one on such float data)
            noise_energy = _least_noise_energy(self._measure.energy(gray))
        if image.ndim == 3:
            channel_var = np.array([max(noise_sigma(image[:, :, c]), least) ** 2 for c in range(image.shape[2])])
        else:
            channel_var = np.array([sigma ** 2])
        self._composer.calibrate(noise_energy, channel_var)

    def fused(self, final: bool = False) -> np.ndarray:
        """The fused image so far, (H, W, C) in the slices' dtype. ``final``: the last slice is in; the
        image is made in the composer's running sums (less fresh memory), which keep it for later calls."""
        with self._image_lock:  # a live view may ask from another thread while the stack finishes
            if self._final_fused is not None:  # a fresh array each time, as before the end
                return self._final_fused.copy()
            if self._composer.evidence_floor is None:  # only blank slices so far
                if not final:
                    return self._blank_mean()
                self._fold_blank()
            if final:
                self._final_fused = self._final_image()
                return self._final_fused.copy()
            image = self._composer.image()
            if self._value_scale != 1.0:
                image *= np.float32(self._value_scale)
            return compose.to_dtype(self._value_range.clip(image), self.dtype, overwrite=True)

    def _final_image(self) -> np.ndarray:
        """The fused image once the last slice is in, made in the composer's running sums (less fresh memory,
        which the end of a live stack waits for), its finest level in one pass where it has bands."""
        low, high = self._value_range.low, self._value_range.high
        if low is not None and high is not None and self._composer.n_levels > 0 and self.dtype.kind in "uif":
            return self._composer.final_image_as(self.dtype, low, high, self._value_scale)
        image = self._composer.final_image()
        if self._value_scale != 1.0:
            image *= np.float32(self._value_scale)
        return compose.to_dtype(self._value_range.clip(image), self.dtype, overwrite=True)

    def depth_so_far(self, z_positions: list[float]) -> np.ndarray:
        """The depth in the units of ``z_positions`` (each slice's z, or its index): where every slice came
        with its z, their weighted mean z, which needs no order (an ``absolute`` plan's [20, -4, 44, 4] is as
        good as [-4, 4, 20, 44]); else the weighted mean slice index, turned into ``z_positions``."""
        if len(z_positions) == 1:  # nothing to compare: the one slice is where focus is
            return np.full(self.shape[:2], z_positions[0], np.float32)
        if self._composer.evidence_floor is None:  # only blank slices so far: no depth anywhere
            return np.full(self.shape[:2], np.nan, np.float32)
        # The slices that had a say: those left out (blank, dark) do not make a flat focus curve look less flat.
        n_said = max(len(z_positions) - len(self.left_out), 1)
        if self._every_z_known:  # (then ``z_positions`` are the z given to ``add``)
            return self._composer.depth(n_said)
        return self._composer.depth(n_said, index_positions=z_positions)

    def finish(self, z_positions: list[float], source=None) -> tuple[np.ndarray, np.ndarray | Future,
                                                                      np.ndarray | Future]:
        """(fused, decision, depth). The decision, the slice with the most fine evidence cleaned as
        the paper cleans its own, is what a one-slice-per-pixel copy would use (reports, channels
        that follow another's decision); the pyramid itself never picks. So it is made after the
        image, as the depth map is, each on a thread of its own where numba allows (Futures): a live
        session waits for the image, and made beside it they took its cores (its mode filter is half
        the end's work at 5 MP; the depth map's upsampling a third of the rest)."""
        def decision() -> np.ndarray:
            return clean_decision(np.maximum(self._composer.best_index, 0), len(z_positions),
                                  self._mode_filter_px, z_positions)

        def depth() -> np.ndarray:
            return self.depth_so_far(z_positions)

        if self._composer.evidence_floor is None:  # blank slices only: they are folded in as the image is made
            return self.fused(final=True), decision(), depth()
        fused = self.fused(final=True)  # (the depth map reads the depth's own sums, the decision the best slices)
        if not kernels_may_run_concurrently():  # (in turn; a failure still costs only what needs that map)
            return fused, made_now(decision), made_now(depth)
        return fused, started_beside(decision), started_beside(depth)

    def _blank_mean(self) -> np.ndarray:
        """The blank slices' mean, (H, W, C) in the slices' dtype: what they fuse to (a live view's)."""
        image = self._blanks.mean_frame(self.shape)
        return compose.to_dtype(self._value_range.clip(image), self.dtype, overwrite=True)


def _least_noise_energy(energy: np.ndarray) -> float:
    """A noise energy for a measure that saw none in the calibration patch: MIN_NOISE_SHARE squared of the slice's
    own mean energy (as ``minimum_noise_sigma`` takes that share of its range), or 1 where it sees nothing at all
    (every weight then ties)."""
    mean = float(energy.mean(dtype=np.float64))
    least = MIN_NOISE_SHARE ** 2 * mean
    return least if least > 0 and np.isfinite(least) else 1.0


def _checked_score(energy: np.ndarray, covered: np.ndarray | None, measure_name: str, stack: str,
                   slice_index: int) -> float:
    """``_score``, after ``check_focus_map``, from the one sum that both take (the check's own float64 sum: a
    5 MP slice's fold 5 ms less on one core); where the slice covers the whole frame, that sum is the score's too."""
    total = np.sum(energy, dtype=np.float64)
    if not np.isfinite(total):
        check_focus_map(energy, measure_name, stack, slice_index)  # (raises)
    if covered is not None:
        return _score(energy, covered)
    return float(total / energy.size) if energy.size else 0.0


def _score(energy: np.ndarray, covered: np.ndarray | None) -> float:
    """A slice's focus score: its mean fine energy where it covers the frame."""
    inside = energy if covered is None else energy[covered]
    return float(inside.mean(dtype=np.float64)) if inside.size else 0.0
