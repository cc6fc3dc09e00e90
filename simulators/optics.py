"""What a camera sees of a virtual specimen at a focus position: thin-lens defocus plus noise.

Defocus blur grows linearly with |height - focus| (thin lens, small defocus), modelled as a
Gaussian of sigma ``blur_px_per_um * |height - focus|``. A spatially varying blur is
rendered by interpolating, per pixel, between the texture blurred at fixed sigma levels
(computed once per specimen); that and the camera noise run as numba kernels
(``simulators.optics_kernels``), so a 1 MP colour frame costs milliseconds, not a third of a second.
``DefocusRenderer.exposed`` does both a row at a time: the frame a camera takes, no radiance image
in between.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulators import optics_kernels
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
    deliver it); 0 gives float32 in [0, 1], unquantised (noise may take it a little past 1 up to the full-scale
    exposure; beyond it, a saturated pixel, it is clipped at 1.0). full_well_e 0 turns noise off.
    Shot noise is Poisson below 100 electrons and above, its Gaussian limit: the same mean and
    variance, without the Poisson skewness (under 0.1 there, and smaller with more electrons).
    ``exposure``: the exposure time over the one at which a radiance of 1 fills the well (a camera at twice the
    exposure collects twice the electrons, and saturates at half the radiance).
    """

    full_well_e: float = 20000.0
    read_noise_e: float = 5.0
    bit_depth: int = 8
    exposure: float = 1.0

    @property
    def dtype(self) -> np.dtype:
        if self.bit_depth == 0:
            return np.dtype(np.float32)
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    @property
    def max_value(self) -> float:
        return 1.0 if self.bit_depth == 0 else float(2 ** self.bit_depth - 1)

    def expose(self, radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Radiance in [0, 1] -> a camera frame in this camera's dtype; ``rng`` seeds its noise."""
        radiance = np.ascontiguousarray(radiance, dtype=np.float32)
        frame = np.empty(radiance.shape, self.dtype)
        optics_kernels.expose_frame(_rows(radiance), *self.kernel_settings(rng), _rows(frame))
        return frame

    def kernel_settings(self, rng: np.random.Generator) -> tuple[float, float, float, bool, np.uint64, float]:
        """The noise kernels' arguments: full well, read noise, max value, whether to quantise, the
        frame's seed (one number drawn from ``rng``) and the relative exposure."""
        seed = rng.integers(0, 2 ** 64, dtype=np.uint64)
        return (float(self.full_well_e), float(self.read_noise_e), self.max_value, self.bit_depth != 0, seed,
                float(self.exposure))

    def ideal(self, radiance: np.ndarray) -> np.ndarray:
        """The noise-free frame in this camera's dtype: the ground truth to score against."""
        exposed = radiance if self.exposure == 1.0 else radiance * self.exposure
        if self.bit_depth == 0:
            return (exposed if self.exposure <= 1.0 else np.minimum(exposed, 1.0)).astype(np.float32)
        return np.clip(np.rint(exposed * self.max_value), 0, self.max_value).astype(self.dtype)


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
        texture = np.ascontiguousarray(specimen.texture, dtype=np.float32)
        self._levels = np.stack([_rows(texture if s == 0 else gaussian_blur(texture, float(s))) for s in self._sigmas])
        self._height_um = np.ascontiguousarray(specimen.height_um, dtype=np.float32)
        self._shape = texture.shape

    def render(self, focus_um: float, magnification: float = 1.0) -> np.ndarray:
        """Radiance (float32, [0, 1]) that reaches the sensor with focus at ``focus_um``.

        ``magnification`` != 1 scales the image about its centre, as a focus-breathing lens does.
        """
        radiance = self._render_unscaled(focus_um)
        return radiance if magnification == 1.0 else magnify(radiance, magnification)

    def exposed(self, camera: CameraNoise, focus_um: float, rng: np.random.Generator,
                magnification: float = 1.0) -> np.ndarray:
        """``camera.expose(self.render(focus_um, magnification), rng)``, the same frame; without
        magnification rendered and exposed a row at a time, no radiance image in between."""
        if magnification != 1.0:
            return camera.expose(self.render(focus_um, magnification), rng)
        frame = np.empty(self._shape, camera.dtype)
        optics_kernels.render_exposed(self._levels, self._sigmas, self._height_um, float(focus_um),
                                      float(self.optics.blur_px_per_um), *camera.kernel_settings(rng), _rows(frame))
        return frame

    def _render_unscaled(self, focus_um: float) -> np.ndarray:
        out = np.empty(self._shape, np.float32)
        optics_kernels.interpolate_ladder(self._levels, self._sigmas, self._height_um, float(focus_um),
                                          float(self.optics.blur_px_per_um), _rows(out))
        return out


def _rows(image: np.ndarray) -> np.ndarray:
    """A C-contiguous (H, W[, C]) image as an (H, W * C) view: per-pixel work that ignores channels."""
    return image.reshape(image.shape[0], -1)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of an (H, W[, C]) float32 image over its two spatial axes, mirrored at the edges.

    The same kernel as ``scipy.ndimage.gaussian_filter(image, sigma, mode="reflect")`` (radius
    4 sigma; results equal to 1e-6), through OpenCV: several times faster, on every core.
    """
    radius = int(4.0 * sigma_px + 0.5)
    blurred = cv2.GaussianBlur(image, (2 * radius + 1, 2 * radius + 1), sigma_px, sigmaY=sigma_px,
                               borderType=cv2.BORDER_REFLECT)
    return blurred.reshape(image.shape)


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
    slices = [renderer.exposed(camera, z, rng) for z in z_um]
    return RenderedStack(slices=slices, z_um=[float(z) for z in z_um],
                         truth=camera.ideal(specimen.texture), height_um=specimen.height_um)
