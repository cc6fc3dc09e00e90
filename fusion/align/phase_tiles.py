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

import cv2
import numpy as np
from numba import njit

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
        # The band by its row (y frequency) and column (x frequency): its exp(-i w.d) is a row's factor
        # times a column's, so a tile needs cos and sin of ~1.25 t phases rather than of ~t^2/10.
        rows, cols = np.nonzero(self.band)
        # A row's share of the band (an annulus, x frequencies >= 0) is one run of neighbouring columns:
        # the runs as (the band index of its first entry, its row, its first column).
        starts = np.flatnonzero(np.r_[True, np.diff(rows) != 0])
        self._band_runs = np.stack([starts, rows[starts], cols[starts]], axis=1)
        assert np.all(np.diff(cols)[np.diff(rows) == 0] == 1)
        self._fy = fy[:, 0].astype(np.float32).astype(np.float64)   # radians per px, as the fit has used them
        self._fx = fx[0, :cols.max() + 1 if len(cols) else 0].astype(np.float32).astype(np.float64)
        self._band_re, self._band_im, self._band_im_sign = _packed_band_index(rows, cols, tile_px)

    def spectra_at(self, pixels: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """Windowed spectra of the tiles of ``pixels`` whose top-left corners (x, y) are ``corners``
        (N, 2); computed once for a template and reused."""
        batches = [self.spectra(self._cut(pixels, corners[batch])) for batch in self._batches(len(corners))]
        if not batches:
            return np.empty((0, self.tile_px, self.tile_px), np.float32)
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
        """Windowed spectra of (N, t, t) tiles, each in OpenCV's packed layout (CCS: ``cv2.dft`` of a real
        tile, t x t float32), which OpenCV computes 3x as fast as scipy.fft's batched rfft2."""
        centred = tiles - tiles.mean(axis=(1, 2), keepdims=True)
        return _dft_each(centred * self.window)

    def shifts(self, template_spectra: np.ndarray, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each tile pair the shift d (x, y; px) with tile(p) ~ template(p - d), and its coherence in [0, 1].

        Coherence is near 1 when every frequency agrees on the shift, near 0 for noise or
        featureless tiles: it is the weight a tile's shift deserves.
        """
        n, t = len(tiles), self.tile_px
        # Whole-pixel start: the peak of the whitened cross-correlation (at -d).
        cross = _whitened_cross(template_spectra, self.spectra(tiles))
        correlation = _dft_each(cross, cv2.DFT_INVERSE | cv2.DFT_REAL_OUTPUT)   # (unscaled: only its peak counts)
        peak = np.argmax(correlation.reshape(n, -1), axis=1)
        peak_y, peak_x = np.divmod(peak, t)
        d = -np.stack([(peak_x + t // 2) % t - t // 2, (peak_y + t // 2) % t - t // 2], axis=1).astype(np.float32)
        positions = np.arange(t, dtype=np.float32)
        template_band = self._band_of(template_spectra)
        for _ in range(WINDOW_ITERATIONS):
            wx = _hann(positions[None, :] - d[:, :1], t)   # (N, t)
            wy = _hann(positions[None, :] - d[:, 1:], t)
            # (Computing the separable window's sums without it saves 3 ms a pass but moves the scorpion's
            # fits by up to 0.2 px and tips one slice into a fallback: fits there sit at their thresholds.
            # Likewise the mean stays NumPy's float32 sum: a numba kernel's float64 one, 2 ms a pass less, moved
            # single tiles by up to 8e-4 px and the scorpion's transforms by 0.12 px.)
            window = wy[:, :, None] * wx[:, None, :]
            mean = (tiles * window).sum(axis=(1, 2), keepdims=True) / window.sum(axis=(1, 2), keepdims=True)
            # template * conj(tile), written as NumPy computes it on more than 256 KiB (in place in the
            # temporary, the factors swapped, which rounds differently): the same bits for any batch
            band = np.conj(self._band_of(_dft_each((tiles - mean) * window)))
            band *= template_band
            d = _fit_phase_slope(band, self._band_runs, self._fx, self._fy, d, PHASE_FIT_STEPS)
        return d.astype(np.float64), _coherence(band, self._band_runs, self._fx, self._fy, d.astype(np.float64))

    def _band_of(self, spectra: np.ndarray) -> np.ndarray:
        """The band's entries (N, band size; complex64) of packed spectra (N, t, t)."""
        flat = spectra.reshape(len(spectra), -1)
        band = np.empty(flat.shape[:1] + self._band_re.shape, np.complex64)
        band.real = flat[:, self._band_re]
        band.imag = flat[:, self._band_im] * self._band_im_sign
        return band


def _dft_each(tiles: np.ndarray, flags: int = 0) -> np.ndarray:
    """cv2.dft of each (t, t) float32 tile: forward into the packed layout (CCS), or with
    DFT_INVERSE | DFT_REAL_OUTPUT back from it."""
    tiles = np.asarray(tiles, np.float32)
    out = np.empty(tiles.shape, np.float32)
    for tile, result in zip(tiles, out):
        cv2.dft(tile, result, flags)
    return out


def _packed_band_index(rows: np.ndarray, cols: np.ndarray, tile_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the entry F[row, col] (numpy's rfft2 order: rows 0 .. t - 1, columns 0 .. t/2) of a real tile's
    spectrum lies in cv2.dft's packed layout, for entries with 0 < col < t/2, or col = 0 and row not 0 or t/2:
    flat indices of its real and imaginary parts, and the imaginary part's sign.

    Columns 1 .. t/2 - 1 are pairs along each row (real at 2 col - 1, imaginary at 2 col); column 0 holds
    the first column's rows 0 .. t/2 down itself (F[k, 0] at rows 2k - 1, 2k); a row k > t/2 there is
    the conjugate of row t - k."""
    t = tile_px
    if t % 2 or np.any(cols >= t // 2) or np.any((cols == 0) & (rows % (t // 2) == 0)):
        raise ValueError(f"phase tiles of {t} px: the band must leave out column t/2 and the first column's "
                         "rows 0 and t/2 (even tiles, a band below Nyquist and above the lowest frequencies)")
    first = cols == 0
    mirrored = first & (rows > t // 2)
    k = np.where(mirrored, t - rows, rows)
    re_row = np.where(first, 2 * k - 1, rows)
    re_col = np.where(first, 0, 2 * cols - 1)
    im_row = np.where(first, 2 * k, rows)
    im_col = np.where(first, 0, 2 * cols)
    sign = np.where(mirrored, -1.0, 1.0).astype(np.float32)
    return re_row * t + re_col, im_row * t + im_col, sign


# atan(a) = a * P(a^2) on [0, 1] within 4e-8 rad (a near-minimax fit; NumPy's float32 arctan2, scalar
# without AVX-512 at 40 ns a value, was half a phase fit's time, and is within 3e-7)
ATAN_POLYNOMIAL = (0.999999335574614, -0.333298607619391, 0.1994656534236899, -0.13908627803407003,
                   0.09642192439045412, -0.05591225506612356, 0.021862905112745537, -0.00405455185257482)


@njit(inline="always")
def _half_turn_angle(re, im):
    """atan(im / re): the angle of re + i im folded into [-pi/2, pi/2], which is half the angle of its square."""
    ax, ay = abs(re), abs(im)
    big, small = max(ax, ay), min(ax, ay)
    a = small / big if big > 0.0 else 0.0
    z = a * a
    c0, c1, c2, c3, c4, c5, c6, c7 = ATAN_POLYNOMIAL
    angle = a * (c0 + z * (c1 + z * (c2 + z * (c3 + z * (c4 + z * (c5 + z * (c6 + z * c7)))))))
    if ay > ax:
        angle = 0.5 * np.pi - angle
    return -angle if (re < 0.0) != (im < 0.0) else angle


@njit(cache=True, nogil=True)
def _fit_phase_slope(band, runs, fx, fy, d, steps):
    """``steps`` Gauss-Newton steps from the shifts d (N, 2; float32): each the weighted (by |band|)
    least-squares slope of the phase left after shifting by d, doubled first (blind to bands whose sign
    defocus flipped) and halved after; the new d (float32). ``runs``: the band's rows as
    (first entry, row, first column), each a run of columns."""
    n, m = band.shape
    out = d.copy()
    weight = np.empty(m)
    for tile in range(n):
        sxx = sxy = syy = 0.0
        for run in range(len(runs)):  # the weights stay over the steps, and so do the normal equations
            first, row, first_column = runs[run]
            end = runs[run + 1, 0] if run + 1 < len(runs) else m
            row_w = row_wx = row_wxx = 0.0
            for k in range(first, end):
                value = band[tile, k]
                w = np.sqrt(np.float64(value.real) ** 2 + np.float64(value.imag) ** 2)
                weight[k] = w
                wx = fx[first_column + k - first]
                row_w += w
                row_wx += w * wx
                row_wxx += w * wx * wx
            sxx += row_wxx
            sxy += row_wx * fy[row]
            syy += row_w * fy[row] * fy[row]
        determinant = sxx * syy - sxy * sxy
        for _ in range(steps):
            if abs(determinant) <= 1e-12:
                break
            # exp(-i w.d) is a column's factor times a row's: cos and sin of t/4 + 1 + one a row
            dx, dy = np.float64(out[tile, 0]), np.float64(out[tile, 1])
            column_re, column_im = np.cos(fx * dx), -np.sin(fx * dx)
            bx = by = 0.0
            for run in range(len(runs)):
                first, row, first_column = runs[run]
                end = runs[run + 1, 0] if run + 1 < len(runs) else m
                row_re, row_im = np.cos(fy[row] * dy), -np.sin(fy[row] * dy)
                row_x = row_sum = 0.0
                for k in range(first, end):
                    c = first_column + k - first
                    re, im = _turned(band[tile, k], row_re, row_im, column_re[c], column_im[c])
                    residual = weight[k] * _half_turn_angle(re, im)
                    row_x += fx[c] * residual
                    row_sum += residual
                bx += row_x
                by += fy[row] * row_sum
            out[tile, 0] += np.float32((syy * bx - sxy * by) / determinant)
            out[tile, 1] += np.float32((sxx * by - sxy * bx) / determinant)
    return out


@njit(inline="always")
def _turned(value, row_re, row_im, column_re, column_im):
    """A band value times exp(-i w.d), given as its row's factor and its column's: (re, im)."""
    re = value.real * row_re - value.imag * row_im
    im = value.real * row_im + value.imag * row_re
    return re * column_re - im * column_im, re * column_im + im * column_re


@njit(inline="always")
def _whiten_pair(a_re, a_im, b_re, b_im):
    """a * conj(b) scaled to unit magnitude."""
    re = a_re * b_re + a_im * b_im
    im = a_im * b_re - a_re * b_im
    scale = 1.0 / (np.sqrt(re * re + im * im) + 1e-12)
    return re * scale, im * scale


@njit(cache=True, nogil=True)
def _whitened_cross(template, image):
    """template * conj(image), each frequency scaled to unit magnitude (the phase correlation's input),
    both (N, t, t) in cv2.dft's packed layout (``_packed_band_index``), and so the result."""
    n, t = template.shape[0], template.shape[1]
    out = np.empty_like(template)
    for tile in range(n):
        a, b, o = template[tile], image[tile], out[tile]
        for row in range(t):
            for col in range(1, t - 1, 2):
                o[row, col], o[row, col + 1] = _whiten_pair(a[row, col], a[row, col + 1], b[row, col], b[row, col + 1])
        for col in (0, t - 1):  # columns 0 and t/2, packed down the first and last columns
            for row in (0, t - 1):  # real entries
                o[row, col] = _whiten_pair(a[row, col], 0.0, b[row, col], 0.0)[0]
            for row in range(1, t - 1, 2):
                o[row, col], o[row + 1, col] = _whiten_pair(a[row, col], a[row + 1, col], b[row, col], b[row + 1, col])
    return out


@njit(cache=True, nogil=True)
def _coherence(band, runs, fx, fy, d):
    """|sum of the cross-spectrum with the shift d taken out, its phase doubled (as in the fit),
    over the band| / sum of its magnitudes, per tile, in [0, 1]."""
    n, m = band.shape
    out = np.zeros(n)
    for tile in range(n):
        column_re, column_im = np.cos(fx * d[tile, 0]), -np.sin(fx * d[tile, 0])
        total_re = total_im = total_w = 0.0
        for run in range(len(runs)):
            first, row, first_column = runs[run]
            end = runs[run + 1, 0] if run + 1 < len(runs) else m
            row_re, row_im = np.cos(fy[row] * d[tile, 1]), -np.sin(fy[row] * d[tile, 1])
            for k in range(first, end):
                c = first_column + k - first
                re, im = _turned(band[tile, k], row_re, row_im, column_re[c], column_im[c])
                w = np.sqrt(re * re + im * im)   # = |band|: the shift only turns it
                total_re += (re * re - im * im) / (w + 1e-12)   # (re + i im)^2: the doubled phase
                total_im += 2.0 * re * im / (w + 1e-12)
                total_w += w
        out[tile] = np.hypot(total_re, total_im) / (total_w + 1e-12)
    return out
