"""Image quality numbers: against a ground truth (PSNR) and without one (SF, AG)."""
from __future__ import annotations

import numpy as np

from fusion.focus_measures import to_gray


def data_range(dtype) -> float:
    """Full scale of a pixel type: 255 for uint8, 65535 for uint16, 1.0 for float."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def psnr(image: np.ndarray, truth: np.ndarray, full_scale: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``full_scale`` defaults to the dtype's range (give the
    true range for 10/12-bit data in uint16)."""
    full_scale = data_range(truth.dtype) if full_scale is None else full_scale
    mse = np.mean((image.astype(np.float64) - truth.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(full_scale ** 2 / mse))


def spatial_frequency(image: np.ndarray) -> float:
    """sqrt(RF^2 + CF^2) of the luminance: the paper's no-reference sharpness (rewards noise too)."""
    gray = to_gray(image).astype(np.float64)
    row_freq = np.mean(np.diff(gray, axis=1) ** 2)
    col_freq = np.mean(np.diff(gray, axis=0) ** 2)
    return float(np.sqrt(row_freq + col_freq))


def average_gradient(image: np.ndarray) -> float:
    """Mean of sqrt((dx^2 + dy^2) / 2) of the luminance (rewards noise and halos too)."""
    gray = to_gray(image).astype(np.float64)
    dx = np.diff(gray, axis=1)[:-1, :]
    dy = np.diff(gray, axis=0)[:, :-1]
    return float(np.mean(np.sqrt((dx ** 2 + dy ** 2) / 2)))


def edge_band(truth: np.ndarray, full_scale: float | None = None, radius_px: int = 12) -> np.ndarray:
    """Pixels within ``radius_px`` of the truth's strong intensity edges (Sobel magnitude over half
    its 99.5th percentile): where halos and smeared depth edges show."""
    from scipy import ndimage  # a 0.4 s import that sessions, which only need psnr, skip

    full_scale = data_range(truth.dtype) if full_scale is None else full_scale
    gray = to_gray(truth).astype(np.float64) / full_scale
    magnitude = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
    strong = magnitude > 0.5 * np.percentile(magnitude, 99.5)
    return ndimage.binary_dilation(strong, iterations=radius_px)


def masked_psnr(image: np.ndarray, truth: np.ndarray, mask: np.ndarray, full_scale: float | None = None) -> float:
    """PSNR over the pixels where ``mask`` (H, W) is true (colour channels averaged)."""
    full_scale = data_range(truth.dtype) if full_scale is None else full_scale
    error = (image.astype(np.float64) - truth.astype(np.float64)) ** 2
    error = error.mean(axis=2) if error.ndim == 3 else error
    mse = float(error[mask].mean())
    return float("inf") if mse == 0 else float(10 * np.log10(full_scale ** 2 / mse))
