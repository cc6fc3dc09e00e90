"""Fusion quality against the ground truth that the optics simulator knows."""
import numpy as np
import pytest

from fusion import FusionSettings, StreamingFusion, kernels
from fusion.focus_measures import DEFAULT_WINDOW_PX, to_gray
from fusion.metrics import psnr
from tests.conftest import rendered

# (texture, surface, colour, bit depth): colour and mono cameras, 8-, 12-bit and float data.
CASES = {
    "rgb8-dome": ("astronaut", "dome", True, 8),
    "mono12-steps": ("gravel", "steps", False, 12),
    "rgb8-irregular": ("coffee", "irregular", True, 8),
    "mono-float-plane": ("brick", "plane", False, 0),
    "rgb12-steps": ("chelsea", "steps", True, 12),
}
NAIVE = {"per-pixel": 1, "windowed": DEFAULT_WINDOW_PX}  # the window of the naive argmax


def naive_argmax(stack, window_px):
    """Each pixel from the slice of most Laplacian energy (summed over ``window_px``), with no cleaning. (Once
    "pick" with mode_filter_px=0 was this; it now also weighs evidence over wider windows.)"""
    energy = np.stack([kernels.box_sum(kernels.laplacian_squared(to_gray(s)), window_px) for s in stack.slices])
    chosen = np.argmax(energy, axis=0)
    slices = np.stack(stack.slices)
    return np.take_along_axis(slices, chosen.reshape((1, *chosen.shape) + (1,) * (slices.ndim - 3)), axis=0)[0]


def fuse(stack, settings=None):
    engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, settings)
    for pixels, z_um in zip(stack.slices, stack.z_um):
        engine.push(pixels, z_um)
    return engine.finish()


def full_scale(bit_depth):
    return 1.0 if bit_depth == 0 else 2.0 ** bit_depth - 1


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    texture, surface, color, bit_depth = CASES[request.param]
    stack = rendered(texture, surface, color=color, bit_depth=bit_depth)
    return stack, bit_depth, fuse(stack)


@pytest.mark.slow
def test_fused_keeps_shape_and_dtype(case):
    stack, _, result = case
    assert result.fused.shape == stack.slices[0].shape
    assert result.fused.dtype == stack.slices[0].dtype
    assert result.depth.shape == stack.slices[0].shape[:2] and result.depth.dtype == np.float32


@pytest.mark.slow
def test_fused_is_closer_to_truth_than_every_slice(case):
    stack, bit_depth, result = case
    fused_db = psnr(result.fused, stack.truth, full_scale(bit_depth))
    best_slice_db = max(psnr(s, stack.truth, full_scale(bit_depth)) for s in stack.slices)
    assert fused_db > best_slice_db + 3.0, (fused_db, best_slice_db)


@pytest.mark.slow
@pytest.mark.parametrize("naive", list(NAIVE))
def test_fused_beats_naive_argmax_of_laplacian_energy(case, naive):
    stack, bit_depth, result = case
    fused_db = psnr(result.fused, stack.truth, full_scale(bit_depth))
    naive_db = psnr(naive_argmax(stack, NAIVE[naive]), stack.truth, full_scale(bit_depth))
    assert fused_db > naive_db, (fused_db, naive_db)


@pytest.mark.slow
def test_depth_is_within_one_slice_spacing_where_it_is_defined(case):
    stack, _, result = case
    spacing_um = stack.z_um[1] - stack.z_um[0]
    defined = np.isfinite(result.depth)
    within = np.abs(result.depth - stack.height_um)[defined] <= spacing_um
    assert result.depth_unit == "um"
    assert defined.mean() > 0.6, defined.mean()
    assert within.mean() > 0.9, within.mean()


def test_textureless_areas_have_no_depth():
    stack = rendered("astronaut", "dome", color=False)
    blank = np.zeros(stack.height_um.shape, bool)
    blank[:, :64] = True  # a band of the frame with nothing in it but noise
    flat = [s.copy() for s in stack.slices]
    rng = np.random.default_rng(1)
    for pixels in flat:
        pixels[blank] = np.clip(120 + rng.normal(0, 2, blank.sum()), 0, 255).astype(np.uint8)
    depth = fuse(type(stack)(flat, stack.z_um, stack.truth, stack.height_um)).depth
    assert np.isnan(depth[:, :48]).mean() > 0.95      # away from the texture's edge
    assert np.isfinite(depth[:, 96:]).mean() > 0.6


def test_focus_scores_peak_where_most_of_the_specimen_is_in_focus():
    stack = rendered("brick", "plane", color=False, depth_um=0.0)  # flat specimen at z = 0
    result = fuse(stack)
    assert stack.z_um[int(np.argmax(result.focus_scores))] == pytest.approx(0.0, abs=1e-6)
    assert result.focus_scores[0] < max(result.focus_scores) > result.focus_scores[-1]


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    FusionSettings(composition="pick"),
    FusionSettings(composition="pick", feather_px=3.0),
    FusionSettings(measure="laplacian"),
], ids=["pick", "pick-feathered", "blend-laplacian"])
def test_every_composition_beats_every_slice(rgb_stack, settings):
    fused_db = psnr(fuse(rgb_stack, settings).fused, rgb_stack.truth)
    assert fused_db > max(psnr(s, rgb_stack.truth) for s in rgb_stack.slices) + 3.0
