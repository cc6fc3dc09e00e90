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


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint16, 3), (np.float32, 3), (np.uint8, 4),
                                             (np.uint16, 4)])
def test_luminance_is_rec601_of_the_first_three_channels(dtype, channels):
    rng = np.random.default_rng(3)
    rgb = (rng.random((17, 23, channels)) * (255 if dtype == np.uint8 else 4095)).astype(dtype)
    f = rgb.astype(np.float32)
    expected = np.float32(0.299) * f[:, :, 0] + np.float32(0.587) * f[:, :, 1] + np.float32(0.114) * f[:, :, 2]
    np.testing.assert_array_equal(kernels.luminance_f32(rgb), expected)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (1, 1), (2, 2)])
def test_gradient_magnitude_of_one_row_or_column_frames(shape):
    gray = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) ** 2
    dx = np.zeros_like(gray)
    dy = np.zeros_like(gray)
    dx[:, 1:] = gray[:, :-1] - gray[:, 1:]
    dy[1:, :] = gray[:-1, :] - gray[1:, :]
    np.testing.assert_array_equal(kernels.gradient_magnitude(gray), np.sqrt(dx * dx + dy * dy))
