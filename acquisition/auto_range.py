"""Where a specimen has detail along z, from a coarse pre-sweep of binned frames.

Each coarse frame is binned (averaged ``binning`` x ``binning`` blocks), cut into tiles, and
each tile scored by its gradient energy. A tile's focus curve peaks where that part of the
specimen is sharp; the fine stack must reach from the lowest tile peak to the highest.
Tiles whose curve never rises above their own background (no texture) say nothing.

The sweep may stop early: once the frame's summed score has risen above its background and
fallen back there for a few coarse steps, nothing sharp lies further on.
Arrays are numpy order (height, width[, channels]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fusion import kernels
from fusion.depth_z import depth_step_at
from fusion.focus_measures import to_gray

TILE_PX = 10                 # tile side on the binned frame (chosen on benchmarks/auto_range.py's 60 specimens)
DETAIL_RATIO = 3.0           # a tile has detail when its peak score is this many times both ends of the sweep
RISE_RATIO = 1.5             # the frame's curve has risen when its peak is this many times its background
FALLEN_FRACTION = 0.15       # ... and has fallen back when below background + this share of (peak - background)
FALLEN_FRAMES = 2            # ... for this many coarse frames in a row
MIN_TILES_PER_SIDE = 3       # fewer tiles across a binned frame cannot show how the specimen's height varies


class AutoRangeError(ValueError):
    """Raised when the pre-sweep finds no z where the specimen shows detail (say where to look instead), or a range
    that the fine step cuts into slices the depth map cannot tell apart."""


def binned(pixels: np.ndarray, binning: int) -> np.ndarray:
    """Grayscale float32, averaged over ``binning`` x ``binning`` blocks (the edge remainder is cut)."""
    gray = to_gray(pixels)
    if binning == 1:
        return gray
    height, width = (gray.shape[0] // binning) * binning, (gray.shape[1] // binning) * binning
    blocks = gray[:height, :width].reshape(height // binning, binning, width // binning, binning)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def tile_scores(small: np.ndarray, tile_px: int = TILE_PX) -> np.ndarray:
    """Gradient energy summed per tile of a binned frame: (tiles_y, tiles_x)."""
    energy = kernels.gradient_magnitude(np.ascontiguousarray(small, dtype=np.float32)) ** 2
    energy[0, :] = 0  # the first row and column have no neighbour to differ from
    energy[:, 0] = 0
    rows, cols = energy.shape[0] // tile_px, energy.shape[1] // tile_px
    if rows < MIN_TILES_PER_SIDE or cols < MIN_TILES_PER_SIDE:
        raise AutoRangeError(f"a binned pre-sweep frame of {small.shape[1]}x{small.shape[0]} px holds fewer than "
                             f"{MIN_TILES_PER_SIDE} x {MIN_TILES_PER_SIDE} tiles of {tile_px} px, too few to map "
                             "the specimen's heights: lower auto_range.binning")
    # Tiles of nearly equal size that cover the whole frame: the specimen's edge rows count too.
    row_starts = np.linspace(0, energy.shape[0], rows + 1).astype(int)[:-1]
    col_starts = np.linspace(0, energy.shape[1], cols + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(energy.astype(np.float64), row_starts, axis=0), col_starts, axis=1)
    return sums


def single_peak(log_curve: np.ndarray, ends_in_detail: tuple[bool, bool] = (False, False)) -> int | None:
    """The index of a tile's focus peak, or None when the curve shows no single clear one.

    A peak counts when it rises DETAIL_RATIO above both ends of the sweep, or, where the whole
    frame was still in detail at an end (``ends_in_detail``: the specimen reaches beyond the
    search there), above the other end only (above its own lowest point when both are): the
    parts of the specimen at or beyond that end peak there. A second lobe (the curve
    dips below half the peak and comes back near it) is the blur of a nearby edge spreading into a
    tile that has no detail of its own, whose curve is lowest where that edge is sharp: no peak.
    """
    k = int(np.argmax(log_curve))
    peak = log_curve[k]
    background = [end for end, in_detail in zip((log_curve[0], log_curve[-1]), ends_in_detail) if not in_detail]
    if peak - (max(background) if background else log_curve.min()) < math.log(DETAIL_RATIO):
        return None
    depth = peak - log_curve.min()
    for side in (log_curve[k::-1], log_curve[k:]):
        dipped = np.minimum.accumulate(side) < peak - 0.5 * depth
        if np.any(dipped & (side > peak - 0.25 * depth)):
            return None
    return k


def _peak_offset(a: float, b: float, c: float) -> float:
    """Where a parabola through three equally spaced log-scores peaks, in steps from the centre (-0.5..0.5)."""
    curvature = a - 2 * b + c
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5))


@dataclass
class PreSweepAnalysis:
    """Tile scores of the coarse frames as they come, the stop rule, and the range they show."""

    tile_px: int = TILE_PX
    z_um: list[float] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)   # per frame: (tiles_y, tiles_x)

    def add(self, z_um: float, small: np.ndarray) -> None:
        """One coarse frame (already binned) at ``z_um``; frames come in increasing or decreasing z."""
        self.z_um.append(float(z_um))
        self.scores.append(tile_scores(small, self.tile_px))

    @property
    def frame_curve(self) -> list[float]:
        """The whole frame's score per coarse frame (the curve the stop rule watches)."""
        return [float(s.sum()) for s in self.scores]

    def has_fallen_back(self) -> bool:
        """The frame's curve rose above its background and has been back there for FALLEN_FRAMES frames."""
        curve = self.frame_curve
        if len(curve) < FALLEN_FRAMES + 2:
            return False
        peak_at = int(np.argmax(curve))
        background = min(curve[:peak_at + 1])
        peak = curve[peak_at]
        if peak < RISE_RATIO * background:
            return False
        level = background + FALLEN_FRACTION * (peak - background)
        tail = curve[peak_at + 1:]
        return len(tail) >= FALLEN_FRAMES and all(v <= level for v in tail[-FALLEN_FRAMES:])

    def ends_in_detail(self) -> tuple[bool, bool]:
        """Whether the frame still showed detail at the bottom and at the top of the sweep: its
        curve there stands above its background by more than FALLEN_FRACTION of the rise (the
        specimen goes on beyond the search range)."""
        order = np.argsort(self.z_um)
        curve = np.asarray(self.frame_curve)[order]
        background, peak = float(curve.min()), float(curve.max())
        if peak < RISE_RATIO * background:
            return False, False  # no rise at all: no end says more than the other
        level = background + FALLEN_FRACTION * (peak - background)
        return bool(curve[0] > level), bool(curve[-1] > level)

    def tile_peaks_um(self) -> np.ndarray:
        """The z of each tile's focus peak (sub-step, parabolic in log score), NaN where the tile shows
        no single clear peak: (tiles_y, tiles_x)."""
        if len(self.scores) < 3:
            raise AutoRangeError(f"the pre-sweep took {len(self.scores)} frames; it needs 3 at least "
                                 "(widen auto_range.search_um or take a smaller coarse_step_um)")
        order = np.argsort(self.z_um)
        z = np.asarray(self.z_um)[order]
        grid = self.scores[0].shape
        log_scores = np.log(np.maximum(np.stack([self.scores[i] for i in order]).reshape(len(order), -1), 1e-30))
        peaks = np.full(log_scores.shape[1], np.nan)
        ends_in_detail = self.ends_in_detail()
        for tile, curve in enumerate(log_scores.T):
            k = single_peak(curve, ends_in_detail)
            if k is None:
                continue
            peaks[tile] = z[k]
            if 0 < k < len(z) - 1:
                offset = _peak_offset(curve[k - 1], curve[k], curve[k + 1])
                peaks[tile] += offset * (z[k + 1] - z[k] if offset > 0 else z[k] - z[k - 1])
        return peaks.reshape(grid)

    def tile_spans_um(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) z within each tile. A tile's peak is its mean height; its edge lies half
        the difference to a neighbour further towards it (the steepest of its neighbours, across both
        axes: adding both axes' halves overshoots where a surface flattens out). Past the frame's
        border the surface goes on at half the slope it came with: a slope seen from inside only
        may flatten out beyond the last tile (a dome's rim), or not (a tilted plane)."""
        peaks = self.tile_peaks_um()
        mirrored = np.pad(peaks, 1, mode="reflect", reflect_type="odd")  # the slope continued
        padded = 0.5 * (mirrored + np.pad(peaks, 1, mode="edge"))       # ... at half its size
        centre = padded[1:-1, 1:-1]
        neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
        with np.errstate(all="ignore"):  # NaN neighbours (tiles without a peak) do not count
            below = np.nan_to_num(np.fmax.reduce([centre - n for n in neighbours]), nan=0.0)
            above = np.nan_to_num(np.fmax.reduce([n - centre for n in neighbours]), nan=0.0)
        return peaks - 0.5 * np.maximum(below, 0.0), peaks + 0.5 * np.maximum(above, 0.0)

    def range_um(self) -> tuple[float, float]:
        """(lowest, highest) tile peak: where the specimen has detail. A frame whose detail never rose
        RISE_RATIO above its background is an error, whatever some tiles show: the search lies outside
        the specimen or inside it, and a range from it would be a guess."""
        low, high = self.tile_spans_um()
        curve = self.frame_curve
        if np.all(np.isnan(low)) or max(curve) < RISE_RATIO * min(curve):
            raise AutoRangeError(f"no part of the frame came into focus between {min(self.z_um):g} and "
                                 f"{max(self.z_um):g} µm (the frame's detail varied by only "
                                 f"{max(curve) / max(min(curve), 1e-30):.2f}x): either the specimen lies outside "
                                 "this range or is deeper than it on both sides; widen auto_range.search_um "
                                 "(and check that the specimen is lit and in the field of view)")
        return float(np.nanmin(low)), float(np.nanmax(high))

    def edge_warnings(self) -> list[str]:
        """The specimen may go on beyond the sweep where the frame still shows detail at its first or
        last frame, or tiles peak there."""
        peaks = self.tile_peaks_um()
        peaks = peaks[~np.isnan(peaks)]
        lo, hi = min(self.z_um), max(self.z_um)
        low_in_detail, high_in_detail = self.ends_in_detail()
        warnings = []
        if low_in_detail or (peaks.size and np.isclose(peaks.min(), lo)):
            warnings.append(f"the specimen is still in focus at the bottom of the pre-sweep ({lo:g} µm): "
                            "it may reach lower, and the stack stops there; widen auto_range.search_um")
        if (high_in_detail or (peaks.size and np.isclose(peaks.max(), hi))) and not self.has_fallen_back():
            warnings.append(f"the specimen is still in focus at the top of the pre-sweep ({hi:g} µm): "
                            "it may reach higher, and the stack stops there; widen auto_range.search_um")
        return warnings


def coarse_positions(search_um: tuple[float, float], coarse_step_um: float) -> list[float]:
    """From the bottom of the search range to its top, every coarse step (the top always included)."""
    bottom, top = search_um
    count = int(math.floor((top - bottom) / coarse_step_um + 1e-9)) + 1
    positions = [bottom + k * coarse_step_um for k in range(count)]
    if top - positions[-1] > 1e-9:
        positions.append(top)
    return positions


def within(positions: list[float], bottom_um: float, top_um: float) -> list[float]:
    """The stack moved (same step, same count) to start at ``bottom_um`` or end at ``top_um`` where it
    reaches past either: an end that cannot be passed keeps its slice. A stack longer than the room
    fills it from the bottom at the same step, the top as its last slice."""
    step = positions[1] - positions[0] if len(positions) > 1 else 0.0
    if step > 0 and positions[-1] - positions[0] > top_um - bottom_um + 1e-9:
        filled = [round(bottom_um + k * step, 6) for k in range(int((top_um - bottom_um) / step + 1e-9) + 1)]
        return filled + ([round(top_um, 6)] if filled[-1] < top_um - 1e-9 else [])
    if positions[0] < bottom_um - 1e-9:
        positions = [round(z + bottom_um - positions[0], 6) for z in positions]
    if positions[-1] > top_um + 1e-9:
        positions = [round(z - (positions[-1] - top_um), 6) for z in positions]
    return [z for z in positions if bottom_um - 1e-9 <= z <= top_um + 1e-9]


def fine_positions(lo_um: float, hi_um: float, step_um: float, margin_steps: int) -> list[float]:
    """Every ``step_um`` from ``margin_steps`` steps below ``lo_um`` to as many above ``hi_um``, centred."""
    span = (hi_um - lo_um) + 2 * margin_steps * step_um
    count = int(math.ceil(span / step_um - 1e-9)) + 1
    first = (lo_um + hi_um) / 2 - (count - 1) * step_um / 2
    return [round(first + k * step_um, 6) for k in range(count)]


def step_too_fine_anywhere(search_um: tuple[float, float], step_um: float, margin_steps: int) -> str | None:
    """Where the step alone decides that the fine stack's z cannot be told apart in the depth map, wherever in
    ``search_um`` the pre-sweep finds the specimen: why, in words, and the least step it holds; else None (the range
    found decides: ``pre_sweep.find_z_range`` checks it before the stack).

    The stack has 1 + 2 ``margin_steps`` slices at least; any three in a row (two steps, and the 1e-6 µm the fine
    positions are rounded to) within less than the depth map's spacing at the z of ``search_um`` nearest 0 lie in at
    most two of its values, so two of them are one z to it."""
    bottom, top = search_um
    nearest = 0.0 if bottom <= 0.0 <= top else min(abs(bottom), abs(top))
    if margin_steps < 1 or not 2 * step_um + 1e-6 < depth_step_at(nearest):
        return None
    farthest = max(abs(bottom), abs(top)) + margin_steps * step_um
    return (f"step_um {step_um:g} µm is finer than the depth map holds anywhere in search_um ({bottom:g}..{top:g} µm): "
            f"it holds z as float32 (about 7 significant digits), every {depth_step_at(nearest):.3g} µm at {nearest:g} "
            f"µm, so wherever the pre-sweep finds the specimen some of the fine stack's slices cannot be told apart; "
            f"give it a step of at least {depth_step_at(farthest):.3g} µm (the depth map's at {farthest:g} µm)")
