"""Arrays to PNGs a browser shows: downscaled, contrast-stretched, depth colour-mapped."""
from __future__ import annotations

import cv2
import numpy as np

from fusion.outputs import colour_by_shape

PREVIEW_WIDTH_PX = 960
NO_DEPTH_RGB = (64, 64, 64)  # depth-map pixels without texture, hence without a depth
# ImageJ's colours for the channels of a composite, in order (then again from the first): the page shows
# separate channels as Fiji shows the fused image's composite.
COMPOSITE_RGB = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0))


def _viridis_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


_LUT = None


def to_display(pixels: np.ndarray, colour: bool | None = None) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) for the screen; 16-bit and float data are stretched between
    their 0.5th and 99.5th percentiles (automatic contrast), 8-bit is shown as it is.

    ``colour``: whether the channels of (H, W, C) are one picture's colour samples (RGB, RGBA); None: by their
    count (``colour_by_shape``). Separate channels (fluorescence) become a false-colour composite (H, W, 3): each
    channel stretched to its own range, whatever its type, so that a dim one shows, in ImageJ's colour for it."""
    if pixels.ndim == 3 and not (colour_by_shape(pixels.shape) if colour is None else colour):
        return _composite(pixels)
    if pixels.dtype == np.uint8:
        return pixels
    return _stretched(pixels).astype(np.uint8)


def _stretched(pixels: np.ndarray) -> np.ndarray:
    """float32 in [0, 255]: ``pixels`` between their 0.5th and 99.5th percentiles."""
    sample = pixels[::4, ::4].astype(np.float32)
    low, high = np.percentile(sample, [0.5, 99.5])
    scale = 255.0 / max(float(high - low), 1e-12)
    return np.clip((pixels.astype(np.float32) - low) * scale, 0, 255)


def _composite(pixels: np.ndarray) -> np.ndarray:
    """Separate channels (H, W, C) as one RGB picture (H, W, 3) uint8: their colours added, as ImageJ does."""
    rgb = np.zeros(pixels.shape[:2] + (3,), np.float32)
    for channel in range(pixels.shape[2]):
        tint = np.array(COMPOSITE_RGB[channel % len(COMPOSITE_RGB)], np.float32) / 255
        rgb += _stretched(pixels[:, :, channel])[:, :, None] * tint
    return np.clip(rgb, 0, 255).astype(np.uint8)


def downscale(pixels: np.ndarray, max_width_px: int | None) -> np.ndarray:
    if max_width_px is None or pixels.shape[1] <= max_width_px:
        return pixels
    factor = max_width_px / pixels.shape[1]
    return cv2.resize(pixels, (max_width_px, max(1, round(pixels.shape[0] * factor))), interpolation=cv2.INTER_AREA)


def png_bytes(pixels: np.ndarray, max_width_px: int | None = PREVIEW_WIDTH_PX, colour: bool | None = None) -> bytes:
    """An image (any supported dtype, mono, colour or separate channels: ``to_display``) as PNG for the page."""
    image = downscale(to_display(pixels, colour), max_width_px)
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
