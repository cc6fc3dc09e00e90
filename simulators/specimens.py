"""Virtual specimens: a sharp texture over a height map, the ground truth a session scores against.

Heights are micrometres; arrays are numpy order (height, width[, channels]).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Textures that scikit-image ships inside its wheel (no download at run time).
TEXTURES = ("astronaut", "coffee", "chelsea", "gravel", "brick", "grass", "camera", "moon", "text",
            "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "coins")
HEIGHT_MAPS = ("plane", "dome", "steps", "irregular")


@dataclass
class VirtualSpecimen:
    """The sharp image (float32 in [0, 1]) and its surface height in micrometres."""

    texture: np.ndarray
    height_um: np.ndarray

    def __post_init__(self):
        if self.texture.shape[:2] != self.height_um.shape:
            raise ValueError(f"texture {self.texture.shape[:2]} and height map {self.height_um.shape} differ")


def load_texture(name: str, shape: tuple[int, int], color: bool = True) -> np.ndarray:
    """A scikit-image sample image as float32 in [0, 1], resized to shape (H, W)."""
    import skimage.data
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize

    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose one of {TEXTURES}")
    image = getattr(skimage.data, name)()
    image = image[..., :3] if image.ndim == 3 else image
    image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else float(image.max()))
    if color and image.ndim == 2:
        image = gray2rgb(image)
    if not color and image.ndim == 3:
        image = rgb2gray(image)
    out_shape = tuple(shape) + image.shape[2:]
    return np.clip(resize(image, out_shape, order=1, anti_aliasing=True), 0, 1).astype(np.float32)


def make_height_map(kind: str, shape: tuple[int, int], depth_um: float,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """A surface spanning 0..depth_um: a tilted plane, a dome, steps or irregular hills."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    if kind == "plane":
        surface = 0.6 * x + 0.4 * y
    elif kind == "dome":
        surface = np.clip(1.0 - ((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.25, 0, None)
    elif kind == "steps":
        # Four steps; x = 1 (the last column) stays on the fourth rather than starting a fifth.
        surface = np.minimum(np.floor(x * 4), 3) / 3 * 0.7 + (y > 0.5) * 0.3
    elif kind == "irregular":
        rng = rng or np.random.default_rng(0)
        noise = rng.standard_normal((height, width)).astype(np.float32)
        from scipy import ndimage  # a 0.4 s import that only this surface needs

        surface = ndimage.gaussian_filter(noise, min(shape) / 10)
    else:
        raise ValueError(f"unknown height map {kind!r}; choose one of {HEIGHT_MAPS}")
    surface = surface - surface.min()
    return (surface / max(float(surface.max()), 1e-12) * depth_um).astype(np.float32)
