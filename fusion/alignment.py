"""Slice alignment: estimate how each slice moved against the reference (the first slice).

Real stacks move: a tunable lens changes magnification with focal power, a lens focused by
hand breathes, a stage drifts. Each slice is registered to the previous one (neighbours
differ least in focus), and the steps are composed into a transform to the reference frame.
Registration is ECC (enhanced correlation coefficient, robust to the contrast changes that
defocus brings) on a low-pass pyramid, coarse to fine, weighted to textured regions; a fit
that fails or is implausible keeps the previous transform, with a warning.

Transforms are 3x3 matrices mapping reference-frame pixel coordinates (x, y) to the slice's.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

MODELS = ("similarity", "scale_shift", "affine")
ALIGN_MODES = ("off", "on", "auto")
AUTO_MIN_MOTION_PX = 0.25   # "auto": slices that moved less than this anywhere are not warped
MIN_CORRELATION = 0.5       # an ECC fit below this is a poor fit
MAX_SCALE_STEP = 0.15       # implausible between neighbouring slices: more than 15% zoom ...
MAX_SHIFT_FRACTION = 0.2    # ... or a shift of a fifth of the frame


@dataclass(frozen=True)
class AlignSettings:
    """mode: "on", "auto" (warp only slices that moved by more than a quarter pixel) or "off".

    model: "similarity" (scale, rotation, shift), "scale_shift" (tunable lenses) or "affine".
    coarse_px / fine_px: the widths of the pyramid levels registration runs on.
    """

    mode: str = "on"
    model: str = "similarity"
    coarse_px: int = 320
    fine_px: int = 720

    def __post_init__(self):
        if self.mode not in ALIGN_MODES:
            raise ValueError(f"unknown align mode {self.mode!r}; choose one of {ALIGN_MODES}")
        if self.model not in MODELS:
            raise ValueError(f"unknown alignment model {self.model!r}; choose one of {MODELS}")


def describe(transform: np.ndarray) -> dict:
    """Scale, rotation (degrees) and shift (px) of a transform, for reports."""
    a, b, tx = transform[0]
    c, d, ty = transform[1]
    return {"scale": float(np.sqrt(abs(a * d - b * c))), "rotation_deg": float(np.degrees(np.arctan2(c - b, a + d))),
            "shift_x_px": float(tx), "shift_y_px": float(ty), "matrix": transform[:2].round(6).tolist()}


def max_displacement_px(transform: np.ndarray, shape: tuple[int, int]) -> float:
    """How far the transform moves the frame's corners (the most any pixel moves)."""
    height, width = shape
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    return float(np.abs((corners @ transform.T)[:, :2] - corners[:, :2]).max())


def _project(affine: np.ndarray, model: str) -> np.ndarray:
    """An affine step reduced to the model's degrees of freedom."""
    if model == "affine":
        return affine
    a, b, tx = affine[0]
    c, d, ty = affine[1]
    if model == "scale_shift":
        scale = (a + d) / 2
        return np.array([[scale, 0, tx], [0, scale, ty], [0, 0, 1]])
    cos_part, sin_part = (a + d) / 2, (c - b) / 2
    return np.array([[cos_part, -sin_part, tx], [sin_part, cos_part, ty], [0, 0, 1]])


def _pyramid_level(gray: np.ndarray, width_px: int) -> tuple[np.ndarray, float]:
    factor = min(1.0, width_px / gray.shape[1])
    if factor >= 1.0:
        return gray.astype(np.float32), 1.0
    size = (max(8, round(gray.shape[1] * factor)), max(8, round(gray.shape[0] * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32), factor


def _texture_mask(gray: np.ndarray) -> np.ndarray:
    """Where the image has detail to register on: the top half of gradient magnitudes, dilated."""
    blurred = cv2.GaussianBlur(gray, (0, 0), 1.0)
    magnitude = cv2.magnitude(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
    mask = (magnitude >= np.percentile(magnitude, 50)).astype(np.uint8)
    return cv2.dilate(mask, np.ones((5, 5), np.uint8))


class SliceAligner:
    """Streams slices in; returns for each the transform from the reference frame to it."""

    def __init__(self, shape: tuple[int, int], settings: AlignSettings = AlignSettings(), name: str = "stack"):
        self.shape = shape
        self.settings = settings
        self.name = name
        self.transforms: list[np.ndarray] = []
        self.fallbacks: list[int] = []   # slices whose fit was poor and kept the previous transform
        self._previous: dict[int, np.ndarray] | None = None  # the previous slice's pyramid levels

    def add(self, gray: np.ndarray) -> np.ndarray:
        """Register the next slice (grayscale, full resolution); returns its 3x3 transform."""
        levels = {width: _pyramid_level(gray, width) for width in (self.settings.coarse_px, self.settings.fine_px)}
        index = len(self.transforms)
        if self._previous is None:
            transform = np.eye(3)
        else:
            # Against the previous slice: registering further back (or against the fused image
            # so far, or slice 0) was measured worse, as focus differs more.
            step = self._estimate(self._previous, levels, np.eye(3), (self.settings.coarse_px, self.settings.fine_px))
            if step is None or not self._plausible(step):
                self.fallbacks.append(index)
                warnings.warn(f"{self.name}: slice {index} could not be aligned reliably; "
                              "it keeps the previous slice's alignment", stacklevel=3)
                step = np.eye(3)
            transform = step @ self.transforms[-1]
        self._previous = levels
        self.transforms.append(transform)
        return transform

    def _estimate(self, template_levels: dict, image_levels: dict, initial: np.ndarray,
                  widths: tuple[int, ...]) -> np.ndarray | None:
        """ECC from template coordinates to image coordinates, coarse to fine, at full resolution."""
        estimate = initial
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
        for width in widths:
            template, factor = template_levels[width]
            image, _ = image_levels[width]
            to_level = np.diag([factor, factor, 1.0])
            warp = (to_level @ estimate @ np.linalg.inv(to_level))[:2].astype(np.float32)
            try:
                correlation, warp = cv2.findTransformECC(template, image, warp, cv2.MOTION_AFFINE, criteria,
                                                         _texture_mask(template), 5)
            except cv2.error:
                return None
            if not np.isfinite(correlation) or correlation < MIN_CORRELATION:
                return None
            level_estimate = np.vstack([warp, [0, 0, 1]]).astype(np.float64)
            estimate = _project(np.linalg.inv(to_level) @ level_estimate @ to_level, self.settings.model)
        return estimate

    def _plausible(self, step: np.ndarray) -> bool:
        scale = np.sqrt(abs(np.linalg.det(step[:2, :2])))
        return abs(scale - 1) <= MAX_SCALE_STEP and np.abs(step[:2, 2]).max() <= MAX_SHIFT_FRACTION * max(self.shape)


def warp_to_reference(pixels: np.ndarray, transform: np.ndarray, border_px: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The slice resampled into the reference frame, and the mask of reference pixels it covers.

    Pixels within ``border_px`` of the slice's edge count as uncovered: interpolation there
    mixes in pixels from outside the frame.
    """
    height, width = pixels.shape[:2]
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP  # sharper than linear; Lanczos costs 2x for no measured gain
    matrix = transform[:2].astype(np.float64)
    if pixels.ndim == 3 and pixels.shape[2] > 4:
        warped = np.stack([cv2.warpAffine(pixels[:, :, c], matrix, (width, height), flags=flags,
                                          borderMode=cv2.BORDER_REPLICATE) for c in range(pixels.shape[2])], axis=2)
    else:
        warped = cv2.warpAffine(pixels, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        if pixels.ndim == 3 and warped.ndim == 2:
            warped = warped[:, :, None]
    inside = np.zeros((height, width), np.uint8)
    inside[border_px:height - border_px, border_px:width - border_px] = 1
    covered = cv2.warpAffine(inside, matrix, (width, height), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return warped, covered
