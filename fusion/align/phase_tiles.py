"""Sub-pixel shifts between matching tiles of two images, from the slope of their cross-spectrum phase.

Why phase: defocus blurs with a (nearly) symmetric point-spread function, whose spectrum is
real, so blur changes the cross-spectrum's magnitude but not its phase, except that a disk-like
PSF's spectrum turns negative in bands, flipping their sign: the phase is therefore doubled
before fitting, which is blind to sign flips. The shift is the slope of the phase, fitted by
weighted least squares over a band of frequencies:
- the lowest frequencies are left out: the tile window's own spectrum lives there;
- frequencies above half Nyquist are left out: interpolation and aliasing bend their phase.
The window is moved with the estimated shift and the fit repeated, so that both tiles see
the same part of the scene under the same window (a fixed window pulls every shift towards 0).
"""
from __future__ import annotations

import numpy as np
import scipy.fft
from numba import njit, prange

LOWEST_FREQUENCY_BINS = 3   # below this many cycles per tile the window's spectrum dominates
HIGHEST_FREQUENCY = 0.5     # of Nyquist
WINDOW_ITERATIONS = 2
PHASE_FIT_STEPS = 2
# Tiles are cut and measured a batch of about this many pixels at a time (64 tiles of 128 px, 256 of
# 64 px): each step's temporaries then stay about 4 MB, where a 5 MP frame's ~165 fine tiles at once
# held ten of ~10 MB each while the other core composed (a refusion's peak). As fast, and the same
# answers (the scorpion's fused image is unchanged to the bit; NumPy may round a sum over another
# batch shape differently, by about 1e-7 px).
BATCH_PIXELS = 1 << 20


def _hann(positions: np.ndarray, length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(positions, 0, length - 1) / (length - 1))


class PhaseTiles:
    """Measures shifts between stacks of square tiles of one size."""

    def __init__(self, tile_px: int):
        self.tile_px = tile_px
        window_1d = _hann(np.arange(tile_px, dtype=np.float32), tile_px)
        self.window = np.outer(window_1d, window_1d).astype(np.float32)
        fy = np.fft.fftfreq(tile_px)[:, None] * 2 * np.pi
        fx = np.fft.rfftfreq(tile_px)[None, :] * 2 * np.pi
        radius = np.hypot(fx, fy)
        self.band = (radius > LOWEST_FREQUENCY_BINS * 2 * np.pi / tile_px) & (radius <= HIGHEST_FREQUENCY * np.pi)
        self._wx = np.broadcast_to(fx, radius.shape)[self.band].astype(np.float32)
        self._wy = np.broadcast_to(fy, radius.shape)[self.band].astype(np.float32)

    def spectra_at(self, pixels: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """Windowed spectra of the tiles of ``pixels`` whose top-left corners (x, y) are ``corners``
        (N, 2); computed once for a template and reused."""
        batches = [self.spectra(self._cut(pixels, corners[batch])) for batch in self._batches(len(corners))]
        if not batches:
            return np.empty((0, self.tile_px, self.tile_px // 2 + 1), np.complex64)
        return batches[0] if len(batches) == 1 else np.concatenate(batches)

    def shifts_at(self, template_spectra: np.ndarray, templates: np.ndarray, pixels: np.ndarray,
                  corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``shifts`` of the tiles of ``pixels`` at ``corners`` (N, 2; x, y of the top left), each
        against the template ``template_spectra[templates[k]]`` (from ``spectra_at``)."""
        batches = [self.shifts(template_spectra[templates[batch]], self._cut(pixels, corners[batch]))
                   for batch in self._batches(len(corners))]
        if not batches:
            return np.empty((0, 2)), np.empty(0)
        return np.concatenate([d for d, _ in batches]), np.concatenate([c for _, c in batches])

    def _batches(self, n_tiles: int) -> list[slice]:
        size = max(1, BATCH_PIXELS // self.tile_px ** 2)
        return [slice(start, start + size) for start in range(0, n_tiles, size)]

    def _cut(self, pixels: np.ndarray, corners: np.ndarray) -> np.ndarray:
        t = self.tile_px
        return np.stack([pixels[y:y + t, x:x + t] for x, y in corners])

    def spectra(self, tiles: np.ndarray) -> np.ndarray:
        """Windowed spectra of (N, t, t) tiles."""
        centred = tiles - tiles.mean(axis=(1, 2), keepdims=True)
        return scipy.fft.rfft2(centred * self.window, workers=-1)

    def shifts(self, template_spectra: np.ndarray, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each tile pair the shift d (x, y; px) with tile(p) ~ template(p - d), and its coherence in [0, 1].

        Coherence is near 1 when every frequency agrees on the shift, near 0 for noise or
        featureless tiles: it is the weight a tile's shift deserves.
        """
        n, t = len(tiles), self.tile_px
        # Whole-pixel start: the peak of the whitened cross-correlation (at -d).
        cross = _whitened_cross(template_spectra, self.spectra(tiles))
        correlation = scipy.fft.irfft2(cross, s=(t, t), workers=-1, overwrite_x=True)
        peak = np.argmax(correlation.reshape(n, -1), axis=1)
        peak_y, peak_x = np.divmod(peak, t)
        d = -np.stack([(peak_x + t // 2) % t - t // 2, (peak_y + t // 2) % t - t // 2], axis=1).astype(np.float32)
        positions = np.arange(t, dtype=np.float32)
        template_band = template_spectra[:, self.band]
        for _ in range(WINDOW_ITERATIONS):
            wx = _hann(positions[None, :] - d[:, :1], t)   # (N, t)
            wy = _hann(positions[None, :] - d[:, 1:], t)
            # (Computing the separable window's sums without it saves 3 ms a pass but moves the scorpion's
            # fits by up to 0.2 px and tips one slice into a fallback: fits there sit at their thresholds.)
            window = wy[:, :, None] * wx[:, None, :]
            mean = (tiles * window).sum(axis=(1, 2), keepdims=True) / window.sum(axis=(1, 2), keepdims=True)
            band = template_band * np.conj(scipy.fft.rfft2((tiles - mean) * window, workers=-1)[:, self.band])
            weight = np.abs(band)
            for _ in range(PHASE_FIT_STEPS):
                d = d + self._phase_slope(band, weight, d)
        return d.astype(np.float64), _coherence(band, self._wx, self._wy, d.astype(np.float64))

    def _unshift(self, d: np.ndarray) -> np.ndarray:
        """exp(-i w.d) over the band, per tile: takes the shift d out of the phase."""
        phase = self._wx[None] * d[:, :1] + self._wy[None] * d[:, 1:]
        return (np.cos(phase) - 1j * np.sin(phase)).astype(np.complex64)

    def _phase_slope(self, band: np.ndarray, weight: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Gauss-Newton step (float32 NumPy: its vectorised sin, cos and arctan2 beat a numba loop's
        scalar ones): weighted least-squares slope of the phase left after shifting by d."""
        left = band * self._unshift(d)
        residual = 0.5 * np.angle(left * left)  # doubled: blind to bands whose sign defocus flipped
        wx, wy = self._wx[None], self._wy[None]
        sxx, sxy, syy = (weight * wx * wx).sum(1), (weight * wx * wy).sum(1), (weight * wy * wy).sum(1)
        bx, by = (weight * wx * residual).sum(1), (weight * wy * residual).sum(1)
        determinant = sxx * syy - sxy * sxy
        determinant = np.where(np.abs(determinant) > 1e-12, determinant, np.inf)
        shifts = [(syy * bx - sxy * by) / determinant, (sxx * by - sxy * bx) / determinant]
        return np.stack(shifts, axis=1).astype(np.float32)


@njit(parallel=True, cache=True, nogil=True)
def _whitened_cross(template, image):
    """template * conj(image), each frequency scaled to unit magnitude (the phase correlation's input)."""
    out = np.empty_like(template)
    flat_t, flat_i, flat_o = template.reshape(-1), image.reshape(-1), out.reshape(-1)
    for k in prange(flat_o.size):
        a, b = flat_t[k], flat_i[k]
        re = a.real * b.real + a.imag * b.imag
        im = a.imag * b.real - a.real * b.imag
        scale = 1.0 / (np.sqrt(re * re + im * im) + 1e-12)
        flat_o[k] = complex(re * scale, im * scale)
    return out


@njit(parallel=True, cache=True, nogil=True)
def _coherence(band, wx, wy, d):
    """|sum of the cross-spectrum with the shift d taken out, its phase doubled (as in the fit),
    over the band| / sum of its magnitudes, per tile, in [0, 1]."""
    n, m = band.shape
    out = np.zeros(n)
    for tile in prange(n):
        total_re = total_im = total_w = 0.0
        for k in range(m):
            value = band[tile, k]
            phase = wx[k] * d[tile, 0] + wy[k] * d[tile, 1]
            c, s = np.cos(phase), np.sin(phase)
            re = value.real * c + value.imag * s
            im = value.imag * c - value.real * s
            w = abs(value)
            total_re += (re * re - im * im) / (w + 1e-12)   # (re + i im)^2: the doubled phase
            total_im += 2.0 * re * im / (w + 1e-12)
            total_w += w
        out[tile] = np.hypot(total_re, total_im) / (total_w + 1e-12)
    return out
