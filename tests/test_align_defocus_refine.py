"""The defocus refinement's per-tile Gram matrices (fusion/align/defocus_refine.py)."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.align.defocus_refine import MODEL_PARAMETERS, N_NUISANCE, _tile_grams


def _columns(template, image, middle, gx, gy, laplacian, ty, tx, tile_px, model, centre_x, centre_y):
    """One tile's columns, one row per pixel in row-major order, computed as the kernel's docstring says."""
    v, u = np.divmod(np.arange(tile_px * tile_px), tile_px)
    yy, xx = ty * tile_px + v, tx * tile_px + u
    x, y = xx - centre_x, yy - centre_y
    lap = laplacian[yy, xx].astype(np.float64)
    ddx, ddy = gx[yy, xx].astype(np.float64), gy[yy, xx].astype(np.float64)
    nuisance = [np.ones(len(v)), middle[yy, xx].astype(np.float64), lap, (u / tile_px - 0.5) * lap,
                (v / tile_px - 0.5) * lap]
    motion = {"scale_shift": [ddx * x + ddy * y, ddx, ddy],
              "similarity": [ddx * x + ddy * y, ddy * x - ddx * y, ddx, ddy],
              "affine": [ddx * x, ddx * y, ddy * x, ddy * y, ddx, ddy]}[model]
    residual = (template[yy, xx] - image[yy, xx]).astype(np.float64)
    return np.stack([*nuisance, *motion, residual], axis=1)


@pytest.mark.parametrize("model", sorted(MODEL_PARAMETERS))
def test_tile_grams_are_the_pixel_by_pixel_sums_to_the_bit(model):
    """The kernel sums each entry over the tile's pixels in row-major order: the same additions in
    the same order as adding one pixel's outer product at a time, so its results are bit for bit those."""
    rng = np.random.default_rng(3)
    tile_px, rows, cols = 8, 2, 3
    template, image, middle, gx, gy, laplacian = (rng.normal(100, 30, (rows * tile_px + 3, cols * tile_px + 5))
                                                  .astype(np.float32) for _ in range(6))
    tile_ok = np.array([[True, False, True], [True, True, True]])
    centre_x, centre_y = (template.shape[1] - 1) / 2, (template.shape[0] - 1) / 2
    grams = _tile_grams(template, image, middle, gx, gy, laplacian, tile_ok, tile_px, MODEL_PARAMETERS[model],
                        centre_x, centre_y)
    size = N_NUISANCE + MODEL_PARAMETERS[model] + 1
    for tile in range(rows * cols):
        ty, tx = divmod(tile, cols)
        expected = np.zeros((size, size))
        if tile_ok[ty, tx]:
            for column in _columns(template, image, middle, gx, gy, laplacian, ty, tx, tile_px, model, centre_x,
                                   centre_y):
                expected += np.outer(column, column)
        np.testing.assert_array_equal(grams[tile], expected)
