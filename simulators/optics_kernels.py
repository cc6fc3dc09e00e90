"""Numba kernels that let the optics simulator render at camera speed.

Two per-pixel steps, each done row by row with the rows in parallel: picking a pixel's defocus
blur from the ladder of pre-blurred textures, and turning radiance into a noisy camera frame.
``render_exposed`` does both for a row while it is in the cache, without a radiance image in
between. Arrays are numpy order, (height, width, channels) seen as (height, width * channels);
mono images come as one channel. Compiled with numpy's error model: a division by zero gives inf
instead of a check per element that would stop the loops from vectorising.

The camera noise draws its own random numbers: SplitMix64 (a counter through a bit mixer) per
row, seeded from one number the caller draws from its ``numpy.random.Generator``, so a frame is
reproducible from the caller's seed whatever the number of threads. Normals come from inverting
the normal distribution function (a pass that vectorises, then the 5% in the tails); Poisson
counts by inversion for small means, by Hoermann's transformed rejection (PTRS, as numpy draws
them) from 10 up. A normal costs a few nanoseconds, where numpy's draws cost about sixty.

All in one module: numba's disk cache notices a change to a kernel's own file only, not to a
file whose functions it inlines.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# (importing fusion loads TBB where installed, before these kernels first run: fusion/numba_layer.py)
from fusion.parallel_kernels import one_at_a_time

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_OTHER_STREAM = np.uint64(0xD1B54A32D192ED03)  # a second, independent number from the same counter
_SHIFT_30, _SHIFT_27, _SHIFT_31, _SHIFT_11 = (np.uint64(n) for n in (30, 27, 31, 11))
_TWO_TO_MINUS_53 = 1.0 / 9007199254740992.0


@njit(inline="always")
def _mix64(z):
    """SplitMix64's output function: a bijection of uint64 that scrambles every bit."""
    z = (z ^ (z >> _SHIFT_30)) * _MIX_1
    z = (z ^ (z >> _SHIFT_27)) * _MIX_2
    return z ^ (z >> _SHIFT_31)


@njit(inline="always")
def _row_state(seed, row):
    """A row's starting point in the Weyl sequence: far from every other row's."""
    return _mix64(seed + _mix64(np.uint64(row) + _GAMMA))


# Acklam's rational approximation of the normal quantile function (relative error < 1.2e-9).
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
      -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
      -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
      4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
_C32, _D32 = (tuple(np.float32(v) for v in c) for c in (_C, _D))  # for the tails: float32 is exact enough there
_TAIL_P = 0.02425
_TWO_TO_53 = np.int64(2 ** 53)
_TAIL_K = np.int64(_TAIL_P * 2 ** 53)  # 53-bit integers below this are the lower tail


@njit(inline="always")
def _normal_tail(p):
    """The normal quantile of a small probability p (the lower tail), in float32."""
    q = np.float32(math.sqrt(np.float32(-2.0) * math.log(np.float32(p))))
    return ((((((_C32[0] * q + _C32[1]) * q + _C32[2]) * q + _C32[3]) * q + _C32[4]) * q + _C32[5])
            / ((((_D32[0] * q + _D32[1]) * q + _D32[2]) * q + _D32[3]) * q + np.float32(1.0)))


@njit(inline="always")
def _top_53_bits(bits):
    """The top 53 of 64 random bits as an int64 (converted to float in one instruction, unlike uint64)."""
    return np.int64(bits >> _SHIFT_11)


@njit(inline="always")
def _central_quantile(k):
    """The normal quantile of the probability (k + 0.5) / 2**53, exact where that is within
    [_TAIL_P, 1 - _TAIL_P]; no branch, so it vectorises. (float32 loses 4e-4 near the ends.)"""
    q = (float(k) + 0.5) * _TWO_TO_MINUS_53 - 0.5
    r = q * q
    return ((((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q
            / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0))


@njit(inline="always")
def _counter(state, i):
    """The counter of the i-th number (from 0) drawn after ``state``."""
    return state + _GAMMA * np.uint64(i + 1)


@njit(inline="always")
def _standard_normals(state, z, bits, tails):
    """Fills z with standard normals drawn from the stream after ``state``, by inverting the
    normal distribution function: one pass that vectorises and keeps each sample's 53 random bits,
    then the 5% in the tails mended in float64 from those bits. ``bits``, ``tails``: scratch
    space, as large as z."""
    n = z.size
    counter = state
    for i in range(n):
        counter += _GAMMA
        k = _top_53_bits(_mix64(counter))
        bits[i] = k
        z[i] = _central_quantile(k)
    # Where they are, without a branch (a branch to a logarithm would be vectorised into
    # computing it for every sample); then only those.
    n_tails = 0
    for i in range(n):
        k = bits[i]
        tails[n_tails] = i
        n_tails += (k < _TAIL_K) | (k >= _TWO_TO_53 - _TAIL_K)
    for j in range(n_tails):
        i = tails[j]
        k = bits[i]
        if k < _TAIL_K:
            z[i] = _normal_tail((float(k) + 0.5) * _TWO_TO_MINUS_53)
        else:
            z[i] = -_normal_tail((float(_TWO_TO_53 - k) - 0.5) * _TWO_TO_MINUS_53)  # 1 - p, exactly


# Poisson means below this are drawn by inversion (cost ~ mean), from it up by transformed rejection.
_INVERSION_BELOW = 10.0
_INVERSES = 1.0 / np.arange(1, 64, dtype=np.float64)  # 1 / k: a multiplication in the loop, not a division


@njit(inline="always")
def _poisson_by_inversion(bits, mean):
    """k ~ Poisson(mean) from 53 random bits, exactly; meant for small means (cost ~ mean)."""
    u = float(_top_53_bits(bits)) * _TWO_TO_MINUS_53
    term = math.exp(-mean)
    total = term
    k = 0
    while u > total and term > 0.0:
        k += 1
        term *= mean * (_INVERSES[k - 1] if k <= _INVERSES.size else 1.0 / k)
        total += term
    return k


@njit(inline="always")
def _uniform(state, j):
    """The j-th (from 0) uniform in [0, 1) of the SplitMix64 stream seeded by ``state``."""
    return float(_top_53_bits(_mix64(_counter(state, j)))) * _TWO_TO_MINUS_53


@njit(inline="always")
def _poisson_by_rejection(bits, mean):
    """k ~ Poisson(mean), exactly, for mean >= 10: Hoermann's transformed rejection (PTRS, as
    numpy draws it), a few uniforms whatever the mean; they come from the stream seeded by ``bits``."""
    root = math.sqrt(mean)
    b = 0.931 + 2.53 * root
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    j = 0
    while True:
        u = _uniform(bits, j) - 0.5
        v = _uniform(bits, j + 1)
        j += 2
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + mean + 0.43)
        if us >= 0.07 and v <= v_r:
            return k
        if k < 0.0 or (us < 0.013 and v > us):
            continue
        if math.log(v * inv_alpha / (a / (us * us) + b)) <= -mean + k * math.log(mean) - math.lgamma(k + 1.0):
            return k


@njit(inline="always")
def _poisson(bits, mean):
    """k ~ Poisson(mean) from 64 random bits (and, for larger means, the stream they seed)."""
    if mean <= 0.0:
        return 0.0
    if mean < _INVERSION_BELOW:
        return float(_poisson_by_inversion(bits, mean))
    return _poisson_by_rejection(bits, mean)


# Below this many expected electrons shot noise is drawn exactly from a Poisson distribution;
# above, from its Gaussian limit of equal mean and variance, whose skewness 1/sqrt(count) is
# below 0.1 there.
EXACT_POISSON_BELOW_E = 100.0
_BLOCK = 64  # pixels whose Gaussian shot noise is drawn before asking whether any of them is dark


@njit(inline="always")
def _interpolate_row(levels, sigmas_px, height_row, y, focus, per_um, out):
    """out (W * C) = row y blurred by sigma = min(per_um * |height - focus|, sigmas_px[-1]),
    blended linearly between the two ladder levels around sigma. levels: (L, H, W * C)."""
    n_levels = sigmas_px.size
    width = height_row.size
    channels = out.size // width
    top = sigmas_px[n_levels - 1]
    one = np.float32(1.0)
    sigma = np.empty(width, np.float32)
    for x in range(width):
        sigma[x] = min(abs(height_row[x] - focus) * per_um, top)
    lower = np.zeros(width, np.int64)  # the last level at or below sigma, at most L - 2
    for level in range(1, n_levels - 1):  # level by level: no branch, so it vectorises
        level_sigma = sigmas_px[level]
        for x in range(width):
            lower[x] += sigma[x] >= level_sigma
    for x in range(width):
        below = lower[x]
        t = (sigma[x] - sigmas_px[below]) / (sigmas_px[below + 1] - sigmas_px[below])
        t = min(max(t, np.float32(0.0)), one)
        for c in range(x * channels, (x + 1) * channels):
            out[c] = levels[below, y, c] * (one - t) + levels[below + 1, y, c] * t


@njit(inline="always")
def _gaussian_limit(signal, z, full_well_e, read_variance):
    """signal (radiance in [0, 1]) -> electrons with shot noise in its Gaussian limit plus read
    noise (z: standard normals), over full_well_e; returns how many pixels expected fewer than
    EXACT_POISSON_BELOW_E electrons (and want their Poisson distribution instead)."""
    n_few = 0
    for i in range(signal.size):
        mean_e = float(signal[i]) * full_well_e
        n_few += mean_e < EXACT_POISSON_BELOW_E
        signal[i] = np.float32((mean_e + math.sqrt(mean_e + read_variance) * z[i]) / full_well_e)
    return n_few


@njit(inline="always")
def _count_few_electrons(radiance, first, full_well_e, read_noise_e, exposure, state, z, signal):
    """signal[i] = (Poisson count + read noise) / full_well_e for the pixels i = first + j whose
    radiance[j] brings fewer than EXACT_POISSON_BELOW_E electrons in ``exposure`` (see _expose_row). A branch:
    such pixels come in dark patches, where it predicts well."""
    for j in range(radiance.size):
        mean_e = float(min(max(radiance[j], np.float32(0.0)), np.float32(1.0)) * exposure) * full_well_e
        if mean_e < EXACT_POISSON_BELOW_E:
            i = first + j
            count = _poisson(_mix64(_counter(state, i) ^ _OTHER_STREAM), mean_e)
            signal[i] = np.float32((count + read_noise_e * z[i]) / full_well_e)


@njit(inline="always")
def _expose_row(radiance, y, full_well_e, read_noise_e, max_value, quantise, seed, exposure, out):
    """out = camera row y of ``radiance`` (N float32 in [0, 1], clipped there): see expose_frame."""
    n = radiance.size
    signal = np.empty(n, np.float32)
    for i in range(n):
        signal[i] = min(max(radiance[i], np.float32(0.0)), np.float32(1.0)) * exposure
    if full_well_e > 0.0:
        z = np.empty(n, np.float32)
        state = _row_state(seed, y)
        _standard_normals(state, z, np.empty(n, np.int64), np.empty(n, np.int64))
        read_variance = read_noise_e * read_noise_e
        n_blocks = (n + _BLOCK - 1) // _BLOCK
        few = np.empty(n_blocks, np.bool_)  # per block: has it any pixel with few electrons?
        for b in range(n_blocks):
            lo = b * _BLOCK
            few[b] = _gaussian_limit(signal[lo:lo + _BLOCK], z[lo:lo + _BLOCK], full_well_e, read_variance) > 0
        for b in range(n_blocks):
            if few[b]:  # where few electrons arrive, their Poisson distribution itself
                lo = b * _BLOCK
                _count_few_electrons(radiance[lo:lo + _BLOCK], lo, full_well_e, read_noise_e, exposure, state, z,
                                     signal)
    _read_out(signal, max_value, quantise, exposure > 1.0, out)


@njit(inline="always")
def _read_out(signal, max_value, quantise, saturates, out):
    """out = ``signal`` (relative to a full well) as the camera gives it: quantised to max_value and clipped there,
    else as it is, clipped at 1.0 only where ``saturates`` (an exposure past full scale)."""
    top = np.float32(max_value)
    if quantise:
        for i in range(signal.size):
            out[i] = min(max(np.rint(signal[i] * top), np.float32(0.0)), top)
    elif saturates:  # more light than fills the well: the float camera saturates at 1.0 too
        for i in range(signal.size):
            out[i] = min(signal[i], top)
    else:  # (up to full scale unclipped, as before exposure was modelled: its noise stays unbiased at 1.0)
        for i in range(signal.size):
            out[i] = signal[i]


@one_at_a_time  # (fusion.parallel_kernels: one at a time where the threading layer needs it)
@njit(parallel=True, cache=True, error_model="numpy")
def interpolate_ladder(levels, sigmas_px, height_um, focus_um, blur_px_per_um, out):
    """out (H, W * C) = the texture blurred by sigma = min(blur_px_per_um * |height - focus|, sigmas_px[-1]).

    levels: (L, H, W * C) float32, the texture blurred at each of the ascending ``sigmas_px``
    (L >= 2), blended linearly between the two levels around sigma.
    """
    focus, per_um = np.float32(focus_um), np.float32(blur_px_per_um)
    for y in prange(out.shape[0]):
        _interpolate_row(levels, sigmas_px, height_um[y], y, focus, per_um, out[y])


@one_at_a_time
@njit(parallel=True, cache=True, error_model="numpy")
def expose_frame(radiance, full_well_e, read_noise_e, max_value, quantise, seed, exposure, out):
    """out = a camera frame of ``radiance`` (H, N) float32 in [0, 1] (clipped there).

    ``exposure``: the exposure time over the one at which a radiance of 1 fills the well (1: as long).
    With ``full_well_e`` > 0: electrons = shot noise of radiance * exposure * full_well_e (Poisson; its
    Gaussian limit above EXACT_POISSON_BELOW_E) plus Gaussian read noise; signal = electrons /
    full_well_e. With ``quantise``, ``out`` gets rint(signal * max_value) clipped to [0, max_value]
    (a pixel saturates), else the signal itself: clipped at 1.0 where ``exposure`` > 1 (the well fills), else
    unclipped.
    """
    for y in prange(out.shape[0]):
        _expose_row(radiance[y], y, full_well_e, read_noise_e, max_value, quantise, seed, exposure, out[y])


@one_at_a_time
@njit(parallel=True, cache=True, error_model="numpy")
def render_exposed(levels, sigmas_px, height_um, focus_um, blur_px_per_um,
                   full_well_e, read_noise_e, max_value, quantise, seed, exposure, out):
    """expose_frame(interpolate_ladder(...)), the same frame, a row at a time."""
    focus, per_um = np.float32(focus_um), np.float32(blur_px_per_um)
    for y in prange(out.shape[0]):
        radiance = np.empty(out.shape[1], np.float32)
        _interpolate_row(levels, sigmas_px, height_um[y], y, focus, per_um, radiance)
        _expose_row(radiance, y, full_well_e, read_noise_e, max_value, quantise, seed, exposure, out[y])
