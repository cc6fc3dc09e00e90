"""Numba kernels for the per-pixel work on full-resolution frames.

Arrays are numpy order everywhere: (height, width[, channels]).
Each kernel runs rows (or column bands) in parallel over the machine's cores.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from fusion.parallel_kernels import one_at_a_time


@one_at_a_time  # (fusion.parallel_kernels: one at a time where the threading layer needs it)
@njit(parallel=True, cache=True, nogil=True)
def luminance_f32(rgb):
    """(H, W, C) C-contiguous -> (H, W) float32 Rec. 601 luma; C >= 3 uses the first three channels as RGB."""
    height, width, channels = rgb.shape
    out = np.empty((height, width), np.float32)
    rows = rgb.reshape(height, width * channels)
    for y in prange(height):
        row, luma = rows[y], out[y]
        if channels == 3:  # a constant stride: the loop vectorises (5 MP 8-bit RGB: 4 ms a core against 12)
            for x in range(width):
                luma[x] = (np.float32(0.299) * np.float32(row[3 * x]) + np.float32(0.587) * np.float32(row[3 * x + 1])
                           + np.float32(0.114) * np.float32(row[3 * x + 2]))
        else:
            for x in range(width):
                pixel = channels * x
                luma[x] = (np.float32(0.299) * np.float32(row[pixel]) + np.float32(0.587) * np.float32(row[pixel + 1])
                           + np.float32(0.114) * np.float32(row[pixel + 2]))
    return out


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def weighted_channel_sum_f32(pixels, weights):
    """(H, W, C) and C float32 weights -> (H, W) float32 sum of the channels, each times its weight."""
    height, width, channels = pixels.shape
    out = np.empty((height, width), np.float32)
    for y in prange(height):
        for x in range(width):
            total = np.float32(0.0)
            for c in range(channels):
                total += weights[c] * np.float32(pixels[y, x, c])
            out[y, x] = total
    return out


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def gradient_magnitude(gray):
    """sqrt((f(y,x-1)-f)^2 + (f(y-1,x)-f)^2): the paper's spatial-frequency term per pixel.

    The first row and column lack a neighbour; their missing difference counts as zero. (They are
    done apart from the rest, so that its loop has no branch and vectorises.)
    """
    height, width = gray.shape
    out = np.empty((height, width), np.float32)
    for y in prange(height):
        row, magnitude = gray[y], out[y]
        if y == 0:
            magnitude[0] = np.float32(0.0)
            for x in range(1, width):
                dx = row[x - 1] - row[x]
                magnitude[x] = np.sqrt(dx * dx)
            continue
        above = gray[y - 1]
        dy = above[0] - row[0]
        magnitude[0] = np.sqrt(dy * dy)
        for x in range(1, width):
            dx = row[x - 1] - row[x]
            dy = above[x] - row[x]
            magnitude[x] = np.sqrt(dx * dx + dy * dy)
    return out


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def laplacian_squared(gray):
    """Squared 4-neighbour Laplacian; borders replicate the edge pixel."""
    height, width = gray.shape
    out = np.empty((height, width), np.float32)
    for y in prange(height):
        up = y - 1 if y > 0 else 0
        down = y + 1 if y < height - 1 else height - 1
        for x in range(width):
            left = x - 1 if x > 0 else 0
            right = x + 1 if x < width - 1 else width - 1
            lap = (gray[up, x] + gray[down, x] + gray[y, left] + gray[y, right]
                   - np.float32(4.0) * gray[y, x])
            out[y, x] = lap * lap
    return out


def box_sum(values, window_px):
    """Sum over a window_px x window_px square centred on each pixel, clipped at the borders."""
    return _box_sum(values, window_px, 4 * numba.get_num_threads())


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def _box_sum(values, window_px, n_bands):  # noqa: C901 -- a numba kernel: one pass over the pixels, kept whole so numba compiles one loop nest
    height, width = values.shape
    radius = window_px // 2
    rows = np.empty((height, width), np.float32)
    # Horizontal running sums, one row per task; accumulate in float64 to avoid drift.
    for y in prange(height):
        acc = 0.0
        for x in range(min(radius, width)):
            acc += values[y, x]
        for x in range(width):
            add = x + radius
            if add < width:
                acc += values[y, add]
            drop = x - radius - 1
            if drop >= 0:
                acc -= values[y, drop]
            rows[y, x] = acc
    # Vertical running sums over bands of columns, so each task streams whole rows.
    out = np.empty((height, width), np.float32)
    n_bands = max(1, min(width, n_bands))
    band_width = (width + n_bands - 1) // n_bands
    for band in prange(n_bands):
        x0 = band * band_width
        x1 = min(width, x0 + band_width)
        if x0 >= x1:
            continue
        acc = np.zeros(x1 - x0, np.float64)
        for y in range(min(radius, height)):
            for x in range(x0, x1):
                acc[x - x0] += rows[y, x]
        for y in range(height):
            add = y + radius
            drop = y - radius - 1
            for x in range(x0, x1):
                if add < height:
                    acc[x - x0] += rows[add, x]
                if drop >= 0:
                    acc[x - x0] -= rows[drop, x]
                out[y, x] = acc[x - x0]
    return out


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def update_running_maps(pixels, measure, slice_index, sharpness, blend,  # noqa: C901 -- a numba kernel, kept whole
                        best_measure, best_index, picked, weighted_sum, weight_sum):
    """Fold one slice into the running maps; nothing of the slice is kept afterwards.

    pixels and picked are (H, W, C); the other maps are (H, W). best_index starts at -1.
    A negative measure marks a pixel the slice does not cover (after alignment): it is skipped.
    - pick: where this slice's measure beats the best so far, it becomes the chosen slice
      and its pixels are copied into ``picked``.
    - blend (when ``blend``): a focus-weighted average with weight (m / m_best)^sharpness. Only
      running sums are kept, rescaled whenever a new best arrives, as in an online softmax over
      sharpness * log(m). Where several slices are about equally sharp their noise averages out.
    """
    height, width, channels = pixels.shape
    for y in prange(height):
        for x in range(width):
            m = measure[y, x]
            if m < 0.0:
                continue  # an aligned slice that does not cover this pixel: others fill it
            best = best_measure[y, x]
            if m > best or best_index[y, x] < 0:
                if blend:
                    # Earlier weights were relative to a smaller best: scale them down.
                    rescale = (best / m) ** sharpness if m > 0.0 and best > 0.0 else np.float32(0.0)
                    weight_sum[y, x] *= rescale
                    for c in range(channels):
                        weighted_sum[y, x, c] *= rescale
                best_measure[y, x] = m
                best_index[y, x] = slice_index
                for c in range(channels):
                    picked[y, x, c] = pixels[y, x, c]
                weight = np.float32(1.0)
            elif best > 0.0:
                weight = (m / best) ** sharpness
            else:
                weight = np.float32(1.0)  # flat everywhere so far: every slice is as good
            if blend:
                weight_sum[y, x] += weight
                for c in range(channels):
                    weighted_sum[y, x, c] += weight * np.float32(pixels[y, x, c])


def mode_filter(labels, n_labels, window_px):
    """Majority filter: each pixel takes the most frequent label in its window_px square.

    A sliding histogram (one histogram per column, updated as the window moves down, summed
    as it moves right) costs O(n_labels) per pixel whatever the window, so a 120-pixel window
    on a 5 MP map takes about a second. Ties keep the pixel's own label; the window is
    clipped at the borders.
    """
    return _mode_filter(labels, n_labels, window_px, 2 * numba.get_num_threads())


@one_at_a_time
@njit(parallel=True, cache=True, nogil=True)
def _mode_filter(labels, n_labels, window_px, n_bands):  # noqa: C901 -- a numba kernel: one pass over the pixels, kept whole so numba compiles one loop nest
    height, width = labels.shape
    radius = window_px // 2
    out = np.empty((height, width), labels.dtype)
    n_bands = max(1, min(height, n_bands))
    band_height = (height + n_bands - 1) // n_bands
    for band in prange(n_bands):
        y0 = band * band_height
        y1 = min(height, y0 + band_height)
        if y0 >= y1:
            continue
        column_hist = np.zeros((width, n_labels), np.int32)
        for y in range(max(0, y0 - radius), min(height, y0 + radius + 1)):
            for x in range(width):
                column_hist[x, labels[y, x]] += 1
        hist = np.zeros(n_labels, np.int32)
        for y in range(y0, y1):
            if y > y0:
                add = y + radius
                drop = y - radius - 1
                for x in range(width):
                    if add < height:
                        column_hist[x, labels[add, x]] += 1
                    if drop >= 0:
                        column_hist[x, labels[drop, x]] -= 1
            hist[:] = 0
            for x in range(min(radius, width)):
                for k in range(n_labels):
                    hist[k] += column_hist[x, k]
            for x in range(width):
                add = x + radius
                drop = x - radius - 1
                own = labels[y, x]
                if add < width and drop >= 0:
                    for k in range(n_labels):
                        hist[k] += column_hist[add, k] - column_hist[drop, k]
                elif add < width:
                    for k in range(n_labels):
                        hist[k] += column_hist[add, k]
                elif drop >= 0:
                    for k in range(n_labels):
                        hist[k] -= column_hist[drop, k]
                best_label = own
                best_count = hist[own]
                for k in range(n_labels):
                    if hist[k] > best_count:
                        best_count = hist[k]
                        best_label = k
                out[y, x] = best_label
    return out
