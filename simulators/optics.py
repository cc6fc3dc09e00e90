"""What a camera sees of a virtual specimen at a focus position: thin-lens defocus plus noise.

Defocus blur grows linearly with |height - focus| (thin lens, small defocus), modelled as a
Gaussian of sigma ``blur_px_per_um * |height - focus|``. A spatially varying blur is
rendered by interpolating, per pixel, between the texture blurred at fixed sigma levels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from simulators.specimens import VirtualSpecimen


@dataclass(frozen=True)
class Optics:
    """blur_px_per_um: Gaussian sigma (pixels) per micrometre of defocus."""

    blur_px_per_um: float = 0.5
    max_blur_px: float = 16.0


@dataclass(frozen=True)
class CameraNoise:
    """Shot noise from a full well of electrons, Gaussian read noise, quantised to bit_depth.

    bit_depth 8 gives uint8; 10, 12 or 16 give uint16 (10/12-bit data in uint16, as cameras
    deliver it); 0 gives float32 in [0, 1], unquantised. full_well_e 0 turns noise off.
    """

    full_well_e: float = 20000.0
    read_noise_e: float = 5.0
    bit_depth: int = 8

    @property
    def dtype(self) -> np.dtype:
        if self.bit_depth == 0:
            return np.dtype(np.float32)
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    @property
    def max_value(self) -> float:
        return 1.0 if self.bit_depth == 0 else float(2 ** self.bit_depth - 1)

    def expose(self, radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Radiance in [0, 1] -> a camera frame in this camera's dtype."""
        signal = np.clip(radiance, 0, 1).astype(np.float32)
        if self.full_well_e > 0:
            electrons = rng.poisson(signal * self.full_well_e).astype(np.float32)
            electrons += rng.normal(0.0, self.read_noise_e, radiance.shape).astype(np.float32)
            signal = electrons / np.float32(self.full_well_e)
        if self.bit_depth == 0:
            return signal.astype(np.float32)
        return np.clip(np.rint(signal * self.max_value), 0, self.max_value).astype(self.dtype)

    def ideal(self, radiance: np.ndarray) -> np.ndarray:
        """The noise-free frame in this camera's dtype: the ground truth to score against."""
        if self.bit_depth == 0:
            return radiance.astype(np.float32)
        return np.clip(np.rint(radiance * self.max_value), 0, self.max_value).astype(self.dtype)


class DefocusRenderer:
    """Renders a specimen at any focus position; the blur levels are computed once."""

    def __init__(self, specimen: VirtualSpecimen, optics: Optics = Optics()):
        self.specimen = specimen
        self.optics = optics
        top = max(optics.max_blur_px, 0.5)
        # Fine steps where blur changes the image most, coarser beyond.
        self._sigmas = np.unique(np.concatenate([
            np.arange(0.0, min(top, 3.0) + 1e-6, 0.5),
            np.geomspace(3.0, top, num=max(2, int(np.ceil(np.log(top / 3.0) / np.log(1.35))) + 1))
            if top > 3.0 else np.array([], np.float32)])).astype(np.float32)
        texture = specimen.texture
        spatial = (1, 1, 0) if texture.ndim == 3 else (1, 1)
        self._levels = np.stack([
            texture if s == 0 else ndimage.gaussian_filter(texture, [s * k for k in spatial], mode="reflect")
            for s in self._sigmas]).astype(np.float32)

    def blur_px(self, focus_um: float) -> np.ndarray:
        """Per-pixel Gaussian sigma of the defocus blur at this focus position."""
        defocus_um = np.abs(self.specimen.height_um - np.float32(focus_um))
        return np.minimum(defocus_um * self.optics.blur_px_per_um, self._sigmas[-1]).astype(np.float32)

    def render(self, focus_um: float, magnification: float = 1.0) -> np.ndarray:
        """Radiance (float32, [0, 1]) that reaches the sensor with focus at ``focus_um``.

        ``magnification`` != 1 scales the image about its centre, as a focus-breathing lens does.
        """
        radiance = self._render_unscaled(focus_um)
        return radiance if magnification == 1.0 else magnify(radiance, magnification)

    def _render_unscaled(self, focus_um: float) -> np.ndarray:
        sigma = self.blur_px(focus_um)
        upper = np.clip(np.searchsorted(self._sigmas, sigma, side="right"), 1, len(self._sigmas) - 1)
        lower = upper - 1
        span = self._sigmas[upper] - self._sigmas[lower]
        t = np.clip((sigma - self._sigmas[lower]) / span, 0, 1)
        rows, cols = np.indices(sigma.shape)
        below = self._levels[lower, rows, cols]
        above = self._levels[upper, rows, cols]
        if below.ndim == 3:
            t = t[:, :, None]
        return (below * (1 - t) + above * t).astype(np.float32)


def magnify(image: np.ndarray, magnification: float) -> np.ndarray:
    """Scale an (H, W[, C]) float image about its centre, keeping its size.

    Lanczos resampling, so that the simulated lens does not blur more than a lens does;
    at the edges the image is mirrored (a real frame would show new content there).
    """
    height, width = image.shape[:2]
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    matrix = np.hstack([np.eye(2) * magnification, (centre - magnification * centre)[:, None]])
    out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
    return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out


@dataclass(frozen=True)
class TunableLensOptics:
    """How a tunable lens's focal power moves focus on the specimen, and how much it breathes.

    focus_um = um_per_dpt * power_dpt; magnification = 1 + breathing_per_dpt * power_dpt.
    """

    um_per_dpt: float = 10.0
    breathing_per_dpt: float = 0.0

    def focus_um(self, power_dpt: float) -> float:
        return self.um_per_dpt * power_dpt

    def magnification(self, power_dpt: float) -> float:
        return 1.0 + self.breathing_per_dpt * power_dpt


@dataclass
class RenderedStack:
    """A rendered focus sweep and what the simulator knows about it."""

    slices: list[np.ndarray]
    z_um: list[float]
    truth: np.ndarray        # the all-in-focus frame, noise-free, in the slices' dtype
    height_um: np.ndarray


def render_stack(specimen: VirtualSpecimen, z_um, optics: Optics = Optics(),
                 camera: CameraNoise = CameraNoise(), seed: int = 0) -> RenderedStack:
    """Render one slice per focus position, with camera noise."""
    rng = np.random.default_rng(seed)
    renderer = DefocusRenderer(specimen, optics)
    slices = [camera.expose(renderer.render(z), rng) for z in z_um]
    return RenderedStack(slices=slices, z_um=[float(z) for z in z_um],
                         truth=camera.ideal(specimen.texture), height_um=specimen.height_um)
