"""Refine a motion estimate between two slices so that their difference in focus is not read as motion.

Why: when focus moves, the blur of every region changes, and where the blur change varies
across the frame (any surface that is not flat and level) the image seems to move by an
amount proportional to that variation. Registered slice to slice, this apparent motion adds
up along the stack: on a rendered dome, 0.5% of false zoom over 17 slices of a still lens sweep.

How: Lucas-Kanade least squares for the motion model, with nuisance terms for each small tile
that absorb what defocus does there: brightness offset and gain, a change in blur
(the Laplacian) and a blur change that varies linearly across the tile (x and y times the
Laplacian). The motion is what the nuisance terms cannot explain. Measured on rendered
stacks: false motion at the corners 0.3-0.5 px -> about 0.1 px.
"""
from __future__ import annotations

import cv2
import numpy as np
from numba import njit, prange

from fusion.align.geometry import max_displacement_px
from fusion.parallel_kernels import one_at_a_time

TILE_PX = 32                # nuisance terms are fitted per tile of this size
PRE_BLUR_PX = 3.0           # both images are smoothed first: less noise, and the linear blur model holds
#                             further (measured: 2 px leaves 0.42 px of false motion on a lens sweep, 3 px 0.2)
ITERATIONS = 3               # at most: a step that moves no pixel by more than CONVERGED_PX ends it
CONVERGED_PX = 0.01
MIN_TILES = 12              # fewer tiles fully inside both images: no refinement
RIDGE = 1e-6
BLUR_REWEIGHT_PASSES = 1
BLUR_CHANGE_SCALE = 0.5     # px^2: tiles whose blur changes by more than this count for less (lens sweeps:
#                             mean false motion 0.41 -> 0.28 px; 0.25 and 1.0 measured the same)


MODEL_PARAMETERS = {"scale_shift": 3, "similarity": 4, "affine": 6}
N_NUISANCE = 5  # offset, gain, blur change, blur change varying along x, along y


@one_at_a_time  # (fusion.parallel_kernels: one at a time where the threading layer needs it)
@njit(parallel=True, cache=True, nogil=True)
def _tile_grams(template, image, middle, gx, gy, laplacian, tile_ok, tile_px, n_motion, centre_x,  # noqa: C901
                centre_y):  # a numba kernel: one pass per tile, kept whole so numba compiles one loop nest
    """Per tile, the Gram matrix of [nuisance columns, motion columns, residual] over its pixels.

    Each entry is summed pixel by pixel in row-major order. A tile row's columns are built first,
    then four entries at a time are summed along the row in registers: about twice as fast as
    adding each pixel's products into the matrix in memory, and the same sums to the bit (the same
    additions in the same order; without fastmath, numba fuses no multiply-add).
    """
    rows, cols = tile_ok.shape
    size = N_NUISANCE + n_motion + 1
    grams = np.zeros((rows * cols, size, size))
    for tile in prange(rows * cols):
        ty, tx = tile // cols, tile % cols
        if not tile_ok[ty, tx]:
            continue
        column = np.empty((size, tile_px))  # column[i, u]: column i at pixel u of the tile row
        gram = grams[tile]
        for v in range(tile_px):
            yy = ty * tile_px + v
            y = yy - centre_y
            local_y = v / tile_px - 0.5
            for u in range(tile_px):
                xx = tx * tile_px + u
                x = xx - centre_x
                lap = laplacian[yy, xx]
                ddx, ddy = gx[yy, xx], gy[yy, xx]
                column[0, u] = 1.0
                column[1, u] = middle[yy, xx]
                column[2, u] = lap
                column[3, u] = (u / tile_px - 0.5) * lap
                column[4, u] = local_y * lap
                if n_motion == 3:      # scale_shift
                    column[5, u] = ddx * x + ddy * y
                    column[6, u] = ddx
                    column[7, u] = ddy
                elif n_motion == 4:    # similarity
                    column[5, u] = ddx * x + ddy * y
                    column[6, u] = ddy * x - ddx * y
                    column[7, u] = ddx
                    column[8, u] = ddy
                else:                  # affine
                    column[5, u] = ddx * x
                    column[6, u] = ddx * y
                    column[7, u] = ddy * x
                    column[8, u] = ddy * y
                    column[9, u] = ddx
                    column[10, u] = ddy
                column[size - 1, u] = template[yy, xx] - image[yy, xx]
            for i in range(size):
                j = i
                while j + 3 < size:  # four independent sums keep the adder busy
                    s0, s1, s2, s3 = gram[i, j], gram[i, j + 1], gram[i, j + 2], gram[i, j + 3]
                    for u in range(tile_px):
                        ci = column[i, u]
                        s0 += ci * column[j, u]
                        s1 += ci * column[j + 1, u]
                        s2 += ci * column[j + 2, u]
                        s3 += ci * column[j + 3, u]
                    gram[i, j], gram[i, j + 1], gram[i, j + 2], gram[i, j + 3] = s0, s1, s2, s3
                    j += 4
                for jj in range(j, size):
                    s = gram[i, jj]
                    for u in range(tile_px):
                        s += column[i, u] * column[jj, u]
                    gram[i, jj] = s
        for i in range(size):
            for j in range(i):
                gram[i, j] = gram[j, i]
    return grams


def _displacement_matrix(parameters: np.ndarray, model: str, centre: np.ndarray) -> np.ndarray:
    """3x3 for x -> x + D (x - centre) + t."""
    if model == "scale_shift":
        linear, shift = np.array([[parameters[0], 0.0], [0.0, parameters[0]]]), parameters[1:3]
    elif model == "affine":
        linear, shift = parameters[:4].reshape(2, 2), parameters[4:6]
    else:
        linear, shift = np.array([[parameters[0], -parameters[1]], [parameters[1], parameters[0]]]), parameters[2:4]
    matrix = np.eye(3)
    matrix[:2, :2] += linear
    matrix[:2, 2] = shift - linear @ centre
    return matrix


def refine(template: np.ndarray, image: np.ndarray, estimate: np.ndarray, model: str,
           max_step_px: float = np.inf) -> np.ndarray | None:
    """``estimate`` (3x3, template pixel coords -> image pixel coords) refined; None if too little overlap
    or if one step moves a pixel by more than ``max_step_px``: where defocus breaks the model
    (bright-field glows), the steps stay large and are not worth their time."""
    height, width = template.shape
    rows, cols = height // TILE_PX, width // TILE_PX
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    margin = 4 + int(3 * PRE_BLUR_PX)
    inside = np.zeros((height, width), np.uint8)
    inside[margin:height - margin, margin:width - margin] = 1
    n_motion = MODEL_PARAMETERS[model]
    smooth_template = cv2.GaussianBlur(template, (0, 0), PRE_BLUR_PX)
    for _ in range(ITERATIONS):
        # (Resampling both images halfway to a middle frame, so that both carry the same
        # interpolation blur, was measured worse: 0.10-0.16 px against 0.03-0.12 px.)
        warped = cv2.warpAffine(image, estimate[:2], (width, height), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
        valid = cv2.warpAffine(inside, estimate[:2], (width, height), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                               borderValue=0).astype(bool) & inside
        # A tile is used only where the warped image has real pixels in all of it.
        tile_ok = valid[:rows * TILE_PX, :cols * TILE_PX].reshape(rows, TILE_PX, cols, TILE_PX).all(axis=(1, 3))
        if tile_ok.sum() < MIN_TILES:
            return None
        smooth_image = cv2.GaussianBlur(warped, (0, 0), PRE_BLUR_PX)
        middle = 0.5 * (smooth_template + smooth_image)  # symmetric gradients: no bias towards either image
        gx = cv2.Sobel(middle, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(middle, cv2.CV_32F, 0, 1, ksize=3) / 8
        laplacian = cv2.Laplacian(middle, cv2.CV_32F, ksize=1)
        gram = _tile_grams(smooth_template, smooth_image, middle, gx, gy, laplacian, tile_ok, TILE_PX, n_motion,
                           centre[0], centre[1])[tile_ok.ravel()]
        k = N_NUISANCE
        nn = gram[:, :k, :k] + RIDGE * np.eye(k)
        nj, nr = gram[:, :k, k:-1], gram[:, :k, -1]
        # Per tile, eliminate the nuisance terms (Schur complement), then sum the normal equations.
        solved_j = np.linalg.solve(nn, nj)
        solved_r = np.linalg.solve(nn, nr[..., None])[..., 0]
        tile_normal = gram[:, k:-1, k:-1] - np.einsum("tki,tkj->tij", nj, solved_j)
        tile_right = gram[:, k:-1, -1] - np.einsum("tki,tk->ti", nj, solved_r)
        weight = np.ones(len(gram))
        for _ in range(1 + BLUR_REWEIGHT_PASSES):
            normal = np.einsum("t,tij->ij", weight, tile_normal)
            right = np.einsum("t,ti->i", weight, tile_right)
            parameters = np.linalg.solve(normal + RIDGE * np.eye(len(right)), right)
            # Each tile's own change of blur (px^2, the Laplacian's coefficient): where it is
            # large the linear blur model fails, so such tiles count for less.
            blur_change = (solved_r - solved_j @ parameters)[:, 2]
            weight = 1 / (1 + (blur_change / BLUR_CHANGE_SCALE) ** 2)
        step = _displacement_matrix(parameters, model, centre)
        estimate = estimate @ step
        step_px = max_displacement_px(step, (height, width))
        if step_px > max_step_px:
            return None
        if step_px < CONVERGED_PX:
            break
    return estimate
