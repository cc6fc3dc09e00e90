"""Slice alignment: estimate how each slice moved against the reference (the first slice that shows something: frames
of nothing but noise before it, a camera started before the light, stay where they are).

Real stacks move: a tunable lens changes magnification with focal power, a lens focused by
hand breathes, a stage drifts. Each slice is registered to the previous one (neighbours
differ least in focus), and the steps are composed into a transform to the reference frame.

Registration must not mistake defocus for motion. It matches tiles: a grid of tiles of the
previous slice is found in the new one by the phase of their cross-spectrum (`phase_tiles`),
which symmetric defocus blur leaves alone, and the model (similarity, scale plus shift, or
affine) is fitted to the tile correspondences by least squares that weight each tile by
how well its frequencies agree and give up on outliers. Coarse to fine: a whole-frame phase
correlation for large shifts, a tile pass on a small copy, one at the fine level, then a
least-squares refinement that models each small tile's change of blur (`defocus_refine`),
because a blur change that varies across the frame looks like motion and would add up along
the stack. A fit with too few agreeing tiles or an implausible step keeps the previous
transform, with a warning.

Transforms are 3x3 matrices mapping reference-frame pixel coordinates (x, y) to the slice's.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from fusion.align import defocus_refine
from fusion.align.geometry import max_displacement_px
from fusion.errors import slice_name
from fusion.align.lens_breathing import LensBreathing
from fusion.align.phase_tiles import PhaseTiles
from fusion.blank_slices import noise_only

MODELS = ("similarity", "scale_shift", "affine", "lens")
ALIGN_MODES = ("off", "on", "auto")
AUTO_MIN_MOTION_PX = 0.5    # "auto": slices that moved less than this anywhere are not warped
MIN_FRAME_PX = 192          # frames smaller than this on their short side are not aligned
MIN_TILE_PX = 16            # small frames get smaller tiles, down to this
MIN_AGREEING_TILES = 6      # fewer tiles than this that agree with the fit: a poor fit
MIN_TILE_COHERENCE = 0.3    # a tile whose frequencies agree less than this carries no shift
MAX_MISFIT_PX = 1.0         # a tile agrees with the fit when it lands within this (level px) ...
MIN_AGREEING_FRACTION = 0.25  # ... and a fit needs this share of the usable tiles' weight to agree
FIRST_LOOK_MIN_TILES = 12   # a tile pass judges by its first quarter of tiles only with this many usable
MAX_REFINEMENT_PX = 2.0     # a refinement that moves the phase estimate further (level px) went astray
MAX_SCALE_STEP = 0.15       # implausible between neighbouring slices: more than 15% zoom ...
MAX_SHIFT_FRACTION = 0.2    # ... or a shift of a fifth of the frame
QUICK_STILL_PX = 0.3       # "auto": a slice the quick check places this close is taken as still
KEY_DETAIL_RATIO = 0.5      # slices with less than this share of the sharpest slice's detail are "blurred"


@dataclass(frozen=True)
class AlignSettings:
    """mode: "on", "auto" (warp only slices that moved by more than AUTO_MIN_MOTION_PX) or "off".

    model: "similarity" (scale, rotation, shift), "scale_shift", "affine", or "lens": a lens that
        breathes, zooming about the frame's centre by an amount that grows linearly with focus
        (``lens_breathing``).
    coarse_px / fine_px: the widths of the two pyramid levels registration runs on;
    coarse_tile_px / fine_tile_px: the tile sizes there.
    """

    mode: str = "on"
    model: str = "similarity"
    coarse_px: int = 384
    fine_px: int = 1024
    coarse_tile_px: int = 64
    fine_tile_px: int = 128

    def __post_init__(self):
        if self.mode not in ALIGN_MODES:
            raise ValueError(f"unknown align mode {self.mode!r}; choose one of {ALIGN_MODES}")
        if self.model not in MODELS:
            raise ValueError(f"unknown alignment model {self.model!r}; choose one of {MODELS}")

    @property
    def pair_model(self) -> str:
        """The model each pair of slices is registered with ("lens" fits its zoom afterwards)."""
        return "scale_shift" if self.model == "lens" else self.model


def describe(transform: np.ndarray) -> dict:
    """Scale, rotation (degrees) and shift (px) of a transform, for reports."""
    a, b, tx = transform[0]
    c, d, ty = transform[1]
    return {"scale": float(np.sqrt(abs(a * d - b * c))), "rotation_deg": float(np.degrees(np.arctan2(c - b, a + d))),
            "shift_x_px": float(tx), "shift_y_px": float(ty), "matrix": transform[:2].round(6).tolist()}


@dataclass
class _Templates:
    """A level's grid of template tiles and their spectra."""

    centres: np.ndarray       # (N, 2) the centres of the grid tiles, level coords, float
    first_look: np.ndarray    # (N,) bool: every other tile of every other grid row (``_tile_pass``)
    spectra: np.ndarray       # (N, t, t) packed spectra

    @classmethod
    def of(cls, pixels: np.ndarray, tile_px: int, phase: PhaseTiles) -> _Templates:
        corners = _grid_corners(pixels.shape, tile_px)
        columns = len(np.unique(corners[:, 0]))
        row, column = np.divmod(np.arange(len(corners)), columns)
        return cls((corners + tile_px // 2).astype(np.float64), (row % 2 == 0) & (column % 2 == 0),
                   phase.spectra_at(pixels, corners))


@dataclass
class _Level:
    """One pyramid level of a slice: pixels, the map from full-resolution coordinates, template tiles."""

    pixels: np.ndarray
    to_level: np.ndarray              # 3x3, full-resolution pixel coords -> level pixel coords
    tile_px: int
    templates: _Templates | None = None   # made on the level's first use as a template
    # This (coarse) level's fits against templates, by the template's id: "auto"'s stillness
    # check and the registration after it ask for the same one.
    coarse_fits: dict[int, np.ndarray | None] = field(default_factory=dict)

    def on_level(self, transform: np.ndarray) -> np.ndarray:
        """A full-resolution transform expressed in this level's pixel coordinates."""
        return self.to_level @ transform @ np.linalg.inv(self.to_level)

    def to_full(self, transform: np.ndarray) -> np.ndarray:
        """A transform in this level's pixel coordinates expressed at full resolution."""
        return np.linalg.inv(self.to_level) @ transform @ self.to_level


def _make_level(gray: np.ndarray, width_px: int, tile_px: int) -> _Level:
    """The slice at most ``width_px`` wide (never enlarged), with tiles that fit it at least 3 x 3 times."""
    height, width = gray.shape
    factor = min(1.0, width_px / width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    while tile_px > MIN_TILE_PX and 2 * tile_px > min(size):
        tile_px //= 2
    if size == (width, height):  # its own copy: it is kept for the next slice, and the caller may reuse its array
        return _Level(np.array(gray, np.float32), np.eye(3), tile_px)
    fx, fy = size[0] / width, size[1] / height
    # INTER_AREA maps pixel centres: x_level = (x + 0.5) * f - 0.5
    to_level = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])
    return _Level(cv2.resize(gray.astype(np.float32, copy=False), size, interpolation=cv2.INTER_AREA), to_level,
                  tile_px)


def _grid_corners(shape: tuple[int, ...], tile_px: int) -> np.ndarray:
    """The top-left corners (x, y) of tiles overlapping by half, covering a frame of ``shape``."""
    height, width = shape
    step = max(1, tile_px // 2)
    ys = np.unique(np.r_[np.arange(0, height - tile_px + 1, step), height - tile_px])
    xs = np.unique(np.r_[np.arange(0, width - tile_px + 1, step), width - tile_px])
    tops, lefts = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([lefts.ravel(), tops.ravel()], axis=1)


def fit_model(source: np.ndarray, target: np.ndarray, weight: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's 3x3 transform taking source points to target points; robust (Cauchy) weights.

    Returns the transform and each point's misfit (px).
    """
    centre = source.mean(axis=0)
    p, q = source - centre, (target - centre).reshape(-1)
    n = len(p)
    if model == "affine":
        design = np.zeros((2 * n, 6))
        design[0::2, 0:3] = np.c_[p, np.ones(n)]
        design[1::2, 3:6] = np.c_[p, np.ones(n)]
    else:
        design = np.zeros((2 * n, 4))
        design[0::2] = np.c_[p[:, 0], -p[:, 1], np.ones(n), np.zeros(n)]
        design[1::2] = np.c_[p[:, 1], p[:, 0], np.zeros(n), np.ones(n)]
        if model == "scale_shift":
            design[:, 1] = 0.0
    robust = weight.copy()
    for _ in range(6):
        root = np.sqrt(np.repeat(robust, 2))
        solution = np.linalg.lstsq(design * root[:, None], q * root, rcond=None)[0]
        misfit = np.hypot(*(design @ solution - q).reshape(-1, 2).T)
        spread = 1.4826 * np.median(misfit[weight > 0]) + 1e-3
        robust = weight / (1 + (misfit / (2 * spread)) ** 2)
    if model == "affine":
        linear, shift = solution[[0, 1, 3, 4]].reshape(2, 2), solution[[2, 5]]
    else:
        linear, shift = np.array([[solution[0], -solution[1]], [solution[1], solution[0]]]), solution[2:]
    transform = np.eye(3)
    transform[:2, :2] = linear
    transform[:2, 2] = centre + shift - linear @ centre
    return transform, misfit


@dataclass(frozen=True)
class _TileFit:
    """The model fitted to tile shifts, and how many tiles and how much of their weight agree with it."""

    transform: np.ndarray   # level coords
    usable: int
    agreeing: int
    agreeing_weight: float
    weight: float

    @property
    def agrees_enough(self) -> bool:
        """Whether MIN_AGREEING_FRACTION of the usable tiles' weight agrees."""
        return not self.agreeing_weight < MIN_AGREEING_FRACTION * self.weight

    @property
    def agrees(self) -> bool:
        """Whether the fit holds: enough tiles and enough of their weight agree."""
        return self.agreeing >= MIN_AGREEING_TILES and self.agrees_enough


def _tile_fit(centres: np.ndarray, corners: np.ndarray, shift: np.ndarray, coherence: np.ndarray, tiles: np.ndarray,
              tile_px: int, model: str) -> _TileFit | None:
    """The model fitted to the usable ones of the tiles ``tiles`` (a mask), from the template's tile
    ``centres`` to where they were found (``corners`` plus half a tile plus ``shift``); None when fewer
    than MIN_AGREEING_TILES are usable."""
    usable = tiles & (coherence >= MIN_TILE_COHERENCE) & np.all(np.abs(shift) <= tile_px / 4, axis=1) \
        & np.all(np.isfinite(shift), axis=1)
    if usable.sum() < MIN_AGREEING_TILES:
        return None
    weight = coherence[usable] ** 4
    fitted, misfit = fit_model(centres[usable], corners[usable] + tile_px // 2 + shift[usable], weight, model)
    agreeing = misfit <= MAX_MISFIT_PX
    return _TileFit(fitted, int(usable.sum()), int(agreeing.sum()), float(weight[agreeing].sum()),
                    float(weight.sum()))


@dataclass(frozen=True)
class _TilePass:
    """A tile pass's outcome: the fit (full-resolution coordinates; None where it does not hold), and whether
    its first look already gave up: a quarter of the tiles, spread over the frame, agreed with no one fit."""

    transform: np.ndarray | None
    scattered: bool = False


WORKING_RANGE_MAX = 65535.0  # registration works on intensities up to 16 bits


def _detail(pixels: np.ndarray) -> float:
    """How much fine detail a (coarse-level) slice shows: its mean squared Laplacian."""
    return float(np.mean(cv2.Laplacian(pixels.astype(np.float32), cv2.CV_32F) ** 2))


class SliceAligner:
    """Streams slices in; returns for each the transform from the reference frame to it."""

    def __init__(self, shape: tuple[int, int], settings: AlignSettings = AlignSettings(), name: str = "stack",
                 label: Callable[[int], str] | None = None, value_step: float = 1.0):
        """``label``: how warnings name slice k (a folder's file name); default "slice k" (from 0).
        ``value_step``: the pixels' quantum (``blank_slices.value_step``), to tell a frame of noise only."""
        self.shape = shape
        self.settings = settings
        self.name = name
        self._label = label or slice_name
        self._value_step = value_step
        self.transforms: list[np.ndarray] = []   # reference frame -> each slice, as used
        self._chained: list[np.ndarray] = []     # ... as registered (the same but for "lens")
        self._breathing = LensBreathing()
        self.fallbacks: list[int] = []   # slices whose fit was poor and kept the previous transform
        self._previous: list[_Level] | None = None
        # The sharpest slice so far and its transform: each slice is also registered to it
        # directly, so that a chain through blurred slices cannot drift (loop closure).
        self._key: list[_Level] | None = None
        self._key_transform = np.eye(3)
        self._key_detail = -1.0
        self._previous_detail = -1.0
        self._phase: dict[int, PhaseTiles] = {}  # by tile size
        self._intensity_scale: float | None = None
        # Too few pixels to tell motion from the apparent motion that focus changes bring.
        self.too_small = min(shape) < MIN_FRAME_PX
        if self.too_small:
            warnings.warn(f"{name}: frames of {shape[1]}x{shape[0]} px are too small to align "
                          f"(at least {MIN_FRAME_PX} px on the short side); slices are not aligned", stacklevel=3)

    def add(self, gray: np.ndarray, z: float | None = None) -> np.ndarray:
        """Register the next slice (grayscale, full resolution) at focus ``z`` (any unit; the slice's
        index when not known: only the "lens" model uses it); returns its 3x3 transform."""
        if self.too_small:
            self.transforms.append(np.eye(3))
            return self.transforms[-1]
        z = float(len(self.transforms)) if z is None else float(z)
        index = len(self.transforms)
        if self._previous is None and noise_only(gray, self._value_step):
            # A frame of noise only (or one value) before the first with detail has nothing to register on: it stays
            # where it is, and the next is the reference. Made the reference, a dark frame failed the registration of
            # the first slice with detail, warned of as a dark frame that 'could not be aligned reliably'.
            self._chained.append(np.eye(3))
            self.transforms.append(np.eye(3))   # (not the lens's fit: its first focus is the reference's)
            return self.transforms[-1]
        gray = self._in_working_range(gray)
        levels = [_make_level(gray, self.settings.coarse_px, self.settings.coarse_tile_px),
                  _make_level(gray, self.settings.fine_px, self.settings.fine_tile_px)]
        detail = _detail(levels[0].pixels)
        if self.settings.mode == "auto" and self._previous is not None and self._looks_still(levels):
            # "auto" on a still stack: tile passes against the previous slice cost a fraction of a
            # registration, and a slice that did not move is not warped anyway. (Drift slower than
            # QUICK_STILL_PX per slice is not followed: "on" registers every slice in full.)
            self._previous, self._previous_detail = levels, detail
            return self._accept(self._chained[-1], z)
        transform = np.eye(3) if self._previous is None else self._registered(levels, index, detail)
        self._previous, self._previous_detail = levels, detail
        if detail > self._key_detail and index not in self.fallbacks:
            self._key, self._key_transform, self._key_detail = levels, transform, detail
        return self._accept(transform, z)

    def finish(self) -> None:
        """At the stack's end: where every slice showed noise only, none was the reference and none was registered;
        that is said once, and every slice after the first is a fallback (it stays where it is), as one whose
        registration failed is (it said nothing, and the report read as slices registered and found still)."""
        if self.too_small or self._previous is not None or len(self.transforms) < 2:
            return
        self.fallbacks.extend(index for index in range(1, len(self.transforms)) if index not in self.fallbacks)
        warnings.warn(f"{self.name}: no slice shows more than noise (or one value throughout) to register the others "
                      "on: the slices were not aligned (see 'fallback' in the report)", stacklevel=4)

    def _registered(self, levels: list[_Level], index: int, detail: float) -> np.ndarray:
        """The slice's transform from the reference frame, from the sharpest slice or the previous one."""
        assert self._previous is not None  # (the first slice is the reference)
        anchored, anchor_refined = None, False
        # After a blurred slice the chain through it may have drifted, so the slice is first
        # registered to the sharpest one directly (loop closure); when that fails, the chain
        # goes on. Between neighbours of like sharpness the chain is the more accurate.
        if self._key is not None and self._key is not self._previous \
                and self._previous_detail < KEY_DETAIL_RATIO * self._key_detail:
            direct, anchor_refined = self._register(self._key, levels)
            if direct is not None and self._plausible(direct):
                anchored = direct @ self._key_transform
        # A direct registration spans the most focus, so the most apparent motion: one whose defocus
        # refinement failed is taken only where the chain is no better (the previous slice kept an
        # older alignment), or fails. (A still 192x256 dome took a 1.4% zoom from it: 40.9 -> 24.7 dB.)
        if anchored is not None and (anchor_refined or index - 1 in self.fallbacks):
            return anchored
        # Against the previous slice: neighbours differ least in focus.
        step, step_refined = self._register(self._previous, levels)
        chained = step @ self._chained[-1] if step is not None and self._plausible(step) else None
        if anchored is not None and (chained is None or not step_refined):
            return anchored
        if chained is not None:
            return chained
        self.fallbacks.append(index)
        if len(self.fallbacks) == 1:  # once per stack; the report lists every such slice
            warnings.warn(f"{self.name}: {self._label(index)} could not be aligned reliably"
                          f"{self._why_not_aligned(detail)}; it keeps the previous slice's alignment "
                          "(later ones: see 'fallback' in the report)", stacklevel=4)
        return self._chained[-1]

    def _why_not_aligned(self, detail: float) -> str:
        """The likely cause, where the slices show it: a slice with less than KEY_DETAIL_RATIO of the
        sharpest one's detail (the stack's first, the end of a sweep) shares little to register on; a
        slice that blurred also has little to give the fused image."""
        blurred = KEY_DETAIL_RATIO * max(detail, self._previous_detail, self._key_detail)
        if detail == 0:
            return ": it is blank, one value throughout (a dark frame?), with nothing to register on or to fuse"
        if detail < blurred:
            return (": it is far out of focus, with little detail to register on (and little to give the "
                    "fused image)")
        if self._previous_detail < blurred:
            return ": the slice before it is far out of focus, with little detail to register on"
        return ""

    def _accept(self, chained: np.ndarray, z: float) -> np.ndarray:
        """Record the registered transform; return the one to use (for "lens": the breathing fit)."""
        self._chained.append(chained)
        used = chained
        if self.settings.model == "lens":
            self._breathing.add(z, chained)
            used = self._breathing.transform(z, self.shape)
        self.transforms.append(used)
        return used

    def _in_working_range(self, gray: np.ndarray) -> np.ndarray:
        """Data far beyond 16 bits (uint32, large floats) scaled down by one factor per stack:
        the float32 phase-fit sums of squared spectra would overflow. 8- and 16-bit data pass as they are."""
        if self._intensity_scale is None:
            high = float(np.percentile(np.abs(gray[::4, ::4]), 99.9))
            self._intensity_scale = WORKING_RANGE_MAX / high if high > WORKING_RANGE_MAX else 1.0
        return gray if self._intensity_scale == 1.0 else gray * np.float32(self._intensity_scale)

    def _phase_tiles(self, tile_px: int) -> PhaseTiles:
        if tile_px not in self._phase:
            self._phase[tile_px] = PhaseTiles(tile_px)
        return self._phase[tile_px]

    def _looks_still(self, levels: list[_Level]) -> bool:
        """Whether the slice sits where the previous one does, to within QUICK_STILL_PX anywhere
        in the frame, by the tile passes alone (no defocus refinement: most of the cost)."""
        template = self._previous
        assert template is not None  # auto mode asks only once there is a previous slice
        step = self._coarse_estimate(template[0], levels[0])
        if step is None:
            return False
        coarse_px = max_displacement_px(step, self.shape)
        if coarse_px < QUICK_STILL_PX:
            return True
        if coarse_px >= AUTO_MIN_MOTION_PX:
            return False
        # In between, the coarse level cannot tell (it is up to 1/7 of a large frame): ask the fine one.
        fine = self._tile_pass(template[1], levels[1], step).transform
        return fine is not None and max_displacement_px(fine, self.shape) < QUICK_STILL_PX

    def _coarse_estimate(self, template: _Level, image: _Level) -> np.ndarray | None:
        """The coarse level's fit (full-resolution coordinates), or None."""
        if id(template) not in image.coarse_fits:
            image.coarse_fits[id(template)] = self._coarse_fit(template, image)
        return image.coarse_fits[id(template)]

    def _coarse_fit(self, template: _Level, image: _Level) -> np.ndarray | None:
        window = cv2.createHanningWindow(template.pixels.shape[::-1], cv2.CV_64F)
        (dx, dy), _ = cv2.phaseCorrelate(template.pixels.astype(np.float64), image.pixels.astype(np.float64), window)
        whole_frame_shift = template.to_full(np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]))
        # The whole-frame shift starts large motions; a frame whose background or glow misleads
        # it is started from no motion instead (neighbouring slices rarely move far).
        for start in (whole_frame_shift, np.eye(3)):
            estimate = self._tile_pass(template, image, start).transform
            if estimate is not None:
                return estimate
        return None

    def _register(self, template: list[_Level], image: list[_Level]) -> tuple[np.ndarray | None, bool]:
        """Transform from template (full-resolution) coordinates to image coordinates, or None; and
        whether its defocus refinement held."""
        estimate = self._coarse_estimate(template[0], image[0])
        if estimate is None:
            return None, False
        # Where the fine level's tiles disagree (heavy blur on one side), the coarse fit stands.
        fine = self._tile_pass(template[1], image[1], estimate)
        if fine.scattered:
            # ... and so would a refinement's failure: where a first look's dozen or more coherent tiles,
            # spread over the frame, agree with no one fit of the model to a pixel, the motion is no such
            # model at the fine level's precision (bright-field glows), and a least-squares fit of it
            # over the whole frame steps further than MAX_REFINEMENT_PX (the scorpion: all 9 such
            # refinements failed, first steps 2.7-6.5 px, one by its total; 0.7 of its 0.9 CPU s of
            # refinement). No refinement on the rendered, real or test stacks followed such a first look.
            return estimate, False
        phase = estimate if fine.transform is None else fine.transform
        refined = self._defocus_refined(template[1], image[1], phase)
        return refined, refined is not phase

    def _defocus_refined(self, template: _Level, image: _Level, estimate: np.ndarray) -> np.ndarray:
        """The phase estimate refined against defocus-induced apparent motion (``estimate`` itself if refining
        fails)."""
        on_level = template.on_level(estimate)
        # On bright-field stacks most refinements fail (the scorpion: 9 of 10, now mostly not run: ``_register``).
        # A step over MAX_REFINEMENT_PX stops one at once; the total check below cannot be decided sooner than
        # it is: every step may move up to MAX_REFINEMENT_PX, so the steps left could undo the total so far.
        refined = defocus_refine.refine(template.pixels, image.pixels, on_level, self.settings.pair_model,
                                        max_step_px=MAX_REFINEMENT_PX)
        if refined is None or max_displacement_px(np.linalg.inv(on_level) @ refined, template.pixels.shape) \
                > MAX_REFINEMENT_PX:
            return estimate
        return template.to_full(refined)

    def _tile_pass(self, template: _Level, image: _Level, estimate: np.ndarray) -> _TilePass:
        """Find each template tile in the image near where ``estimate`` puts it; refit the model."""
        tile_px = template.tile_px
        if template.templates is None:  # first use of this slice as a template
            template.templates = _Templates.of(template.pixels, tile_px, self._phase_tiles(tile_px))
        grid = template.templates
        predicted = np.c_[grid.centres, np.ones(len(grid.centres))] @ template.on_level(estimate).T
        corners = np.rint(predicted[:, :2]).astype(int) - tile_px // 2
        height, width = image.pixels.shape
        inside = (corners[:, 0] >= 0) & (corners[:, 1] >= 0) & \
                 (corners[:, 0] + tile_px <= width) & (corners[:, 1] + tile_px <= height)
        if inside.sum() < MIN_AGREEING_TILES:
            return _TilePass(None)
        shift, coherence = np.zeros((len(corners), 2)), np.zeros(len(corners))  # (unmeasured: incoherent)
        # A quarter of the tiles first, spread over the frame: where their own fit does not agree,
        # neither would the whole's (bright-field stacks whose motion is no similarity at the fine
        # level's precision: the scorpion, 9 of 10 fine passes), and the rest are not measured.
        # A tile's shift is the same measured alone or with others (the same bits), and so is the fit.
        first = inside & grid.first_look
        self._measure(template, image, corners, first, shift, coherence)
        look = _tile_fit(grid.centres, corners, shift, coherence, first, tile_px, self.settings.pair_model)
        if look is not None and look.usable >= FIRST_LOOK_MIN_TILES and not look.agrees_enough:
            return _TilePass(None, scattered=True)
        self._measure(template, image, corners, inside & ~first, shift, coherence)
        fit = _tile_fit(grid.centres, corners, shift, coherence, inside, tile_px, self.settings.pair_model)
        return _TilePass(None if fit is None or not fit.agrees else template.to_full(fit.transform))

    def _measure(self, template: _Level, image: _Level, corners: np.ndarray, tiles: np.ndarray, shift: np.ndarray,
                 coherence: np.ndarray) -> None:
        """Into ``shift`` and ``coherence``: those of the template's grid tiles ``tiles`` (a mask) found in
        the image at ``corners``."""
        assert template.templates is not None  # made by the tile pass
        phase = self._phase_tiles(template.tile_px)
        chosen = np.flatnonzero(tiles)
        shift[chosen], coherence[chosen] = phase.shifts_at(template.templates.spectra, chosen, image.pixels,
                                                           corners[chosen])

    def _plausible(self, step: np.ndarray) -> bool:
        scale = np.sqrt(abs(np.linalg.det(step[:2, :2])))
        return abs(scale - 1) <= MAX_SCALE_STEP and np.abs(step[:2, 2]).max() <= MAX_SHIFT_FRACTION * max(self.shape)


def warp_to_reference(pixels: np.ndarray, transform: np.ndarray, border_px: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The slice resampled into the reference frame, and the mask of reference pixels it covers.

    Pixels within ``border_px`` of the slice's edge count as uncovered: interpolation there
    mixes in pixels from outside the frame.
    """
    height, width = pixels.shape[:2]
    # Cubic: Lanczos measured 0.08 dB better on average (0.2 at most) but costs 0.19 s more per 5 MP RGB slice.
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    matrix = transform[:2].astype(np.float64)
    if pixels.ndim == 3 and pixels.shape[2] > 4:
        warped = np.stack([cv2.warpAffine(pixels[:, :, c], matrix, (width, height), flags=flags,
                                          borderMode=cv2.BORDER_REPLICATE) for c in range(pixels.shape[2])], axis=2)
    else:
        warped = cv2.warpAffine(pixels, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        if pixels.ndim == 3 and warped.ndim == 2:
            warped = warped[:, :, None]
    # Cubic interpolation overshoots at strong edges (ringing): a warped slice keeps to the values the slice
    # holds, or the fused image (clipped to the slices' range) would reach past them (4136 in a 12-bit stack).
    np.clip(warped, pixels.min(), pixels.max(), out=warped)
    inside = np.zeros((height, width), np.uint8)
    inside[border_px:height - border_px, border_px:width - border_px] = 1
    covered = cv2.warpAffine(inside, matrix, (width, height), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped, covered.view(bool)  # (nearest neighbour keeps the 0s and 1s: no copy to make them bool)


def warp_mask(mask: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """A (H, W) bool mask of the slice moved into the reference frame as ``warp_to_reference`` moves its pixels
    (nearest neighbour; False outside the slice)."""
    height, width = mask.shape
    moved = cv2.warpAffine(mask.astype(np.uint8), transform[:2].astype(np.float64), (width, height),
                           flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    return moved.astype(bool)
