"""Stacks whose slices move: each slice seen through a known similarity transform.

The specimen is rendered larger than the frame, moved, then cropped, so that new content
(not smeared borders) enters at the edges, as it does in a real camera.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulators.optics import CameraNoise, DefocusRenderer, Optics
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map


@dataclass
class MovingStack:
    slices: list[np.ndarray]
    z_um: list[float]
    truth: np.ndarray           # all-in-focus, in the first slice's frame
    height_um: np.ndarray
    transforms: list[np.ndarray]  # 3x3, reference (first slice) pixel coords -> slice pixel coords


def similarity(scale: float, shift_xy: tuple[float, float], rotation_deg: float, shape: tuple[int, int]) -> np.ndarray:
    """A 3x3 similarity about the frame's centre, then a shift."""
    height, width = shape
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    angle = np.radians(rotation_deg)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    offset = centre - linear @ centre + np.asarray(shift_xy, float)
    return np.vstack([np.hstack([linear, offset[:, None]]), [0, 0, 1]])


def render_moving_stack(big_specimen: VirtualSpecimen, shape: tuple[int, int], z_um, transforms: list[np.ndarray],
                        optics: Optics = Optics(), camera: CameraNoise = CameraNoise(), seed: int = 0) -> MovingStack:
    """Render the centre ``shape`` of ``big_specimen`` at each z, each slice moved by its transform."""
    rng = np.random.default_rng(seed)
    renderer = DefocusRenderer(big_specimen, optics)
    big_h, big_w = big_specimen.height_um.shape
    top, left = (big_h - shape[0]) // 2, (big_w - shape[1]) // 2
    to_big = np.array([[1, 0, left], [0, 1, top], [0, 0, 1]], float)
    slices = []
    for z, transform in zip(z_um, transforms):
        radiance = renderer.render(z)
        # slice pixel p shows reference point transform^-1 p, i.e. big-frame point to_big @ transform^-1 @ p
        sample = (to_big @ np.linalg.inv(transform))[:2]
        moved = cv2.warpAffine(radiance, sample, (shape[1], shape[0]), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        slices.append(camera.expose(moved, rng))
    crop = (slice(top, top + shape[0]), slice(left, left + shape[1]))
    return MovingStack(slices, [float(z) for z in z_um], camera.ideal(big_specimen.texture[crop]),
                       big_specimen.height_um[crop], transforms)


def moving_sweep(texture: str, surface: str, shape: tuple[int, int], n_slices: int, zoom: float,
                 max_shift_px: float, moving: bool = True, depth_um: float = 21.0, blur_px_per_um: float = 0.3,
                 seed: int = 1) -> MovingStack:
    """A focus sweep over a rendered specimen whose slices zoom steadily (``zoom`` over the sweep)
    and shift at random (up to ``max_shift_px``); ``moving=False``: the same sweep standing still."""
    big = (shape[0] + 160, shape[1] + 160)
    specimen = VirtualSpecimen(load_texture(texture, big), make_height_map(surface, big, depth_um))
    z_um = np.linspace(-3, depth_um + 1, n_slices)
    rng = np.random.default_rng(seed)
    transforms = [np.eye(3)] + [
        similarity(1 + zoom * k / (n_slices - 1), tuple(rng.uniform(-max_shift_px, max_shift_px, 2)), 0.0, shape)
        for k in range(1, n_slices)]
    return render_moving_stack(specimen, shape, z_um, transforms if moving else [np.eye(3)] * n_slices,
                               Optics(blur_px_per_um))
