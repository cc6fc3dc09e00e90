"""What "pick" decides a pixel's slice by: the windowed measure, unless evidence pooled over far wider windows
says another slice is sharper there.

The windowed measure alone (the paper's sum of gradient magnitudes over 31 x 31 pixels) chose far-defocused slices
over whole regions of a bright-field stack. A blurred edge has as much summed gradient as a sharp one, spread
wider: in the band outside a dark/bright edge, and in the textureless inside of a dark leg or the glow, only
defocused slices show any gradient at all, so each band took a slice blurred about that far (a moving scorpion's
legs became purple ghosts with holes, its edges soft bright bands), and the majority filter grew them.

So each slice also gets a score over all scales, from the pyramid's evidence (``fusion.multiscale``'s module
docstring): the measure's per-pixel energy pooled over the window as a root mean square, then carried to coarser
and coarser levels as a root mean square again, so that a sharp edge's concentrated energy outweighs a blurred
one's in every window that reaches it. The score sums log(1 + evidence / floor) over the window's level (FINE_WEIGHT
times) and the levels coarse enough to see past the window; the floor is what the camera's noise alone gives,
times NOISE_FLOOR, so a level where no slice shows more than noise gives every slice the same, and where the window
sees nothing, the coarse levels, which reach the nearest detail, decide. A pixel keeps the slice with the most
measure unless another slice's score beats that slice's by more than OUTSCORED_BY.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from fusion import kernels, pyramid
from fusion.multiscale import PyramidWeighting, pooled_reduce

# As the pyramid's (PyramidWeighting.noise_floor): evidence within a few times the noise's is no evidence.
NOISE_FLOOR = PyramidWeighting().noise_floor
RMS_POOL = PyramidWeighting().evidence_pool_power  # the power mean that carries evidence to coarser levels (2)
# The window's own level counts this many times in the score: detail that the window sees clearly (a pcb's pin,
# 1000 times the noise) is not outvoted by coarse windows that reach a stronger edge at another depth. Against 1:
# the pcb's nearest pin came from a defocused slice; +0.1 dB on benchmarks.quality's 25 stacks.
FINE_WEIGHT = 3.0
# The slice with the most measure keeps a pixel unless another's score beats its score by more than this (a sum of
# logs: a factor of e^0.5 in the product of its evidence over the levels). 1 kept dark bands along a scorpion's
# edges; 0.25 lost 0.3 dB on the benchmark.
OUTSCORED_BY = 0.5


def pooled_in_window(energy: np.ndarray, window_px: int) -> np.ndarray:
    """The root mean square of ``energy`` (H, W) over a window_px square around each pixel (float32; ``energy``
    is spent: squared in place)."""
    total = kernels.box_sum(np.square(energy, out=energy), window_px)
    # (The box sum's running sums can leave a hair below 0 where large energies end.)
    return np.sqrt(np.maximum(total * np.float32(1.0 / window_px ** 2), 0, out=total), out=total)


def noise_evidence(energy_of_noise: np.ndarray, window_px: int) -> float:
    """The pooled energy of a flat, noisy patch: its mean away from the patch's borders."""
    pooled = pooled_in_window(energy_of_noise, window_px)
    margin = min(window_px, pooled.shape[0] // 4, pooled.shape[1] // 4)
    inner = pooled[margin:pooled.shape[0] - margin, margin:pooled.shape[1] - margin]
    evidence = float(inner.mean(dtype=np.float64))
    return evidence if math.isfinite(evidence) else 0.0


def first_coarse_level(window_px: int) -> int:
    """The first pyramid level whose pixel is at least half the window: finer ones pool about the window again."""
    return max(1, math.ceil(math.log2(max(window_px, 2) / 2)))


def n_coarse_levels(shape: tuple[int, ...]) -> int:
    """Reductions down to a short side of pyramid.COARSEST_SIDE_PX: the widest windows see most of the frame."""
    short_side, levels = min(shape[0], shape[1]), 0
    while short_side >= 2 * pyramid.COARSEST_SIDE_PX:
        short_side, levels = (short_side + 1) // 2, levels + 1
    return levels


class PickEvidence:
    """Per pixel, the running maps of the windowed measure (most, least, whose is most, and that slice's score);
    ``add`` scores each slice over all scales, and ``raw_decision`` combines the two (module docstring)."""

    def __init__(self, shape: tuple[int, ...], window_px: int):
        height, width = shape[:2]
        self._window_px = window_px
        self._first_coarse, self._n_levels = first_coarse_level(window_px), n_coarse_levels(shape)
        self.most = np.zeros((height, width), np.float32)
        self.least = np.full((height, width), np.inf, np.float32)
        self._score_at_most = np.zeros((height, width), np.float32)   # the score of the slice with the most measure
        self._most_index = np.full((height, width), -1, np.int16)
        self.noise = 0.0   # the pooled energy of the camera's noise alone (``calibrate``)
        self.noise_measure = 0.0   # the windowed measure of the camera's noise alone

    def calibrate(self, noise_measure: float, energy_of_noise: np.ndarray) -> None:
        self.noise_measure = noise_measure
        self.noise = noise_evidence(energy_of_noise, self._window_px)

    @property
    def floor(self) -> np.float32:
        """NOISE_FLOOR times the noise's pooled energy: what is not above it is no evidence."""
        return np.float32(max(NOISE_FLOOR * self.noise, np.finfo(np.float32).tiny))

    def add(self, measure: np.ndarray, energy: np.ndarray, covered: np.ndarray | None, slice_index: int) -> np.ndarray:
        """Fold a slice's windowed measure (H, W; -1 where the slice does not cover the pixel) into the running
        maps; returns its score over all scales, from its ``energy`` (H, W; spent): float32, >= 0, -1 where
        uncovered."""
        height, width = energy.shape
        if covered is not None:
            energy[~covered] = 0.0  # what the fill there shows is no evidence
        fine = pooled_in_window(energy, self._window_px)
        floor = self.floor
        score = np.log1p(fine / floor) * np.float32(FINE_WEIGHT)
        pooled = fine
        for level in range(1, self._n_levels + 1):
            pooled = pooled_reduce(pooled, RMS_POOL)  # (spends ``fine``: its log is taken already)
            if level >= self._first_coarse:
                score += cv2.resize(np.log1p(pooled / floor), (width, height), interpolation=cv2.INTER_LINEAR)
        if covered is not None:
            score[~covered] = -1.0
        self._fold_measure(measure, score, slice_index)
        return score

    def _fold_measure(self, measure: np.ndarray, score: np.ndarray, slice_index: int) -> None:
        """``measure``: -1 where the slice does not cover the pixel (no say there)."""
        counted = measure >= 0
        np.minimum(self.least, measure, out=self.least, where=counted)
        better = counted & ((measure > self.most) | (self._most_index < 0))
        self.most[better] = measure[better]
        self._score_at_most[better] = score[better]
        self._most_index[better] = slice_index

    def raw_decision(self, best_scored: np.ndarray, best_score: np.ndarray) -> np.ndarray:
        """Each pixel's slice before the majority filter, given the best-scored slice's index and score."""
        outscored = (best_score - self._score_at_most > np.float32(OUTSCORED_BY)) | (self._most_index < 0)
        return np.where(outscored, best_scored, self._most_index).astype(best_scored.dtype)
