"""Separate channels (fluorescence) steer the focus evenly; colour keeps its luminance.

A stack's reader tells whether its channels are one picture's colour samples or separate images
(``SavedStack.channels_are_colour``). Colour's grey is its luminance, where the third channel counts 11%
(and a fourth or fifth none at all); separate channels are each scaled by their own light, so that a dim
channel, or one whose detail lies at a depth of its own, steers the focus as much as a bright one.
Scored against the truth as the optics show it at best focus, channel by channel.
"""
from __future__ import annotations

import contextlib
import warnings

import cv2
import numpy as np
import pytest
import tifffile

from fusion import StreamingFusion
from fusion.focus_measures import MAX_CHANNEL_GAIN, even_channel_weights, to_gray
from fusion.metrics import psnr
from fusion.refuse import refuse_stack
from fusion.readers.tiff import read_image_tiff
from simulators.layered import LayeredSpecimen, render_layered_stack
from simulators.optics import CameraNoise
from simulators.psf import DefocusPSF
from simulators.scenes import fluorescent_filaments_and_beads
from tests.conftest import rendered

SHAPE = (128, 160)
Z_UM = np.arange(0.0, 24.1, 2.0)
PSF = DefocusPSF(0.35, 0.6, 0.8, 0.3)
CAMERA = CameraNoise(30000, 2.0, 16)  # a 16-bit fluorescence camera


def channels_at_their_own_depths(brightness: tuple[float, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y, X, C) uint16 and the best-focus truth (Y, X, C): channel c holds filaments and beads of its own,
    ``brightness[c]`` as bright, within an 8 µm band of depth that rises channel by channel."""
    band_step_um = 16.0 / max(len(brightness) - 1, 1)
    at_focus = PSF.kernel(0.0).astype(np.float32)
    slices, truths = [], []
    for channel, bright in enumerate(brightness):
        rng = np.random.default_rng(seed * 10 + channel)
        scene = fluorescent_filaments_and_beads(SHAPE, rng, 8.0, n_filaments=10, n_beads=40)
        specimen = LayeredSpecimen("emitting", scene.content * bright, scene.height_um + band_step_um * channel,
                                   scene.background * bright)
        stack = render_layered_stack(specimen, Z_UM, PSF, CAMERA, seed=seed * 10 + channel)
        slices.append(np.stack(stack.slices))
        truths.append(cv2.filter2D(stack.truth.astype(np.float32), -1, at_focus, borderType=cv2.BORDER_REFLECT))
    return np.stack(slices, axis=-1), np.stack(truths, axis=-1)


def fused_as_colour(stack: np.ndarray) -> np.ndarray:
    """What the engine made of these channels before it was told they are separate: the luminance's focus."""
    engine = StreamingFusion(stack[0].shape, stack.dtype, name="as colour")
    for pixels, z in zip(stack, Z_UM):
        engine.push(pixels, z)
    return engine.finish().fused


def psnr_per_channel(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([psnr(image[..., c], truth[..., c], float(truth[..., c].max())) for c in range(truth.shape[-1])])


def write_hyperstack(path, stack: np.ndarray) -> None:
    """As Fiji saves a z-stack of channels (ZCYX): its channels are separate images."""
    tifffile.imwrite(path, np.moveaxis(stack, -1, 1), imagej=True,
                     metadata={"axes": "ZCYX", "mode": "composite", "spacing": 2.0, "unit": "um"})


def test_a_dim_blue_channel_steers_the_focus_of_three_fluorescence_channels(tmp_path):
    stack, truth = channels_at_their_own_depths((1.0, 0.4, 0.1))  # blue: a tenth as bright, 11% of luminance
    write_hyperstack(tmp_path / "cells.tif", stack)
    report = refuse_stack(tmp_path / "cells.tif", tmp_path / "out", progress=False)
    before = psnr_per_channel(fused_as_colour(stack), truth)
    after = psnr_per_channel(read_image_tiff(report.outputs["fused"]), truth)
    gain_db = after - before
    # Measured (seeds 0-2): blue +4.8, +3.7, +3.6 dB; red -0.4, -0.8, -1.2; green -0.1..+0.1; the channels'
    # mean +0.8..+1.4. One grey serves all channels: evening it out gives the brightest channel's share of the
    # decision to the others, so a channel that luminance favoured may lose a little where channels overlap.
    assert gain_db[2] > 2.0, (before, after)
    assert gain_db.min() > -1.0, (before, after)
    assert gain_db.mean() > 0.5, (before, after)
    assert report.channel_weights is not None and len(report.channel_weights) == 3
    assert report.channel_weights[2] > 5 * report.channel_weights[0]  # a tenth of the light: about 10x the weight


def test_the_fourth_and_fifth_of_five_channels_count(tmp_path):
    """Luminance reads three channels; the focus of channels 4 and 5 was left to chance."""
    stack, truth = channels_at_their_own_depths((1.0, 1.0, 1.0, 1.0, 1.0), seed=1)
    write_hyperstack(tmp_path / "five.tif", stack)
    report = refuse_stack(tmp_path / "five.tif", tmp_path / "out", progress=False)
    gain_db = psnr_per_channel(read_image_tiff(report.outputs["fused"]), truth) - psnr_per_channel(
        fused_as_colour(stack), truth)
    assert gain_db[3:].min() > 1.0 and gain_db.mean() > 0.5, gain_db


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_colour_is_fused_bit_for_bit_as_before(tmp_path, dtype):
    sweep = rendered(color=True, bit_depth=8 * np.dtype(dtype).itemsize, shape=(64, 80))
    tifffile.imwrite(tmp_path / "photo.tif", np.stack(sweep.slices), photometric="rgb", metadata={"axes": "ZYXS"})
    report = refuse_stack(tmp_path / "photo.tif", tmp_path / "out", progress=False)
    engine = StreamingFusion(sweep.slices[0].shape, sweep.slices[0].dtype)
    for pixels, z in zip(sweep.slices, sweep.z_um):
        engine.push(pixels, z)
    assert np.array_equal(read_image_tiff(report.outputs["fused"]), engine.finish().fused)
    assert report.channel_weights is None


def test_even_channel_weights_follow_each_channels_light_and_stay_bounded():
    rng = np.random.default_rng(0)
    detail = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    pixels = np.stack([1000 * detail, 100 * detail, 10 * detail], axis=-1)
    weights = even_channel_weights(pixels)
    assert weights.sum() == pytest.approx(1.0) and weights == pytest.approx([0.009, 0.09, 0.9], rel=0.02)
    assert np.allclose(to_gray(pixels, weights), 3 * weights[0] * 1000 * detail, rtol=1e-4)  # each channel alike
    empty = np.stack([1000 * detail, np.zeros_like(detail)], axis=-1)  # a channel with no light is not lifted
    assert even_channel_weights(empty)[1] / even_channel_weights(empty)[0] == pytest.approx(MAX_CHANNEL_GAIN)
    assert even_channel_weights(np.zeros((8, 8, 2), np.uint16)) == pytest.approx([0.5, 0.5])  # blank: even


def test_dark_frames_before_the_light_do_not_set_the_channels_weights():
    """A camera started before the light gives frames of noise only first: the channel weights were taken from the
    first, noise's even weights, and the dim channel lost its say (measured: -6.7 dB on it with two such frames, seed
    0). They now come from the first slice with more than noise: the fused image is the one without the dark frames,
    which have no say in it."""
    stack, truth = channels_at_their_own_depths((1.0, 0.4, 0.1))
    rng = np.random.default_rng(5)
    offset = float(np.percentile(stack, 1))  # the camera's black level, and its read noise around it
    dark = [np.clip(rng.normal(offset, 3.0, stack[0].shape), 0, 65535).astype(np.uint16) for _ in range(2)]

    def fused(slices, z_um):
        engine = StreamingFusion(stack[0].shape, stack.dtype, channels_are_colour=False, name="cells")
        for pixels, z in zip(slices, z_um):
            engine.push(pixels, z)
        with pytest.warns(UserWarning, match="show nothing of the specimen") if len(slices) > len(stack) else \
                contextlib.nullcontext():
            return engine.finish()

    without_dark = fused(list(stack), Z_UM)
    with_dark = fused(dark + list(stack), [Z_UM[0] - 4, Z_UM[0] - 2, *Z_UM])
    assert with_dark.channel_weights == pytest.approx(without_dark.channel_weights)
    assert with_dark.channel_weights[2] > 5 * with_dark.channel_weights[0]
    dim_channel_db = psnr_per_channel(with_dark.fused, truth)[2]
    assert dim_channel_db > psnr_per_channel(without_dark.fused, truth)[2] - 0.5, dim_channel_db


def test_dark_frames_before_a_bright_and_a_dim_channel_are_told_by_their_light_not_by_the_focus_weights():
    """Two dark frames (a camera's offset, 100, and its read noise) before a bright sparse channel (1000 + spots) and
    a dim textured one (120 + 20): judged on the focus grey, which weighs the dim channel up (9:1), they read as lit
    beside the slices with detail, were fused in, and took the bright channel from 90 to 45 dB of the stack without
    them, without a word (a regression round). Their light is judged on the pixels: they are left out and named."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    size = 128
    spots = ndimage.gaussian_filter((rng.random((size, size)) > 0.97).astype(np.float32), 1.5)
    spots /= spots.max()
    texture = ndimage.gaussian_filter(rng.random((size, size)).astype(np.float32), 2)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    noise = np.random.default_rng(1)
    lit = []
    for k in range(7):
        blur = abs(k - 3) * 1.5
        bright = ndimage.gaussian_filter(spots, blur) if blur else spots
        dim = ndimage.gaussian_filter(texture, blur) if blur else texture
        lit.append(np.stack([1000 + 800 * bright, 120 + 20 * dim], -1) + noise.normal(0, 3, (size, size, 2)))
    dark = [noise.normal(100, 3, (size, size, 2)) for _ in range(2)]

    def fused(frames):
        engine = StreamingFusion((size, size, 2), np.uint16, channels_are_colour=False, channels_last=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k, frame in enumerate(frames):
                engine.push(np.clip(frame, 0, 65535).astype(np.uint16), float(k))
            result = engine.finish()
        return result.fused, [str(w.message) for w in caught if "nothing of the specimen" in str(w.message)]

    without_dark, _ = fused(lit)
    with_dark, said = fused(dark + lit)
    assert said and "slices 0, 1 (counting from 0) show nothing of the specimen" in said[0]
    np.testing.assert_array_equal(with_dark, without_dark)
