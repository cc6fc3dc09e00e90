"""Multi-scale fusion that streams: per pyramid level, a focus-weighted mean of the slices' bands.

Each slice is split into a Laplacian pyramid. At every level, each colour channel of each
slice gets a weight per pixel, and only running sums are kept (weight x band, weight, and the
largest weight's exponent): memory is about 4/3 x channels x (2 floats + 1 byte) per pixel whatever
the depth, and a strip of scratch (large bands are made, smoothed and folded a strip of rows at a
time, the finest one from the frame itself: STRIP_VALUES). The fused image is the collapse of the
per-level weighted means.

A slice's weight at level k is the product of two pieces of evidence, each raised to a power of
that level's own (``PyramidWeighting``: soft at the finest level, harder at coarse ones):
- the pooled fine evidence: the slice's per-pixel focus energy (the focus measure's finest
  response, e.g. the squared Laplacian), smoothed, then reduced k times (as a root mean square,
  so that a sharp edge's energy is not diluted by the flat side of the window). Coarse levels thus
  decide from the *finest* detail in a window that grows with the level: at a dark/bright
  edge a defocused slice spreads its weaker gradients outside the edge, but the sharp slice's
  concentrated energy dominates every window that reaches the edge, so the defocused slice
  never wins there (the halo of bright-field microscopy).
- the level's own band energy, per colour channel (smoothed): where the fine evidence is
  silent (smooth shading) the band itself tells which slice holds it, and a lens whose colours
  focus at slightly different depths (axial chromatic aberration) gets each channel from the
  slice where that channel is sharp.
The camera noise's energy (estimated on the first slice) is a floor under both: in flat,
noise-only areas every slice weighs the same and the noise averages out, instead of the
fusion following whichever slice happens to be noisiest.

The powers are whole numbers, so a weight is a product of ratios (each >= 1: evidence over its
noise floor), never exp(log); sums are kept relative to the least power of two above the largest
weight so far (its exponent, int8, per pixel and channel) and rescaled, exactly, when a larger
one arrives, so large powers neither overflow nor cost transcendental functions. The depth map
comes from the pooled fine evidence alone, as a weighted mean z, and is left undefined (NaN)
where the slices do not differ.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from fusion import pyramid
from fusion.finest_level import finest_to_dtype, mean_plus_coarser
from fusion.overlap import kernels_may_run_concurrently, side_by_side
from fusion.parallel_kernels import one_at_a_time

MAX_POWER = 32
# Noise floors never fall below this share of the first slice's range: noise-free data (renders,
# float stacks) would otherwise give ratios that overflow even float64 once raised to the powers.
MIN_NOISE_SHARE = 1e-4
NOISE_PATCH_PX = 256       # side of the flat, noisy patch that calibrates the noise floor
# Large bands are made, smoothed and folded in strips of rows holding about this many values (4 MB
# of float32: 135 rows of a 5 MP RGB frame's finest band), so that a 5 MP slice needs no full-size
# temporaries. Levels of up to pyramid.WHOLE_STRIPS strips' worth go whole (a 1 MP frame's: cut in
# 128-row strips, it fused 15% slower).
STRIP_VALUES = 1 << 20
# A level of at least this many values is folded by two threads, each taking every other strip (a level of fewer
# strips is cut in two): its band's smoothing (cv2's float GaussianBlur) runs on one core, and it was a third of a
# 5 MP slice's fold. The end of a live stack waits for the last slice's fold, and the camera's thread is idle then.
SHARED_FOLD_VALUES = 1 << 18
# No depth where the sharpest slice's pooled evidence exceeds the least sharp one's by less than
# this many noise floors, or where more than this share of the slices is about as sharp as the
# sharpest (a flat focus curve): textureless areas, where any z would be a guess.
TEXTURELESS_CONTRAST = 1.0
FLAT_CURVE_SHARE = 0.34


@dataclass(frozen=True)
class PyramidWeighting:
    """How a slice's focus evidence becomes its weight at every pyramid level.

    evidence_power: exponent on the pooled fine evidence, per pyramid level (finest first; the last
        value holds for every coarser level; a single number for all of them).
    band_power: exponent on the level's own band energy (per colour channel), per level likewise.
    evidence_pool_power: the pooled evidence is carried to each coarser level as a power mean of
        this order (1: the plain Gaussian mean; 2: the root mean square, in which the sharp side of
        a depth or intensity edge keeps its say in the coarse windows that straddle the edge).
    evidence_sigma_px: Gaussian smoothing (sigma, px) of the fine evidence before pooling.
    band_sigma_px: Gaussian smoothing of each level's band energy, in that level's pixels.
    noise_floor: multiple of the camera noise's energy added under both.
    depth_level: the pyramid level whose pooled evidence gives the depth map.
    depth_power: exponent on that evidence in the depth map's weighted mean over z.
    """

    # Soft at the finest level, where noise and the PSF's base blur are best averaged, and harder at coarse
    # levels, where a window straddles more than one depth. Against 4 and 12 at every level (and plain-mean
    # pooling): +0.08 dB mean on benchmarks/quality.py's 25 stacks (ideal truth; +0.31 against the best-focus
    # truth), and +0.11 (+0.37) on 25 more rendered with other seeds at 448x576 (--seed-offset 100).
    evidence_power: int | tuple[int, ...] = (2, 6, 6, 8, 12)
    band_power: int | tuple[int, ...] = (10, 12)
    evidence_pool_power: int = 2
    evidence_sigma_px: float = 1.0
    band_sigma_px: float = 3.0
    noise_floor: float = 4.0
    depth_level: int = 2
    depth_power: int = 8

    def __post_init__(self):
        for name in ("evidence_sigma_px", "band_sigma_px", "noise_floor"):
            if not 0 <= getattr(self, name) < math.inf:  # NaN too
                raise ValueError(f"pyramid weighting: {name} must be 0 or a positive number, got {getattr(self, name)}")
        # Whole powers: weights are then products, not exp(log), and the kernels stay cheap.
        for name in ("depth_power", "depth_level"):
            object.__setattr__(self, name, _whole_power(name, getattr(self, name)))
        for name in ("evidence_power", "band_power"):  # one per level, or one for all (a JSON list, a YAML number)
            value = getattr(self, name)
            values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if not values:
                raise ValueError(f"pyramid weighting: {name} needs at least one power")
            powers = [_whole_power(name, v) for v in values]
            while len(powers) > 1 and powers[-1] == powers[-2]:  # one spelling per weighting: --resume compares them
                powers.pop()
            object.__setattr__(self, name, powers[0] if len(powers) == 1 else tuple(powers))
        if self.evidence_pool_power not in POOL_POWERS or isinstance(self.evidence_pool_power, bool):
            raise ValueError(f"pyramid weighting: evidence_pool_power must be one of {POOL_POWERS}, "
                             f"got {self.evidence_pool_power}")

    def evidence_power_at(self, level: int) -> int:
        """The exponent on the pooled evidence at pyramid ``level`` (0: the finest)."""
        return _at_level(self.evidence_power, level)

    def band_power_at(self, level: int) -> int:
        """The exponent on the band energy at pyramid ``level`` (0: the finest)."""
        return _at_level(self.band_power, level)


# Power means the pooled evidence may be carried to coarser levels by: 1 and 2 keep float32 energies
# of 16-bit data (up to ~4e9, squared ~2e19) far from overflow.
POOL_POWERS = (1, 2)


def _whole_power(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not float(value).is_integer() or not 0 <= value <= MAX_POWER:
        raise ValueError(f"pyramid weighting: {name} must be a whole number from 0 to {MAX_POWER}, got {value!r}")
    return int(value)


def _at_level(powers: int | tuple[int, ...], level: int) -> int:
    """A per-level setting at ``level``: its last value holds for every coarser level."""
    if isinstance(powers, int):
        return powers
    return powers[min(level, len(powers) - 1)]


def noise_sigma(gray: np.ndarray) -> float:
    """Standard deviation of the white noise in a frame: Donoho's estimator (the median absolute
    diagonal Haar detail, which texture and edges barely reach)."""
    height, width = (gray.shape[0] // 2) * 2, (gray.shape[1] // 2) * 2
    if height < 2 or width < 2:
        return 0.0
    g = gray[:height, :width].astype(np.float32, copy=False)  # (float32 grey: no 20 MB copy at 5 MP)
    diagonal = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(diagonal)) / 0.6745)


def minimum_noise_sigma(pixels: np.ndarray) -> float:
    """The least noise the floors assume: MIN_NOISE_SHARE of the frame's range (never 0)."""
    span = float(np.max(pixels)) - float(np.min(pixels))
    return MIN_NOISE_SHARE * (span if span > 0 else max(abs(float(np.max(pixels))), 1.0))


def flat_noisy_patch(level: float, sigma: float, seed: int = 0) -> np.ndarray:
    """A grey float32 patch at ``level`` with white noise of ``sigma``: what a focus measure
    sees where there is nothing to focus on."""
    rng = np.random.default_rng(seed)
    patch = level + sigma * rng.standard_normal((NOISE_PATCH_PX, NOISE_PATCH_PX))
    return patch.astype(np.float32)


# Focus measures that see differences between pixels only, so that noise on any level gives them the same energy.
# The deep "ums" measure is not one: it sees the slice scaled by its stack's brightest values.
SHIFT_INVARIANT_MEASURES = ("sf", "laplacian")


def calibration_patch(gray: np.ndarray, sigma: float, measure_name: str) -> np.ndarray:
    """The flat, noisy patch (noise ``sigma``) that a focus measure calibrates its noise floor on: at the slice's
    mean grey (what the measure sees there), unless float32 keeps the noise too coarsely there (a float stack of
    detail 0..1 on an offset of 3e5: float32's step there is 0.03, and noise below it vanished, a floor of 0) and
    the measure sees differences only (``SHIFT_INVARIANT_MEASURES``): then at 0, where float32 keeps it."""
    level = float(gray.mean())
    if measure_name in SHIFT_INVARIANT_MEASURES and np.spacing(np.float32(abs(level))) > sigma / 8:
        level = 0.0
    return flat_noisy_patch(level, sigma)


def _smooth_radius_px(sigma_px: float) -> int:
    """How far ``_smooth`` reaches: its Gaussian is truncated at 2 sigma."""
    return int(np.ceil(2 * sigma_px)) if sigma_px > 0 else 0


def _smooth(values: np.ndarray, sigma_px: float, out: np.ndarray | None = None) -> np.ndarray:
    """Gaussian smoothing truncated at 2 sigma (plenty for pooling energies; half the cost), into
    ``out`` if given. Never in place: OpenCV then copies the input first, single-threaded
    (5 MP RGB: 49 ms against 15 ms)."""
    if sigma_px <= 0:
        return values
    size = 2 * _smooth_radius_px(sigma_px) + 1
    return cv2.GaussianBlur(values, (size, size), sigma_px, dst=out, borderType=cv2.BORDER_REFLECT)


def _band_energy(band: np.ndarray, sigma_px: float, scratch: np.ndarray) -> np.ndarray:
    """The band's energy per pixel and channel, smoothed: (H, W, C) float32, a view of ``scratch``
    (flat float32, at least the band's size: reused for every strip, level and slice)."""
    out = scratch[:band.size].reshape(band.shape)
    energy = _smooth(np.square(band), sigma_px, out=out) if sigma_px > 0 else np.square(band, out=out)
    return energy if energy.ndim == 3 else energy[:, :, None]


def _strip_values_read(shape: tuple[int, ...], halo: int) -> int:
    """The most values a strip of a level of ``shape`` reads, its halo included (``_strips``)."""
    rows = _strip_rows(shape)
    return min(shape[0], rows + 2 * halo) * math.prod(shape[1:])


def _strip_rows(shape: tuple[int, ...]) -> int:
    """Rows per strip of a level of ``shape`` (``STRIP_VALUES``); a level of at least ``SHARED_FOLD_VALUES`` is cut
    in two strips at least, one for each of the two threads that fold it (``_in_two``)."""
    rows = pyramid.strip_rows(shape, STRIP_VALUES)
    return min(rows, (shape[0] + 1) // 2) if math.prod(shape) >= SHARED_FOLD_VALUES else rows


class _FinestBand:
    """Level 0's band, the frame less its reduction expanded, made a strip of rows at a time: the
    whole band and the frame's float32 copy that it needs cost 120 MB at 5 MP RGB. The strips hold
    the same numbers as the whole band, to the bit (``pyramid.expand_rows``)."""

    def __init__(self, pixels: np.ndarray, coarser: np.ndarray):
        self.pixels, self.coarser, self.shape = pixels, coarser, pixels.shape

    def rows(self, top: int, bottom: int) -> np.ndarray:
        expanded = pyramid.expand_rows(self.coarser, self.shape, top, bottom)
        # (The pixels made float32 as they are read: no float32 copy of the strip.)
        return np.subtract(self.pixels[top:bottom], expanded, out=expanded, dtype=np.float32)


def _strips(shape: tuple[int, ...], halo: int):
    """(top, bottom, lo, hi) per strip of an array of ``shape`` (see STRIP_VALUES): rows top..bottom
    are computed, rows lo..hi (``halo`` more either side, within the image) are read. A strip's
    smoothed energy then equals the whole band's there: a Gaussian of radius ``halo`` sees the
    same rows, and the image's own edges are the strip's edges."""
    rows = _strip_rows(shape)
    for top in range(0, shape[0], rows):
        bottom = min(shape[0], top + rows)
        yield top, bottom, max(0, top - halo), min(shape[0], bottom + halo)


def band_noise_gains(n_levels: int) -> np.ndarray:
    """Energy per pixel that white noise of unit variance leaves in each band-pass level."""
    patch = flat_noisy_patch(0.0, 1.0, seed=1)
    bands = pyramid.laplacian_pyramid(patch, n_levels)[:-1]
    return np.array([float(np.mean(band[2:-2, 2:-2] ** 2)) if min(band.shape) > 8 else float(np.mean(band ** 2))
                     for band in bands], np.float64)


class PyramidComposer:
    """The running state of a multi-scale fusion: feed slices with ``add``, read ``image()``.

    Call ``calibrate`` once with the camera noise before the first slice. ``energy`` in
    ``add`` is the slice's fine focus energy (H, W): the focus measure's finest response,
    squared, in any units as long as they are the same for every slice of the stack.
    """

    def __init__(self, shape: tuple[int, ...], weighting: PyramidWeighting = PyramidWeighting()):
        self.shape = tuple(int(n) for n in shape)
        self.weighting = weighting
        self.channels = self.shape[2] if len(self.shape) == 3 else 1
        self.n_levels = pyramid.n_levels_for(self.shape)
        shapes = [s[:2] for s in pyramid.level_shapes(self.shape, self.n_levels)]
        self._weighted = [np.zeros(s + (self.channels,), np.float32) for s in shapes]
        self._weights = [np.zeros(s + (self.channels,), np.float32) for s in shapes]
        # The largest weight root so far, as the exponent of the power of two above it (int8: a
        # quarter of float32's memory, 61 MB less at 5 MP RGB); NO_TOP_EXPONENT before any slice.
        self._top = [np.full(s + (self.channels,), NO_TOP_EXPONENT, np.int8) for s in shapes]
        # One strip of band energies (with its halo), reused: a whole band's cost 60 MB at 5 MP RGB.
        halo = _smooth_radius_px(weighting.band_sigma_px)
        # One per thread that folds (``_in_two``): the second made at the first slice that needs it.
        self._scratch_values = max(_strip_values_read(s + (self.channels,), halo) for s in shapes)
        self._scratches: list[np.ndarray] = [np.empty(self._scratch_values, np.float32)]
        self._two_threads: bool | None = None   # whether numba lets two threads run its kernels at once
        # Per level: (evidence root, band root, shared power, cap) with the band (below the residual) and
        # without it (the residual; and every level where the band's power is 0).
        self._roots = [(_roots(weighting.evidence_power_at(k), weighting.band_power_at(k)),
                        _roots(weighting.evidence_power_at(k), 0)) for k in range(self.n_levels + 1)]
        self.depth_level = min(int(weighting.depth_level), self.n_levels)
        depth_shape = shapes[self.depth_level]
        # Two weighted means with the same weights: of the slices' z (relative to the first slice's, which keeps
        # float32 sums of stage positions like 5000 um fine-grained) and of their indices, for slices without a
        # z (``depth``'s index_positions). O(H x W) whatever the depth: a 16th of a frame each at level 2.
        self._depth_weighted = np.zeros(depth_shape, np.float32)
        self._depth_weighted_index = np.zeros(depth_shape, np.float32)
        self._depth_z_origin: float | None = None
        self._depth_weights = np.zeros(depth_shape, np.float32)
        self._depth_top = np.zeros(depth_shape, np.float64)
        self._most_evidence = np.zeros(depth_shape, np.float32)
        self._least_evidence = np.full(depth_shape, np.inf, np.float32)
        # The slice with the most pooled fine evidence per full-resolution pixel: the decision map.
        self.best_index = np.full(shapes[0], -1, np.int16)
        self._best_evidence = np.zeros(shapes[0], np.float32)
        self.evidence_floor: float | None = None
        self._band_floors: np.ndarray | None = None   # (levels, channels)
        self._final = False   # the running sums became the final image (``final_image``)
        self._pooled: np.ndarray | None = None   # the next slice's evidence, between ``pool`` and ``fold``

    def calibrate(self, noise_energy: float, channel_noise_var: np.ndarray) -> None:
        """Noise floors from the fine energy that noise alone gives and each colour channel's
        noise variance (both already at least MIN_NOISE_SHARE of the range: see
        ``minimum_noise_sigma``). Call once, before the first ``add``."""
        factor = max(self.weighting.noise_floor, 1e-3)
        self.evidence_floor = float(factor * noise_energy)
        gains = band_noise_gains(self.n_levels)
        variance = np.broadcast_to(np.asarray(channel_noise_var, np.float64), (self.channels,))
        self._band_floors = (factor * gains[:, None] * variance[None, :]).astype(np.float32)
        if not (self.evidence_floor > 0 and np.all(self._band_floors > 0)):
            raise ValueError(f"noise floors must be positive, got {noise_energy} and {channel_noise_var}")

    def add(self, pixels: np.ndarray, energy: np.ndarray, z: float, slice_index: int,
            covered: np.ndarray | None = None) -> None:
        """Fold in one slice: ``pixels`` (H, W[, C]), any real dtype (made float32 a strip at a time:
        no float32 copy of the whole frame); ``energy`` (H, W); ``covered`` (H, W) bool, False where
        an aligned slice shows nothing of the reference frame."""
        self.pool(energy)
        self.fold(pixels, z, slice_index, covered)

    def pool(self, energy: np.ndarray) -> None:
        """``add`` in two halves, so that a caller can let the slice's ``energy`` go before the pyramid is
        made (20 MB at 5 MP): ``pool`` keeps the evidence that ``fold`` weighs by (smoothed, over the noise
        floor), and ``fold`` folds the slice in. The full-size evidence then lives until level 0 is folded."""
        if self.evidence_floor is None:
            raise RuntimeError("PyramidComposer.calibrate() must come before the first slice")
        w = self.weighting
        # The floor is added after smoothing: the blur keeps a constant, and this saves a pass.
        pooled = _smooth(np.ascontiguousarray(energy, np.float32), w.evidence_sigma_px)
        # (In place only into the smoothed copy: unsmoothed, ``pooled`` may be the caller's own energy.)
        self._pooled = np.add(pooled, np.float32(self.evidence_floor), out=pooled if w.evidence_sigma_px > 0 else None)

    def fold(self, pixels: np.ndarray, z: float, slice_index: int, covered: np.ndarray | None = None) -> None:
        """The second half of ``add``, after ``pool``."""
        if self._pooled is None:
            raise RuntimeError("PyramidComposer.fold() needs the slice's pool() first")
        self._check_not_final()
        pooled, self._pooled = self._pooled, None
        w = self.weighting
        # Full size it stays a bool mask (made float32 a strip at a time: 20 MB less at 5 MP); reduced, float32.
        coverage = None if covered is None else np.ascontiguousarray(covered, dtype=bool)
        _track_best(pooled, slice_index, self._best_evidence, self.best_index,
                    _EMPTY2_BYTES if coverage is None else coverage.view(np.uint8))
        levels: Iterator[np.ndarray | _FinestBand]
        if self.n_levels == 0:  # a frame too small for a band: it is its own residual
            levels = iter([np.ascontiguousarray(pixels, dtype=np.float32)])
        else:  # lazily: one band in memory at a time, the finest one strip by strip
            coarser = pyramid.reduce_in_strips(pixels, STRIP_VALUES)
            levels = itertools.chain([_FinestBand(pixels, coarser)],
                                     pyramid.laplacian_levels(coarser, self.n_levels - 1))
            del coarser  # (the generator keeps it until its first band is made)
        for level, band in enumerate(levels):
            self._fold(level, band, pooled, coverage)
            del band  # before the next band is made (peak memory)
            if level == self.depth_level:
                if self._depth_z_origin is None:
                    self._depth_z_origin = float(z)
                _fold_depth(pooled, np.float32(self.evidence_floor),
                            _EMPTY2 if coverage is None else coverage.astype(np.float32, copy=False), w.depth_power,
                            np.float32(float(z) - self._depth_z_origin), np.float32(slice_index),
                            self._depth_weighted, self._depth_weighted_index, self._depth_weights, self._depth_top,
                            self._most_evidence, self._least_evidence)
            if level < self.n_levels:
                pooled = pooled_reduce(pooled, w.evidence_pool_power)
                coverage = None if coverage is None else pyramid.reduce_in_strips(coverage, STRIP_VALUES)

    def _fold(self, level: int, band: np.ndarray | _FinestBand, pooled: np.ndarray,
              coverage: np.ndarray | None) -> None:
        """Fold one level's band, strip by strip, weighted by the fine evidence and (below the
        residual) by the band's own smoothed energy: one strip of energies in memory, not a band's."""
        w = self.weighting
        with_band = level < self.n_levels and w.band_power_at(level) > 0
        roots = self._roots[level][0 if with_band else 1]
        floors = self._band_floors[level] if with_band else np.ones(self.channels, np.float32)
        sums = (self._weighted[level], self._weights[level], self._top[level])

        def fold_strips(strips: list[tuple[int, int, int, int]], scratch: np.ndarray) -> None:
            for top, bottom, lo, hi in strips:
                strip = band.rows(lo, hi) if isinstance(band, _FinestBand) else band[lo:hi]
                strip = strip if strip.ndim == 3 else strip[:, :, None]
                inner, rows = slice(top - lo, bottom - lo), slice(top, bottom)
                energy = _band_energy(strip, w.band_sigma_px, scratch)[inner] if with_band else _EMPTY3
                covered = _EMPTY2 if coverage is None else coverage[rows].astype(np.float32, copy=False)
                _fold_level(strip[inner], pooled[rows], np.float32(self.evidence_floor), energy, floors, covered,
                            *roots, *(values[rows] for values in sums))

        strips = list(_strips(band.shape, _smooth_radius_px(w.band_sigma_px) if with_band else 0))
        if len(strips) > 1 and math.prod(band.shape) >= SHARED_FOLD_VALUES and self._may_fold_in_two():
            # (Strips write rows of their own: the sums are those of one thread, to the bit.)
            side_by_side(_on_one_thread(lambda: fold_strips(strips[1::2], self._scratches[1])),
                         _on_one_thread(lambda: fold_strips(strips[0::2], self._scratches[0])))
        else:
            fold_strips(strips, self._scratches[0])

    def _may_fold_in_two(self) -> bool:
        """Whether two threads may fold a level's strips (numba's threading layer allows it), with a second scratch."""
        if self._two_threads is None:
            self._two_threads = kernels_may_run_concurrently()
        if self._two_threads and len(self._scratches) == 1:
            self._scratches.append(np.empty(self._scratch_values, np.float32))
        return self._two_threads

    def fused_levels(self, in_place: bool = False, from_level: int = 0) -> list[np.ndarray]:
        """Each level's weighted mean, from ``from_level`` on; ``in_place``: made in the running sums themselves
        (``final_image``)."""
        self._check_not_final()
        levels = []
        for weighted, weights in zip(self._weighted[from_level:], self._weights[from_level:]):
            mean = np.maximum(weights, np.float32(1e-30), out=weights if in_place else None)
            levels.append(np.divide(weighted, mean, out=weighted if in_place else mean))
        return levels

    def image(self) -> np.ndarray:
        """The fused image so far, float32 (H, W, C)."""
        return pyramid.collapse(self.fused_levels())

    def final_image(self) -> np.ndarray:
        """``image()`` once the last slice is in, made in the running sums themselves: no more slices
        and no more images after it. At the end of a stack this touches 80 MB (5 MP RGB) of fresh
        memory less, which the end of a live stack waits for (the slices' strips leave little to reuse)."""
        image = pyramid.collapse_in_place(self.fused_levels(in_place=True), STRIP_VALUES)
        self._final = True
        return image

    def final_image_as(self, dtype: np.dtype, low: np.ndarray, high: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """``final_image()`` times ``scale``, brought within [``low``, ``high``] (the slices' range, per pixel and
        channel) and rounded to ``dtype``, each level made in one pass over rows in parallel (``finest_level``); the
        same numbers to the bit. Needs at least one band (``n_levels`` > 0)."""
        if self.n_levels == 0:
            raise ValueError("final_image_as needs a frame with at least one band; use final_image()")
        coarser = self.fused_levels(in_place=True, from_level=self.n_levels)[0]   # the residual's mean
        for level in range(self.n_levels - 1, 0, -1):  # (each level's mean and the coarser image in one pass)
            coarser = mean_plus_coarser(self._weighted[level], self._weights[level], coarser, STRIP_VALUES)
        image = finest_to_dtype(self._weighted[0], self._weights[0], coarser, low, high, scale, dtype, STRIP_VALUES)
        self._final = True
        return image

    def _check_not_final(self) -> None:
        if self._final:
            raise RuntimeError("PyramidComposer: its running sums became the final image")

    def depth(self, n_slices: int, index_positions: list[float] | None = None) -> np.ndarray:
        """The evidence-weighted mean of the ``z`` given to ``add``, per full-resolution pixel, whatever
        order the slices came in; NaN where the slices do not differ (textureless areas have no depth
        to measure). ``index_positions``: instead, the weighted mean slice index, turned into these
        positions (one per slice) by interpolating between neighbouring indices, before the depth is
        upsampled: for slices whose ``z`` was not known (their index stood in for it). A fractional
        index means a z only where z grows or falls with the index: slices 0 and 2 of z 20 and 44
        average to index 1, whose z may be anything."""
        if index_positions is None:
            mean = self._depth_weighted / np.maximum(self._depth_weights, np.float32(1e-30))
            # (The origin added in float64, as interpolating between slices' z did: a stack in z order whose step
            # is a power of two, 8 um or 0.5 um, gets the depth it got then, to the bit.)
            origin = 0.0 if self._depth_z_origin is None else self._depth_z_origin
            depth = (mean.astype(np.float64) + origin).astype(np.float32)
        else:
            depth = self._depth_weighted_index / np.maximum(self._depth_weights, np.float32(1e-30))
        contrast = self._most_evidence - self._least_evidence
        flat = self._depth_weights > max(2.0, FLAT_CURVE_SHARE * n_slices)
        textureless = flat | ~(contrast >= np.float32(TEXTURELESS_CONTRAST * self.evidence_floor))
        depth = np.where(textureless, np.float32(np.nan), depth).astype(np.float32)
        if index_positions is not None:
            depth = np.interp(depth, np.arange(len(index_positions)), index_positions).astype(np.float32)
        if self.depth_level == 0:
            return depth
        height, width = self.shape[:2]
        return _upsample_nan_aware(depth, (height, width))


def _on_one_thread(job: Callable[[], None]) -> Callable[[], None]:
    """``job`` with numba's kernels on one thread (numba's setting is the calling thread's own): two threads that
    fold side by side, each with a team of parallel threads on two cores, cost 12% more CPU, and the end of a live
    stack shares the machine."""
    def run() -> None:
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            job()
        finally:
            numba.set_num_threads(threads)
    return run


def pooled_reduce(pooled: np.ndarray, power: int) -> np.ndarray:
    """The pooled evidence one level coarser: the power mean of order ``power`` (see POOL_POWERS).
    ``pooled`` is spent: squared in place (a 5 MP frame's is 20 MB, and nothing reads it afterwards)."""
    if power == 1:
        return pyramid.reduce(pooled)
    coarser = pyramid.reduce(np.square(pooled, out=pooled))
    return np.sqrt(coarser, out=coarser)


_EMPTY3 = np.zeros((0, 0, 0), np.float32)
_EMPTY2 = np.zeros((0, 0), np.float32)
# (The decision map's coverage is bytes whether given or not: one compiled kernel for both, not two to load.)
_EMPTY2_BYTES = np.zeros((0, 0), np.uint8)


def _upsample_nan_aware(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize where NaN marks no data: known values spread, unknown stays unknown."""
    known = np.isfinite(values)
    filled = np.where(known, values, 0).astype(np.float32)
    size = (shape[1], shape[0])
    total = cv2.resize(filled, size, interpolation=cv2.INTER_LINEAR)
    share = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    # In place, in one pass over rows in parallel: two full-size arrays instead of six (fresh memory is what the end
    # of a stack waits for), and a 5 MP depth map 15 ms sooner than in four passes of NumPy on one core.
    _share_out(total, share)
    return total


@one_at_a_time  # (fusion.parallel_kernels: one at a time where the threading layer needs it)
@njit(parallel=True, cache=True, nogil=True)
def _share_out(total, share):
    """``total`` / ``share`` in place, NaN where ``share`` <= 0.5 (as np.divide(total, np.maximum(share, 1e-6)) then
    NaN there: the same float32 operations)."""
    height, width = total.shape
    least = np.float32(1e-6)
    for y in prange(height):
        for x in range(width):
            known = share[y, x]
            total[y, x] = total[y, x] / max(known, least) if known > np.float32(0.5) else np.float32(np.nan)


@njit(inline="always")
def _power(value, exponent):
    """value ** exponent for a whole exponent from 0 to 31: five squarings with selects, no
    branches on the data, so the loops around it vectorise."""
    result = 1.0
    for bit in range(5):
        result *= value if (exponent >> bit) & 1 else 1.0
        value *= value
    return result


@njit(inline="always")
def _power32(value, exponent):
    """The float32 twin of ``_power``."""
    result = np.float32(1.0)
    for bit in range(5):
        result *= value if (exponent >> bit) & 1 else np.float32(1.0)
        value *= value
    return result


def _roots(evidence_power: int, band_power: int) -> tuple[int, int, int, float]:
    """(evidence root, band root, shared power g, cap): a weight is (P^re * B^rb)^g with
    re = evidence_power / g and rb = band_power / g, so that float32 holds P^re * B^rb once each
    ratio is capped (ratios past the cap, 10^(37 / (re + rb)) over the noise floor, tie)."""
    shared = math.gcd(evidence_power, band_power) or 1
    evidence_root, band_root = evidence_power // shared, band_power // shared
    return evidence_root, band_root, shared, 10.0 ** (37.0 / max(1, evidence_root + band_root))


NO_TOP_EXPONENT = -128       # int8's least: below any root's exponent
SMALLEST_TOP_EXPONENT = -99  # 2^-99 ~ 1.6e-30: a slice that shows nothing (coverage 0) before any other


@intrinsic
def _float32_bits(typingctx, value):
    """The bits of a float32 as an int32 (a bitcast the vectoriser keeps in registers, unlike an array view)."""
    if value != types.float32:
        return None
    return types.int32(types.float32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bits are ``bits`` (int32): ``_float32_bits`` undone."""
    if bits != types.int32:
        return None
    return types.float32(types.int32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType())


@njit(inline="always")
def _row_roots(y, pooled, coverage, energy_rows, inverse_pooled_floor, inverse_floors, evidence_root, band_root,
               coverage_root, limit, channels, score):
    """Row ``y``'s weight roots per (x, channel) into ``score``: ``_fold_level``'s first half."""
    width = pooled.shape[1]
    evidence = np.empty(width, np.float32)
    for x in range(width):
        evidence[x] = _power32(min(pooled[y, x] * inverse_pooled_floor, limit), evidence_root)
    if coverage.shape[0] > 0:
        for x in range(width):
            evidence[x] *= _power32(coverage[y, x], coverage_root)  # 0 where the slice shows nothing
    for x in range(width):
        for c in range(channels):
            score[x * channels + c] = evidence[x]
    if energy_rows.shape[0] > 0:
        one = np.float32(1.0)
        for j in range(score.size):
            score[j] *= _power32(min(one + energy_rows[y, j] * inverse_floors[j], limit), band_root)


@one_at_a_time
@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _fold_level(band, pooled, pooled_floor, band_energy, floors, coverage, evidence_root, band_root, shared, cap,
                weighted, weights, top):
    """Online weighted mean over slices, per pixel and channel. The weight is
    ((pooled / floor) ** evidence_root * ((band_energy + floor_c) / floor_c) ** band_root
    [* coverage ** (8 / shared)]) ** shared; ``top`` (int8) keeps e, 2^e being the least power of
    two above the largest root so far, and the sums are kept relative to 2^(e * shared), rescaled
    (exactly: by a power of two) when a larger root arrives.

    Each row is a few flat runs without branches, over x (the per-pixel evidence) and over
    (x, channel) (the rest, fused into one run), so that they vectorise; the arrays must be
    C-contiguous."""
    height, width, channels = band.shape
    n = width * channels
    band_rows, weighted_rows = band.reshape(height, n), weighted.reshape(height, n)
    weight_rows, top_rows = weights.reshape(height, n), top.reshape(height, n)
    with_band = band_energy.shape[0] > 0
    energy_rows = band_energy.reshape(height, n) if with_band else band_energy.reshape(0, 0)
    coverage_root = max(1, 8 // shared)
    inverse_floors = np.empty(n, np.float32)  # per (x, channel): the channel's
    for j in range(n):
        inverse_floors[j] = np.float32(1.0) / floors[j % channels]
    inverse_pooled_floor = np.float32(1.0) / np.float32(pooled_floor)
    limit = np.float32(cap)
    for y in prange(height):
        score = np.empty(n, np.float32)
        _row_roots(y, pooled, coverage, energy_rows, inverse_pooled_floor, inverse_floors, evidence_root, band_root,
                   coverage_root, limit, channels, score)
        for j in range(n):
            root = score[j]
            # Roots are >= 0 and below 2^124 (the cap): the exponent field e gives 2^(e-127) <= root < 2^(e-126).
            current = np.int32(top_rows[y, j])
            new_top = max(current, max(((_float32_bits(root) >> 23) & 0xFF) - 126, SMALLEST_TOP_EXPONENT))
            top_rows[y, j] = new_top
            scale = _float32_from_bits(np.int32((127 - new_top) << 23))  # 2^-new_top
            # 2^((current - new_top) * shared): 1 unless this root is a new top
            kept = _float32_from_bits(np.int32((127 + max((current - new_top) * shared, -126)) << 23))
            added = _power32(root * scale, shared)   # this slice's weight
            weight_rows[y, j] = weight_rows[y, j] * kept + added
            weighted_rows[y, j] = weighted_rows[y, j] * kept + added * band_rows[y, j]


@one_at_a_time
@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _fold_depth(pooled, pooled_floor, coverage, power, z, index, weighted, weighted_index, weights, top, most, least):
    """Online weighted means of z and of the slice index over slices, with weight (pooled / floor) ** power."""
    height, width = pooled.shape
    with_coverage = coverage.shape[0] > 0
    for y in prange(height):
        for x in range(width):
            if with_coverage and coverage[y, x] < 0.999:
                continue
            evidence = pooled[y, x]
            if evidence > most[y, x]:
                most[y, x] = evidence
            if evidence < least[y, x]:
                least[y, x] = evidence
            score = _power(np.float64(evidence / pooled_floor), power)
            current = top[y, x]
            if score > current:
                rescale = np.float32(current / score)
                weights[y, x] = weights[y, x] * rescale + np.float32(1.0)
                weighted[y, x] = weighted[y, x] * rescale + z
                weighted_index[y, x] = weighted_index[y, x] * rescale + index
                top[y, x] = score
            else:
                weight = np.float32(score / current)
                weights[y, x] += weight
                weighted[y, x] += weight * z
                weighted_index[y, x] += weight * index


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def _track_best(pooled, slice_index, best_evidence, best_index, coverage):
    """Where ``pooled`` beats the best evidence so far (or none yet), it and ``slice_index`` become the best; not where
    ``coverage`` (uint8, or empty: covered throughout) is 0. Selects, not branches, so that the rows vectorise
    (a 5 MP frame: 33 ms on one core with branches)."""
    height, width = pooled.shape
    with_coverage = coverage.shape[0] > 0
    index = np.int16(slice_index)
    for y in prange(height):
        for x in range(width):
            evidence, best = pooled[y, x], best_evidence[y, x]
            taken = (evidence > best) | (best_index[y, x] < 0)
            if with_coverage:
                taken &= coverage[y, x] > 0
            best_evidence[y, x] = evidence if taken else best
            best_index[y, x] = index if taken else best_index[y, x]
