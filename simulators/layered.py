"""Focus stacks rendered layer by layer, with light that spreads across depth edges.

``simulators.optics`` blurs each pixel by its own height (a gather): cheap, but a defocused
foreground never spills over the background beside it. Here the specimen is cut into thin
height layers, each layer is convolved with the point-spread function of its own defocus
(``simulators.psf``), and the layers are combined as the light combines them:

- "opaque" (reflected light, macro photography): surfaces hide what lies behind them;
  layers are composited back to front with their blurred coverage as alpha.
- "absorbing" (bright-field transmitted light): a bright illumination field, always out of
  focus, seen through absorbing structures; the light each layer takes away spreads by that
  layer's defocus (first order in the absorbance, so layers of one object join seamlessly).
- "emitting" (fluorescence): bright sources on a dark field; the blurred layers add up.

An optional axial chromatic offset per colour channel puts each channel's focus at a
slightly different z, so defocused edges get colour fringes, as in real microscopes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sp_fft

from simulators.optics import CameraNoise, RenderedStack, magnify
from simulators.psf import DefocusPSF

KINDS = ("opaque", "absorbing", "emitting")
MAX_BLUR_STEP_PX = 0.35  # the blur may change by at most this much within one layer


@dataclass
class LayeredSpecimen:
    """What is at each pixel and at what height (um).

    content: float32 (H, W[, C]) in [0, 1]: the surface's radiance ("opaque"), the absorbance
        ("absorbing": 0 clear, 1 opaque) or the emitted radiance ("emitting").
    background: "absorbing": the illumination field seen through a clear specimen; "emitting":
        a dim glow added everywhere (autofluorescence). (H, W[, C]) or a scalar.
    """

    kind: str
    content: np.ndarray
    height_um: np.ndarray
    background: np.ndarray | float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown specimen kind {self.kind!r}; choose one of {KINDS}")
        if self.content.shape[:2] != self.height_um.shape:
            raise ValueError(f"content {self.content.shape[:2]} and height map {self.height_um.shape} differ")

    def in_focus(self) -> np.ndarray:
        """The radiance an ideal all-in-focus image shows: the ground truth."""
        content = self.content.astype(np.float32)
        if self.kind == "opaque":
            return content
        background = np.broadcast_to(np.asarray(self.background, np.float32), content.shape)
        if self.kind == "absorbing":
            return background * (1.0 - content)
        return background + content


@dataclass
class LayeredRenderer:
    """Renders a LayeredSpecimen at any focus position (um)."""

    specimen: LayeredSpecimen
    psf: DefocusPSF = field(default_factory=DefocusPSF)
    channel_focus_offset_um: tuple[float, ...] = ()   # per colour channel (axial chromatic aberration)

    def __post_init__(self):
        content = self.specimen.content.astype(np.float32)
        self._content = content if content.ndim == 3 else content[:, :, None]
        height = self.specimen.height_um.astype(np.float64)
        low, high = float(height.min()), float(height.max())
        n_layers = max(1, min(64, int(np.ceil((high - low) * self.psf.radius_px_per_um / MAX_BLUR_STEP_PX))))
        step = (high - low) / n_layers if high > low else 1.0
        # Each pixel shares itself between the two layers whose mid-heights bracket it, so the
        # blur changes smoothly with height (hard layers draw contour rings on slopes).
        position = np.clip((height - low) / step - 0.5, 0, n_layers - 1)
        self._position = position.astype(np.float32)
        self._layer_z_um = low + (np.arange(n_layers) + 0.5) * step if high > low else np.array([low])
        self._pad = self.psf.half_width_px()
        height_px, width_px = height.shape
        self._fft_shape = (sp_fft.next_fast_len(height_px + 2 * self._pad, real=True),
                           sp_fft.next_fast_len(width_px + 2 * self._pad, real=True))
        self._kernel_cache: dict[float, np.ndarray] = {}
        self._present = [j for j in range(n_layers) if (np.abs(self._position - j) < 1).any()]
        self._spectra = self._layer_spectra()

    @property
    def n_layers(self) -> int:
        return len(self._layer_z_um)

    def _spectrum(self, plane: np.ndarray) -> np.ndarray:
        padded = np.pad(plane.astype(np.float32), self._pad, mode="reflect")
        return sp_fft.rfft2(padded, s=self._fft_shape, workers=-1)

    def _layer_spectra(self) -> dict[int, list[np.ndarray]]:
        """Per layer: the spectra of what must be blurred (planes per channel, plus coverage)."""
        kind = self.specimen.kind
        spectra = {}
        for j in self._present:
            if kind == "opaque":
                covered = np.clip(self._position - j + 1, 0, 1)  # this layer and everything nearer
                # Under nearer surfaces this layer goes on as it looks where it is visible (filled
                # from the nearest such pixel), not in the colour of what hides it.
                behind = _fill_from_nearest(self._content, self._position < j + 1)
                planes = [covered * behind[:, :, c] for c in range(self._content.shape[2])] + [covered]
            else:  # the light this layer takes away (absorbing) or adds (emitting)
                share = np.clip(1 - np.abs(self._position - j), 0, 1)
                planes = [share * self._content[:, :, c] for c in range(self._content.shape[2])]
            spectra[j] = [self._spectrum(p) for p in planes]
        return spectra

    def _otf(self, defocus_um: float) -> np.ndarray:
        key = round(float(defocus_um), 3)
        otf = self._kernel_cache.get(key)
        if otf is None:
            kernel = self.psf.kernel(key)
            half = kernel.shape[0] // 2
            embedded = np.zeros(self._fft_shape, np.float32)
            embedded[:kernel.shape[0], :kernel.shape[1]] = kernel
            embedded = np.roll(embedded, (-half, -half), axis=(0, 1))
            otf = sp_fft.rfft2(embedded, workers=-1)
            self._kernel_cache[key] = otf
        return otf

    def _blur(self, spectrum: np.ndarray, otf: np.ndarray) -> np.ndarray:
        height_px, width_px = self._position.shape
        plane = sp_fft.irfft2(spectrum * otf, s=self._fft_shape, workers=-1)
        return plane[self._pad:self._pad + height_px, self._pad:self._pad + width_px].astype(np.float32)

    def render(self, focus_um: float, magnification: float = 1.0) -> np.ndarray:
        """Radiance (float32, [0, 1]) reaching the sensor with focus at ``focus_um``."""
        channels = self._content.shape[2]
        offsets = self.channel_focus_offset_um or (0.0,) * channels
        out = np.stack([self._render_channel(c, focus_um + offsets[c % len(offsets)]) for c in range(channels)], axis=2)
        out = np.clip(out, 0.0, 1.0)
        out = out if self.specimen.content.ndim == 3 else out[:, :, 0]
        return out if magnification == 1.0 else magnify(out, magnification)

    def _render_channel(self, channel: int, focus_um: float) -> np.ndarray:
        kind = self.specimen.kind
        background = np.asarray(self.specimen.background, np.float32)
        if background.ndim == 3:
            background = background[:, :, channel]
        out = None
        for j in self._present:  # far (low) to near (high)
            otf = self._otf(self._layer_z_um[j] - focus_um)
            spectra = self._spectra[j]
            if kind == "opaque":
                colour, coverage = self._blur(spectra[channel], otf), self._blur(spectra[-1], otf)
                out = colour if out is None else out * (1.0 - np.clip(coverage, 0, 1)) + colour
            else:
                light = self._blur(spectra[channel], otf)
                out = light if out is None else out + light
        assert out is not None  # a specimen has one layer at least
        if kind == "absorbing":
            return background * np.clip(1.0 - out, 0.0, 1.0)
        if kind == "emitting":
            return background + out
        return out


def _fill_from_nearest(content: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``content`` where ``visible``; elsewhere the value of the nearest visible pixel."""
    if visible.all() or not visible.any():
        return content
    from scipy import ndimage

    _, (rows, cols) = ndimage.distance_transform_edt(~visible, return_indices=True)
    return content[rows, cols]


def render_layered_stack(specimen: LayeredSpecimen, z_um, psf: DefocusPSF = DefocusPSF(),
                         camera: CameraNoise = CameraNoise(), channel_focus_offset_um: tuple[float, ...] = (),
                         breathing_per_um: float = 0.0, seed: int = 0) -> RenderedStack:
    """One noisy slice per focus position; the truth is in the first slice's frame.

    breathing_per_um: magnification change per micrometre of focus travel from the first slice
    (a focus-breathing lens), so slices zoom through the sweep.
    """
    rng = np.random.default_rng(seed)
    renderer = LayeredRenderer(specimen, psf, tuple(channel_focus_offset_um))
    z_um = [float(z) for z in z_um]
    slices = []
    for z in z_um:
        magnification = 1.0 + breathing_per_um * (z - z_um[0])
        slices.append(camera.expose(renderer.render(z, magnification), rng))
    return RenderedStack(slices=slices, z_um=z_um, truth=camera.ideal(specimen.in_focus()),
                         height_um=specimen.height_um.astype(np.float32))
