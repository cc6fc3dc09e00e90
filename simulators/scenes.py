"""Specimens for the layered renderer: microscopy and macro scenes with a known truth.

Each maker returns a ``LayeredSpecimen``. Shapes are numpy order (H, W); heights in um;
``rng`` makes every random scene reproducible.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from simulators.layered import LayeredSpecimen

_OVERSAMPLE = 4  # thin structures are drawn this much finer, then averaged down (anti-aliasing)


def fractal_texture(shape: tuple[int, int], rng: np.random.Generator, beta: float = 1.8,
                    channels: int = 1) -> np.ndarray:
    """1/f^beta noise in [0, 1]: natural-looking texture at every scale."""
    height, width = shape
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(shape)) ** (beta / 2)
    planes = []
    for _ in range(channels):
        spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
        plane = np.fft.irfft2(spectrum, s=shape)
        plane = (plane - plane.min()) / (plane.max() - plane.min())
        planes.append(plane)
    out = np.stack(planes, axis=2) if channels > 1 else planes[0]
    return out.astype(np.float32)


def image_texture(path: Path, shape: tuple[int, int], colour: bool = True) -> np.ndarray:
    """A photograph as texture: centre-cropped to the aspect of ``shape``, resized, in [0, 1]."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    image = image[..., :3] if image.ndim == 3 else image
    image = image.astype(np.float32) / float(np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1.0)
    height, width = image.shape[:2]
    aspect = shape[1] / shape[0]
    if width / height > aspect:
        keep = int(round(height * aspect))
        image = image[:, (width - keep) // 2:(width - keep) // 2 + keep]
    else:
        keep = int(round(width / aspect))
        image = image[(height - keep) // 2:(height - keep) // 2 + keep]
    image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    if colour and image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if not colour and image.ndim == 3:
        image = image @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def cell_heights(shape: tuple[int, int], rng: np.random.Generator, n_cells: int, depth_um: float,
                 tilt: float = 0.0) -> np.ndarray:
    """Piecewise-flat heights (Voronoi cells at random heights): depth edges everywhere."""
    height, width = shape
    seeds = rng.uniform(0, 1, (n_cells, 2)) * (height, width)
    levels = rng.uniform(0, depth_um, n_cells)
    y, x = np.mgrid[0:height, 0:width]
    distance = (y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2
    surface = levels[np.argmin(distance, axis=0)]
    surface += tilt * depth_um * (x / max(width - 1, 1))
    surface -= surface.min()
    return (surface * depth_um / max(surface.max(), 1e-9)).astype(np.float32)


def _random_path(shape: tuple[int, int], rng: np.random.Generator, length_px: float,
                 curl: float) -> np.ndarray:
    """A smooth random curve as (N, 2) points (x, y), starting anywhere in the frame."""
    height, width = shape
    n = max(2, int(length_px / 4))
    start = rng.uniform(0, 1, 2) * (width, height)
    turns = ndimage.gaussian_filter1d(rng.normal(0, curl, n), 3)
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
    steps = np.stack([np.cos(angle), np.sin(angle)], axis=1) * (length_px / n)
    return start + np.concatenate([[[0, 0]], np.cumsum(steps, axis=0)])


def draw_paths(shape: tuple[int, int], paths: list[np.ndarray], widths_px: list[float],
               heights_um: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise curves: (coverage in [0, 1], height um where covered). Later paths lie on top.

    Each path's height runs linearly from its first to its second value along its length.
    """
    big = (shape[0] * _OVERSAMPLE, shape[1] * _OVERSAMPLE)
    coverage = np.zeros(big, np.float32)
    height = np.full(big, np.nan, np.float32)
    for points, width_px, (h0, h1) in zip(paths, widths_px, heights_um):
        scaled = points * _OVERSAMPLE
        thickness = max(1, int(round(width_px * _OVERSAMPLE)))
        for k in range(len(scaled) - 1):
            h = h0 + (h1 - h0) * (k + 0.5) / (len(scaled) - 1)
            mask = np.zeros(big, np.uint8)
            cv2.line(mask, tuple(int(v) for v in scaled[k]), tuple(int(v) for v in scaled[k + 1]), 1, thickness)
            hit = mask.astype(bool)
            coverage[hit] = 1.0
            height[hit] = h
    small_coverage = coverage.reshape(shape[0], _OVERSAMPLE, shape[1], _OVERSAMPLE).mean(axis=(1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: nothing drawn there
        small_height = np.nanmax(height.reshape(shape[0], _OVERSAMPLE, shape[1], _OVERSAMPLE), axis=(1, 3))
    return small_coverage.astype(np.float32), small_height.astype(np.float32)


def opaque_surface(texture: np.ndarray, height_um: np.ndarray) -> LayeredSpecimen:
    """A textured surface seen in reflected light (macro photography, stereo microscopes)."""
    return LayeredSpecimen("opaque", texture, height_um)


def fibres_over_surface(texture: np.ndarray, rng: np.random.Generator, depth_um: float, n_fibres: int = 25,
                        background_um: float = 0.0) -> LayeredSpecimen:
    """Hairs and fibres (1-5 px wide) at several heights above a textured surface lying at
    ``background_um``: thin structures with depth edges on both sides."""
    shape = texture.shape[:2]
    paths = [_random_path(shape, rng, rng.uniform(0.3, 1.2) * max(shape), 0.15) for _ in range(n_fibres)]
    widths = list(rng.uniform(1.0, 5.0, n_fibres))
    heights = [tuple(rng.uniform(0.3 * depth_um, depth_um, 2)) for _ in range(n_fibres)]
    coverage, fibre_height = draw_paths(shape, paths, widths, heights)
    colours = rng.uniform(0.05, 0.95, (n_fibres, 3)) if texture.ndim == 3 else rng.uniform(0.05, 0.95, (n_fibres, 1))
    tone = np.mean(colours, axis=0)  # fibres share one tone with a fine fibrous texture along them
    fibre_texture = fractal_texture(shape, rng, beta=1.2)
    fibre = (tone[None, None, :] * (0.6 + 0.8 * fibre_texture[:, :, None]))
    fibre = fibre if texture.ndim == 3 else fibre[:, :, 0]
    hard = coverage >= 0.5
    content = np.where(hard[:, :, None] if texture.ndim == 3 else hard, np.clip(fibre, 0, 1), texture)
    height = np.where(hard, np.nan_to_num(fibre_height, nan=background_um), background_um).astype(np.float32)
    return LayeredSpecimen("opaque", content.astype(np.float32), height)


def illumination_glow(shape: tuple[int, int], rng: np.random.Generator, colour: bool,
                      tint: tuple[float, float, float] = (1.0, 0.95, 0.65)) -> np.ndarray:
    """A bright-field illumination field: a broad off-centre glow, tinted, never in focus."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.4, 0.9) * width
    radius = 0.9 * max(shape)
    glow = 0.55 + 0.4 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (radius / 2.5) ** 2))
    if not colour:
        return glow.astype(np.float32)
    white = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (radius / 5) ** 2))[:, :, None]
    tinted = glow[:, :, None] * (np.asarray(tint, np.float32) * (1 - 0.5 * white) + 0.5 * white)
    return np.clip(tinted, 0, 1).astype(np.float32)


def bright_field_animal(shape: tuple[int, int], rng: np.random.Generator, depth_um: float,
                        colour: bool = True) -> LayeredSpecimen:
    """A dark, absorbing arthropod (body, thin legs, hairs) over a bright glow: the halo case.

    The body is a dome near the top of the range, legs slope down from it, hairs stick out
    of the legs; the illumination field is out of focus at every slice.
    """
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.4, 0.6), width * rng.uniform(0.3, 0.45)
    ry, rx = height * 0.18, width * 0.25
    r2 = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    body = (r2 <= 1).astype(np.float32)
    body = cv2.resize(cv2.resize(body, (width * 2, height * 2)), (width, height), interpolation=cv2.INTER_AREA)
    segments = 0.5 + 0.5 * np.cos(2 * np.pi * (x - cx) / (rx / 3))  # segmented abdomen
    fine = fractal_texture(shape, rng, beta=1.4)
    body_absorbance = body * np.clip(0.80 + 0.12 * segments * fine + 0.08 * fine, 0, 0.98)
    body_height = np.clip(1 - r2, 0, 1) * 0.25 * depth_um + 0.7 * depth_um
    paths, widths, heights = [], [], []
    for side in (-1, 1):
        for k in range(4):
            angle = side * (np.pi / 2) + (k - 1.5) * 0.35 + rng.normal(0, 0.08)
            start = np.array([cx + (k - 1.5) * rx * 0.4, cy + side * ry * 0.8])
            length = rng.uniform(0.35, 0.55) * min(shape) * 1.3
            bend = rng.normal(0, 0.4)
            t = np.linspace(0, 1, 40)[:, None]
            direction = np.array([np.cos(angle), np.sin(angle)])
            normal = np.array([-direction[1], direction[0]])
            path = start + t * length * direction + np.sin(np.pi * t) * bend * 0.2 * length * normal
            paths.append(path)
            widths.append(rng.uniform(4.0, 9.0))
            heights.append((0.7 * depth_um, rng.uniform(0.0, 0.4) * depth_um))
            for _ in range(6):  # hairs along the leg
                at = path[rng.integers(5, 38)]
                hair_angle = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.3)
                hair_len = rng.uniform(6, 18)
                direction = np.array([np.cos(hair_angle), np.sin(hair_angle)])
                hair = at + np.linspace(0, 1, 5)[:, None] * hair_len * direction
                paths.append(hair)
                widths.append(1.0)
                h = 0.7 * depth_um + (heights[-1][1] - 0.7 * depth_um) * rng.uniform(0, 1)
                heights.append((h, h))
    leg_coverage, leg_height = draw_paths(shape, paths, widths, heights)
    leg_absorbance = leg_coverage * np.clip(0.70 + 0.2 * fine, 0, 0.95)
    legs_only = (leg_coverage > 0) & (body < 0.5)
    absorbance = np.where(legs_only, leg_absorbance, body_absorbance)
    height_um = np.where(legs_only, np.nan_to_num(leg_height, nan=0.0), body_height).astype(np.float32)
    height_um = np.where(absorbance > 0, height_um, np.float32(0.5 * depth_um))
    if colour:  # brownish chitin: absorbs blue most
        absorbance = np.clip(absorbance[:, :, None] * np.array([0.92, 0.97, 1.0], np.float32), 0, 1)
    glow = illumination_glow(shape, rng, colour)
    return LayeredSpecimen("absorbing", absorbance.astype(np.float32), height_um, glow)


def bright_field_cells(shape: tuple[int, int], rng: np.random.Generator, depth_um: float, n_cells: int = 40,
                       colour: bool = False) -> LayeredSpecimen:
    """Stained cells (semi-transparent, textured) on a tilted, wavy slide, in transmitted light."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    absorbance = np.zeros(shape, np.float32)
    fine = fractal_texture(shape, rng, beta=1.6)
    for _ in range(n_cells):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.03, 0.08) * min(shape), rng.uniform(0.03, 0.08) * min(shape)
        angle = rng.uniform(0, np.pi)
        dy, dx = y - cy, x - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        r2 = u ** 2 + v ** 2
        cell = np.clip(1.5 * (1 - r2), 0, 1) ** 0.3 * rng.uniform(0.15, 0.45)
        nucleus = (r2 < 0.12).astype(np.float32) * rng.uniform(0.2, 0.4)
        absorbance = np.maximum(absorbance, (cell + nucleus) * (0.7 + 0.6 * fine))
    wave = (np.sin(2 * np.pi * x / width * rng.uniform(0.5, 1.5))
            * np.cos(2 * np.pi * y / height * rng.uniform(0.5, 1.5)))
    height_um = (0.6 * (x / width + y / height) / 2 + 0.4 * (wave + 1) / 2) * depth_um
    absorbance = np.clip(absorbance, 0, 0.95)
    if colour:  # a purple stain: absorbs green most
        absorbance = absorbance[:, :, None] * np.array([0.6, 1.0, 0.45], np.float32)
    glow = illumination_glow(shape, rng, colour, tint=(0.95, 0.95, 0.9))
    return LayeredSpecimen("absorbing", absorbance.astype(np.float32), height_um.astype(np.float32), glow)


def fluorescent_filaments_and_beads(shape: tuple[int, int], rng: np.random.Generator, depth_um: float,
                                    n_filaments: int = 14, n_beads: int = 60, glow: float = 0.01) -> LayeredSpecimen:
    """Fluorescence: thin bright filaments through the volume and point-like beads, on black."""
    paths = [_random_path(shape, rng, rng.uniform(0.3, 1.0) * max(shape), 0.2) for _ in range(n_filaments)]
    widths = list(rng.uniform(1.0, 2.5, n_filaments))
    heights = [tuple(rng.uniform(0, depth_um, 2)) for _ in range(n_filaments)]
    coverage, filament_height = draw_paths(shape, paths, widths, heights)
    brightness = 0.25 + 0.5 * fractal_texture(shape, rng, beta=2.0)
    emission = coverage * brightness
    height_um = np.nan_to_num(filament_height, nan=0.0)
    spots = np.zeros(shape, np.float32)
    spot_height = np.zeros(shape, np.float32)
    for _ in range(n_beads):
        cy, cx = rng.uniform(4, shape[0] - 4), rng.uniform(4, shape[1] - 4)
        sigma = rng.uniform(0.8, 2.0)
        y0, y1 = int(max(0, cy - 4 * sigma)), int(min(shape[0], cy + 4 * sigma + 1))
        x0, x1 = int(max(0, cx - 4 * sigma)), int(min(shape[1], cx + 4 * sigma + 1))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        spot = rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
        region = (slice(y0, y1), slice(x0, x1))
        newer = spot > spots[region]
        spots[region] = np.maximum(spots[region], spot)
        spot_height[region] = np.where(newer, rng.uniform(0, depth_um), spot_height[region])
    on_spot = spots > emission
    emission = np.maximum(emission, spots)
    height_um = np.where(on_spot, spot_height, height_um).astype(np.float32)
    return LayeredSpecimen("emitting", np.clip(emission, 0, 1).astype(np.float32), height_um, glow)
