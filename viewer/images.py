"""Arrays to PNGs a browser shows: downscaled, contrast-stretched, depth colour-mapped."""
from __future__ import annotations

import cv2
import numpy as np

PREVIEW_WIDTH_PX = 960
NO_DEPTH_RGB = (64, 64, 64)  # depth-map pixels without texture, hence without a depth


def _viridis_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


_LUT = None


def to_display(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) for the screen; 16-bit and float data are stretched between
    their 0.5th and 99.5th percentiles (automatic contrast), 8-bit is shown as it is."""
    if pixels.dtype == np.uint8:
        return pixels
    sample = pixels[::4, ::4].astype(np.float32)
    low, high = np.percentile(sample, [0.5, 99.5])
    scale = 255.0 / max(float(high - low), 1e-12)
    return np.clip((pixels.astype(np.float32) - low) * scale, 0, 255).astype(np.uint8)


def downscale(pixels: np.ndarray, max_width_px: int | None) -> np.ndarray:
    if max_width_px is None or pixels.shape[1] <= max_width_px:
        return pixels
    factor = max_width_px / pixels.shape[1]
    return cv2.resize(pixels, (max_width_px, max(1, round(pixels.shape[0] * factor))), interpolation=cv2.INTER_AREA)


def png_bytes(pixels: np.ndarray, max_width_px: int | None = PREVIEW_WIDTH_PX) -> bytes:
    """An image (any supported dtype, mono or RGB) as PNG for the page."""
    image = downscale(to_display(pixels), max_width_px)
    if image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def depth_png_bytes(depth: np.ndarray, low: float, high: float, max_width_px: int | None = PREVIEW_WIDTH_PX) -> bytes:
    """A depth map coloured with viridis between ``low`` and ``high`` (the page draws the scale)."""
    global _LUT
    if _LUT is None:
        _LUT = _viridis_lut()
    span = max(high - low, 1e-12)
    depth = depth.astype(np.float32)
    unknown = ~np.isfinite(depth)
    index = np.clip((np.where(unknown, low, depth) - low) / span * 255, 0, 255).astype(np.uint8)
    coloured = _LUT[index]
    coloured[unknown] = NO_DEPTH_RGB  # textureless: no depth to show
    return png_bytes(coloured, max_width_px)
