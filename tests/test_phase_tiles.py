"""Tile phase registration measures its tiles a batch at a time (small temporaries); the answers
must not depend on the batching, and must find the shift the tiles were given."""
import numpy as np
import pytest

from fusion.align import phase_tiles
from fusion.align.phase_tiles import PhaseTiles


def _textured(shape, seed=0):
    import cv2
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 1.5) * 255


def test_batched_shifts_equal_one_batch_and_find_the_true_shift(monkeypatch):
    tile_px, shift_px = 32, (1.25, -0.5)   # (x, y)
    image = _textured((400, 420))
    import cv2
    moved = cv2.warpAffine(image, np.float32([[1, 0, shift_px[0]], [0, 1, shift_px[1]]]), image.shape[::-1],
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    ys, xs = np.meshgrid(np.arange(16, 400 - 48, 16), np.arange(16, 420 - 48, 16), indexing="ij")
    corners = np.stack([xs.ravel(), ys.ravel()], axis=1)
    assert len(corners) > 3 * 64  # several batches, the last one partial
    phase = PhaseTiles(tile_px)
    answers = {}
    for batch in (7, 64, 10 ** 6):
        monkeypatch.setattr(phase_tiles, "BATCH_PIXELS", batch * tile_px ** 2)
        spectra = phase.spectra_at(image, corners)
        answers[batch] = phase.shifts_at(spectra, np.arange(len(corners)), moved, corners)
    whole_d, whole_c = answers[10 ** 6]
    for d, coherence in answers.values():  # to the bit: a tile pass measures a first quarter of its tiles alone
        np.testing.assert_array_equal(d, whole_d)
        np.testing.assert_array_equal(coherence, whole_c)
    assert np.median(whole_d, axis=0) == pytest.approx(shift_px, abs=0.05)


def test_tiles_are_matched_to_the_templates_they_name():
    image = _textured((256, 256), seed=1)
    phase = PhaseTiles(32)
    corners = np.array([[10, 10], [100, 40], [200, 200]])
    spectra = phase.spectra_at(image, corners)
    # The image tiles at the second and third corners against their own templates, given in another order.
    d, coherence = phase.shifts_at(spectra, np.array([2, 1]), image, corners[[2, 1]])
    np.testing.assert_allclose(d, 0.0, atol=1e-3)
    assert np.all(coherence > 0.9)


def test_no_tiles_give_no_spectra_and_no_shifts():
    phase = PhaseTiles(32)
    image = _textured((64, 64))
    none = np.empty((0, 2), int)
    spectra = phase.spectra_at(image, none)
    d, coherence = phase.shifts_at(spectra, np.empty(0, int), image, none)
    assert spectra.shape == (0, 32, 32) and d.shape == (0, 2) and coherence.shape == (0,)


def test_phase_fit_kernels_are_the_documented_numpy_fit():
    """The numba kernels (a polynomial arctan, exp(-i w.d) as a row's factor times a column's) give the
    Gauss-Newton steps and the coherence of the fit written out in NumPy, to well under 0.001 px."""
    rng = np.random.default_rng(4)
    phase = PhaseTiles(32)
    rows, cols = np.nonzero(phase.band)
    wx, wy = phase._fx[cols], phase._fy[rows]
    band = (rng.normal(size=(5, len(wx))) + 1j * rng.normal(size=(5, len(wx)))).astype(np.complex64)
    band *= np.exp(1j * (wx * 0.7 - wy * 0.4)).astype(np.complex64)   # mostly a shift of (0.7, -0.4)
    d = rng.uniform(-0.5, 0.5, (5, 2)).astype(np.float32)
    expected = d.astype(np.float64)
    weight = np.abs(band).astype(np.float64)
    for _ in range(2):
        left = band * np.exp(-1j * (wx * expected[:, :1] + wy * expected[:, 1:]))
        residual = 0.5 * np.angle(left * left)
        normal = np.array([[np.sum(weight * a * b, axis=1) for b in (wx, wy)] for a in (wx, wy)]).transpose(2, 0, 1)
        right = np.stack([np.sum(weight * wx * residual, axis=1), np.sum(weight * wy * residual, axis=1)], axis=1)
        expected = expected + np.linalg.solve(normal, right[..., None])[..., 0]
    fitted = phase_tiles._fit_phase_slope(band, phase._band_runs, phase._fx, phase._fy, d, 2)
    np.testing.assert_allclose(fitted, expected, atol=1e-4)
    left = band * np.exp(-1j * (wx * expected[:, :1] + wy * expected[:, 1:]))
    expected_coherence = np.abs(np.sum(left * left / np.abs(left), axis=1)) / np.sum(np.abs(left), axis=1)
    np.testing.assert_allclose(phase_tiles._coherence(band, phase._band_runs, phase._fx, phase._fy, expected),
                               expected_coherence, atol=1e-6)


def test_half_turn_angle_is_half_the_angle_of_the_square():
    """The fit's residual phase: NumPy's 0.5 * angle(z^2), to within 5e-8 rad, over six decades of |z|."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=2000) * rng.choice([1e-3, 1.0, 1e3], 2000) + 1j * rng.normal(size=2000) * 10.0
    angles = np.array([phase_tiles._half_turn_angle(value.real, value.imag) for value in z])
    np.testing.assert_allclose(angles, 0.5 * np.angle(z * z), atol=5e-8)


@pytest.mark.parametrize("tile_px", [16, 32, 64, 128])
def test_packed_spectra_hold_the_band_and_the_correlation_of_numpys_rfft2(tile_px):
    """Tiles' spectra are kept in cv2.dft's packed layout: the band read from it is rfft2's band, and the
    whitened cross-correlation computed in it peaks where rfft2's does."""
    import scipy.fft
    rng = np.random.default_rng(tile_px)
    phase = PhaseTiles(tile_px)
    template, image = (rng.normal(size=(6, tile_px, tile_px)).astype(np.float32) for _ in range(2))
    expected = scipy.fft.rfft2(template)[:, phase.band]
    np.testing.assert_allclose(phase._band_of(phase_tiles._dft_each(template)), expected,
                               atol=1e-5 * np.abs(expected).max())
    image = np.roll(template, (3, -2), axis=(1, 2)) + 0.5 * image
    cross = phase_tiles._whitened_cross(phase_tiles._dft_each(template), phase_tiles._dft_each(image))
    correlation = phase_tiles._dft_each(cross, phase_tiles.cv2.DFT_INVERSE | phase_tiles.cv2.DFT_REAL_OUTPUT)
    a, b = scipy.fft.rfft2(template), scipy.fft.rfft2(image)
    product = a * np.conj(b)
    expected = scipy.fft.irfft2(product / (np.abs(product) + 1e-12), s=(tile_px, tile_px)) * tile_px ** 2
    np.testing.assert_allclose(correlation, expected, atol=1e-3)
    assert np.all(correlation.reshape(6, -1).argmax(axis=1) == (tile_px - 3) * tile_px + 2)
