"""The numba kernels against plain numpy/scipy references."""
import numpy as np
import pytest
from scipy import ndimage

from fusion import kernels
from fusion.decision import clean_decision, default_mode_filter_px


def brute_mode_filter(labels, window_px):
    radius = window_px // 2
    out = np.empty_like(labels)
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            window = labels[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
            counts = np.bincount(window.ravel())
            own = labels[y, x]
            out[y, x] = own if counts[own] == counts.max() else np.argmax(counts)
    return out


@pytest.mark.parametrize("shape,window_px", [((40, 53), 7), ((31, 20), 15), ((9, 60), 31), ((50, 50), 1)])
def test_box_sum_matches_a_clipped_window_sum(shape, window_px):
    values = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = ndimage.uniform_filter(values.astype(np.float64), window_px, mode="constant") * window_px ** 2
    np.testing.assert_allclose(kernels.box_sum(values, window_px), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape,n_labels,window_px", [((37, 45), 4, 9), ((60, 23), 7, 21), ((16, 16), 3, 41)])
def test_mode_filter_matches_brute_force(shape, n_labels, window_px):
    labels = np.random.default_rng(2).integers(0, n_labels, shape).astype(np.int16)
    np.testing.assert_array_equal(kernels.mode_filter(labels, n_labels, window_px),
                                  brute_mode_filter(labels, window_px))


def test_mode_filter_removes_speckle_but_keeps_large_regions():
    labels = np.zeros((120, 160), np.int16)
    labels[:, 80:] = 2
    speckled = labels.copy()
    rng = np.random.default_rng(3)
    ys, xs = rng.integers(0, 120, 300), rng.integers(0, 160, 300)
    speckled[ys, xs] = 1
    cleaned = clean_decision(speckled, 3, default_mode_filter_px(labels.shape))
    np.testing.assert_array_equal(cleaned, labels)


def test_gradient_magnitude_is_the_papers_backward_difference():
    gray = np.random.default_rng(4).random((20, 30)).astype(np.float32)
    dx = np.zeros_like(gray)
    dy = np.zeros_like(gray)
    dx[:, 1:] = gray[:, :-1] - gray[:, 1:]
    dy[1:, :] = gray[:-1, :] - gray[1:, :]
    np.testing.assert_allclose(kernels.gradient_magnitude(gray), np.sqrt(dx ** 2 + dy ** 2), rtol=1e-6)


def test_laplacian_squared_matches_scipy():
    gray = np.random.default_rng(5).random((25, 33)).astype(np.float32)
    expected = ndimage.laplace(gray.astype(np.float64), mode="nearest") ** 2
    np.testing.assert_allclose(kernels.laplacian_squared(gray), expected, rtol=1e-4, atol=1e-6)
