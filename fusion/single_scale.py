"""The single-scale compositions: the paper's pick and the full-resolution focus-weighted blend.

Per pixel the running maps keep the best windowed focus measure so far, the slice that had it,
that slice's pixels, and (for "blend") running weighted sums. "pick" reads slices back from the
engine's source only where the final, cleaned decision map differs from the running one. "pick" takes the slice with
the most measure unless evidence pooled over far wider windows says another is sharper (``fusion.pick_evidence``):
the measure alone chose far-defocused slices over whole textureless regions and edge bands of a bright-field stack.

Blank slices (``fusion.blank_slices``) get no say: where no slice shows any detail (noise-free flat areas,
renders and float data) every slice's measure ties, and a black first frame was picked there ("pick": the flats
came out black) or averaged in ("blend": darker by 1/n). A stack of blank slices only is folded in at its end.

The depth map is NaN where the focus curve is flat, as the pyramid's is (``fusion.multiscale``'s
TEXTURELESS_CONTRAST): where the sharpest slice's measure exceeds the least sharp one's by no more than that many
times what the camera's noise alone gives the measure (found on the first slice with detail), no slice is sharper
than another, and the chosen slice's z would be the order the slices came in, not a depth.
"""
from __future__ import annotations

import numpy as np

from fusion import compose, kernels
from fusion.blank_slices import HeldBlanks
from fusion.decision import clean_decision
from fusion.focus_checks import check_focus_map
from fusion.focus_measures import DEFAULT_WINDOW_PX, FocusMeasure
from fusion.multiscale import TEXTURELESS_CONTRAST, calibration_patch, minimum_noise_sigma, noise_sigma
from fusion.pick_evidence import PickEvidence
from fusion.slice_store import SliceSource


class SingleScaleComposition:
    """``blend``: weight (measure / best) ** sharpness; otherwise ``pick``, cleaned by a
    majority filter of ``mode_filter_px`` and optionally feathered across seams."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, measure: FocusMeasure, measure_name: str,
                 blend: bool, sharpness: float, mode_filter_px: int, feather_px: float, name: str):
        height, width = shape[:2]
        channels = shape[2] if len(shape) == 3 else 1
        self.shape, self.dtype, self.name = shape, np.dtype(dtype), name
        self._measure, self._measure_name = measure, measure_name
        self._blend, self._sharpness = blend, np.float32(sharpness)
        self._mode_filter_px, self._feather_px = mode_filter_px, feather_px
        self._best_measure = np.zeros((height, width), np.float32)
        self.best_index = np.full((height, width), -1, np.int16)
        self._picked = np.zeros((height, width, channels), self.dtype)
        self._weighted_sum = np.zeros((height, width, channels) if blend else (0, 0, 0), np.float32)
        self._weight_sum = np.zeros((height, width) if blend else (0, 0), np.float32)
        self._blanks = HeldBlanks()
        # Per pixel, over the slices covering it (for "blend"'s depth; "pick" keeps its own: fusion.pick_evidence).
        self._least_measure = np.full((height, width) if blend else (0, 0), np.inf, np.float32)
        # "pick": the running maps follow its score over all scales; the measure's own maps are kept there.
        self._evidence = None if blend else PickEvidence(shape, int(getattr(measure, "window_px", DEFAULT_WINDOW_PX)))
        self._final_fused: np.ndarray | None = None   # "pick"'s cleaned image, once finished (``fused``)
        self._noise_measure: float | None = None   # what noise alone gives the measure (the first slice with detail)

    @property
    def left_out(self) -> list[int]:
        """The slices given no say beside slices with detail (``fusion.blank_slices``)."""
        return self._blanks.left_out

    def add(self, pixels: np.ndarray, gray: np.ndarray, covered: np.ndarray | None, slice_index: int,
            z: float | None = None) -> float:
        """Fold one slice in; returns its focus score (the mean windowed measure). ``z`` is not needed: the
        depth is the chosen slice's z (``finish``), whatever order the slices came in."""
        measure, energy = self._measured(gray)
        check_focus_map(measure, self._measure_name, self.name, slice_index)
        score = float(measure.mean(dtype=np.float64))
        if self._blanks.take(pixels, gray, slice_index, float(z or 0.0), covered):  # no say now (module docstring)
            return score
        for held in self._blanks.released():  # slices of noise held until now, and not dark beside this one
            self._update_with(held.pixels, held.gray, *self._measured(held.gray), held.covered, held.index)
        self._update_with(pixels, gray, measure, energy, covered, slice_index)
        return score

    def _measured(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The windowed measure, and for "pick" the energy as well, from one response (one pass of a network)."""
        if self._evidence is None:
            return self._measure(gray), None
        return self._measure.measure_and_energy(gray)

    def _update_with(self, pixels: np.ndarray, gray: np.ndarray, measure: np.ndarray, energy: np.ndarray | None,
                     covered: np.ndarray | None, slice_index: int) -> None:
        """Take the next slice with detail in (the first tells what noise alone gives the measure); ``energy``:
        for "pick" only."""
        if self._noise_measure is None:
            self._noise_measure = self._measure_of_noise(pixels, gray)
        if covered is not None:
            measure[~covered] = -1.0  # uncovered: filled from the slices that do cover it
        if self._evidence is None or energy is None:
            self._update(pixels, measure, measure, slice_index)
        else:
            self._update(pixels, measure, self._evidence.add(measure, energy, covered, slice_index), slice_index)

    def _measure_of_noise(self, pixels: np.ndarray, gray: np.ndarray) -> float:
        """The mean measure of a flat patch with this slice's noise (as the pyramid calibrates its floors)."""
        sigma = max(noise_sigma(gray), minimum_noise_sigma(pixels))
        patch = calibration_patch(gray, sigma, self._measure_name)
        measure, energy = self._measured(patch)
        noise = float(measure.mean(dtype=np.float64))
        noise = noise if np.isfinite(noise) else 0.0
        if self._evidence is not None and energy is not None:
            self._evidence.calibrate(noise, energy)
        return noise

    def _update(self, pixels: np.ndarray, measure: np.ndarray, decided_by: np.ndarray, slice_index: int) -> None:
        """``decided_by``: what the running maps follow (the measure for "blend", the score for "pick")."""
        if self._evidence is None:
            np.minimum(self._least_measure, measure, out=self._least_measure, where=measure >= 0)
        kernels.update_running_maps(
            compose.as_channels_last(pixels), decided_by, slice_index, self._sharpness, self._blend,
            self._best_measure, self.best_index, self._picked, self._weighted_sum, self._weight_sum)

    def _fold_blank(self) -> None:
        """A stack of blank slices (and of noise) only, at its end: folded in as any slices are (a blank one remade
        from its value)."""
        for held in self._blanks.held:
            pixels, gray = held.frame(self.shape, self.dtype)
            self._update_with(pixels, gray, *self._measured(gray), held.covered, held.index)
        self._blanks.held = []

    def fused(self) -> np.ndarray:
        """The running result (before cleaning; once finished, the final image), (H, W, C) in the slices' dtype."""
        if self._final_fused is not None:
            return self._final_fused.copy()
        if self._blanks.held:  # only blank slices so far: what they fuse to
            return compose.to_dtype(self._blanks.mean_frame(self.shape), self.dtype, overwrite=True)
        if self._blend:
            with np.errstate(invalid="ignore", divide="ignore"):  # no slice with data there (NaN: fusion/no_data.py)
                mean = self._weighted_sum / self._weight_sum[:, :, None]
            return compose.to_dtype(mean, self.dtype, overwrite=True)
        return self._picked.copy()

    def depth_so_far(self, z_positions: list[float]) -> np.ndarray:
        return self._depth(np.maximum(self.best_index, 0), z_positions)

    def _depth(self, decision: np.ndarray, z_positions: list[float]) -> np.ndarray:
        """Each pixel's chosen slice's z; NaN where the focus curve is flat (module docstring)."""
        depth = np.asarray(z_positions, np.float32)[decision]
        if len(z_positions) > 1:  # (one slice: nothing to compare, it is where focus is, as in the pyramid)
            if self._evidence is None:
                most, least, floor = self._best_measure, self._least_measure, self._noise_measure or 0.0
            else:  # (the running maps follow "pick"'s score, which is no measure)
                most, least, floor = self._evidence.most, self._evidence.least, self._evidence.noise_measure
            depth[~(most - least > np.float32(TEXTURELESS_CONTRAST * floor))] = np.nan
        return depth

    def finish(self, z_positions: list[float], source: SliceSource | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fused, cleaned decision, depth in the units of ``z_positions``)."""
        n_slices = len(z_positions)
        if self._blanks.only_blank:
            self._fold_blank()
        if n_slices == 1:
            decision = self.best_index.copy()
            fused = self._picked.copy()
        else:
            raw = self.best_index if self._evidence is None else \
                self._evidence.raw_decision(self.best_index, self._best_measure)
            decision = clean_decision(raw, n_slices, self._mode_filter_px, z_positions)
            if self._blend:
                fused = self.fused()
            elif self._feather_px > 0:
                fused = compose.feather(decision, source, self._feather_px, self.dtype)
            else:
                fused = compose.recompose_where_changed(self._picked, self.best_index, decision, source)
            if not self._blend:  # (blend's final image is its running one)
                self._final_fused = fused.copy()
        return fused, decision, self._depth(decision, z_positions)
