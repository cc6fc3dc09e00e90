"""The engine's contract: push/result/finish, O(H*W) memory, read-back only where needed."""
import tracemalloc

import numpy as np
import pytest

from fusion import FusionSettings, StreamingFusion
from fusion.engine import FOCUS_POSITION_LIMIT
from fusion.errors import EmptyStackError, InvalidPixelsError, SliceMismatchError
from fusion.slice_store import SliceSource


class CountingListSource:
    """Test double for a saved stack: slices from a list, counting every read-back."""

    def __init__(self, slices):
        self.slices = slices
        self.reads: list[int] = []

    def read_slice(self, index):
        self.reads.append(index)
        return self.slices[index]


def push_all(engine, stack):
    for pixels, z_um in zip(stack.slices, stack.z_um):
        engine.push(pixels, z_um)


def test_result_is_available_after_every_slice(rgb_stack):
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8)
    engine.push(rgb_stack.slices[0], rgb_stack.z_um[0])
    np.testing.assert_array_equal(engine.result(), rgb_stack.slices[0])
    for pixels, z_um in zip(rgb_stack.slices[1:], rgb_stack.z_um[1:]):
        engine.push(pixels, z_um)
        assert engine.result().shape == pixels.shape and engine.result().dtype == np.uint8
    assert engine.finish().fused.shape == rgb_stack.slices[0].shape


def test_pick_reads_back_only_slices_that_cleaning_brought_in_each_once(rgb_stack):
    source = CountingListSource(rgb_stack.slices)
    settings = FusionSettings(composition="pick", mode_filter_px=41)
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8, settings, source=source)
    push_all(engine, rgb_stack)
    result = engine.finish()
    assert source.reads, "a 41-pixel mode filter on this stack changes some pixels"
    assert len(source.reads) == len(set(source.reads)) < len(rgb_stack.slices)
    # Every pixel is a copy of its chosen slice, exactly.
    stack = np.stack(rgb_stack.slices)
    rows, cols = np.indices(result.decision.shape)
    np.testing.assert_array_equal(result.fused, stack[result.decision, rows, cols])


def test_blend_never_reads_slices_back(rgb_stack):
    source = CountingListSource(rgb_stack.slices)
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8, FusionSettings(), source=source)
    push_all(engine, rgb_stack)
    engine.finish()
    assert source.reads == []


def test_pushed_slices_spill_to_a_temporary_tiff_that_is_removed(rgb_stack):
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8, FusionSettings(composition="pick"))
    store_path = engine._own_store.path
    push_all(engine, rgb_stack)
    assert store_path.stat().st_size > sum(s.nbytes for s in rgb_stack.slices)
    engine.finish()
    assert not store_path.exists()


def test_blend_keeps_no_copy_of_the_slices(rgb_stack):
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8, FusionSettings(composition="blend"))
    assert engine._own_store is None


def test_the_depth_map_is_in_the_unit_of_the_z_pushed(rgb_stack):
    # A tunable lens's stack, pushed at its focal powers: the result said "um" (the session's files were labelled
    # right by the writers; a program of one's own read µm).
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8, z_unit="dpt")
    for index, pixels in enumerate(rgb_stack.slices):
        engine.push(pixels, -2.0 + 0.5 * index)
    assert engine.finish().depth_unit == "dpt"
    assert StreamingFusion(rgb_stack.slices[0].shape, np.uint8).z_unit == "um"  # a stage's, unless said


def test_depth_is_slice_index_when_z_is_unknown(rgb_stack):
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8)
    for pixels in rgb_stack.slices:
        engine.push(pixels)
    result = engine.finish()
    assert result.depth_unit == "slice index"
    defined = np.isfinite(result.depth)
    assert defined.mean() > 0.5
    depth = result.depth[defined]
    assert depth.min() >= 0 and depth.max() <= len(rgb_stack.slices) - 1
    # Where the specimen's surface is, counted in slices, within one slice wherever there is texture.
    true_index = np.interp(rgb_stack.height_um, rgb_stack.z_um, np.arange(len(rgb_stack.z_um)))
    assert np.mean(np.abs(depth - true_index[defined]) <= 1.0) > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("composition", ["pyramid", "pick"])
def test_memory_does_not_grow_with_the_number_of_slices(rgb_stack, composition):
    def peak_bytes(n_slices):
        tracemalloc.start()
        engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8, FusionSettings(composition=composition))
        for index in range(n_slices):
            engine.push(rgb_stack.slices[index % len(rgb_stack.slices)], float(index))
        engine.finish()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    few, many = peak_bytes(4), peak_bytes(48)
    assert many < 1.3 * few, (few, many)


def test_a_single_slice_is_returned_as_it_is_with_a_warning(rgb_stack):
    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8)
    engine.push(rgb_stack.slices[3], 1.5)
    with pytest.warns(UserWarning, match="only one slice"):
        result = engine.finish()
    np.testing.assert_array_equal(result.fused, rgb_stack.slices[3])
    assert np.all(result.depth == 1.5)


def test_finish_without_slices_is_a_clear_error():
    with pytest.raises(EmptyStackError, match="no slices"):
        StreamingFusion((8, 8), np.uint8).finish()


def test_result_before_any_slice_names_the_stack_as_every_engine_error_does():
    with pytest.raises(EmptyStackError, match="^coffee: no slices pushed yet$"):
        StreamingFusion((8, 8), np.uint8, name="coffee").result()


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((10, 12), np.uint8), SliceMismatchError,
     r"slice 1 \(counting from 0\) is \(10, 12\) uint8, but the stack is \(10, 11\) uint8"),
    (np.zeros((10, 11), np.uint16), SliceMismatchError, "uint16"),
])
def test_mismatched_slices_are_rejected_naming_the_slice(bad, error, match):
    engine = StreamingFusion((10, 11), np.uint8)
    engine.push(np.zeros((10, 11), np.uint8))
    with pytest.raises(error, match=match):
        engine.push(bad)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_is_rejected_saying_what_to_do(value):
    """(NaN is no data: tests/test_no_data.py.)"""
    engine = StreamingFusion((6, 7), np.float32)
    pixels = np.zeros((6, 7), np.float32)
    pixels[2, 3] = value
    with pytest.raises(InvalidPixelsError, match=r"slice 0 \(counting from 0\) holds infinity, which no focus measure "
                                                 r"can rank: clip it .* or mark no data with NaN"):
        engine.push(pixels)


@pytest.mark.parametrize("z,error,match", [(float("nan"), ValueError, "the z of slice 1 .* is nan"),
                                            (float("inf"), ValueError, "is inf; give a finite number"),
                                            ("1", TypeError, "must be a number or None, got str '1'"),
                                            (True, TypeError, "got bool True"),
                                            (1e300, ValueError, r"the z of slice 1 \(counting from 0\) is 1e\+300 um, "
                                                                r"beyond any focus drive's travel \(±1e\+06\)"),
                                            (-2e6, ValueError, r"is -2e\+06 um, beyond any focus drive's travel"),
                                            # (just past the limit: said in the digits that show it, not as 1e+06)
                                            (1000001.0, ValueError, r"is 1000001 um, beyond any focus drive's travel"),
                                            pytest.param(10 ** 400, ValueError, r"the z of slice 1 \(counting from "
                                                         r"0\) is 1.00e\+400 um, beyond any focus drive's travel",
                                                         id="int-10**400")])
def test_a_z_that_is_no_finite_number_is_rejected_naming_the_slice(z, error, match):
    """(NaN, infinity or a finite 1e300 made the whole depth map NaN without a word; 1e30 made nonsense of it; a
    Python int too large for a float was a bare OverflowError.)"""
    engine = StreamingFusion((16, 16), np.uint8)
    engine.push(np.zeros((16, 16), np.uint8), np.float32(0.0))
    with pytest.raises(error, match=match):
        engine.push(np.zeros((16, 16), np.uint8), z)


def test_the_focus_position_limit_is_one_for_pushed_and_saved_stacks():
    from fusion.readers import base

    assert base.FOCUS_POSITION_LIMIT is FOCUS_POSITION_LIMIT
    engine = StreamingFusion((16, 16), np.uint8, z_unit="dpt")
    engine.push(np.zeros((16, 16), np.uint8), -FOCUS_POSITION_LIMIT)  # (the limit itself is a position)
    with pytest.raises(ValueError, match=r"is 1e\+30 dpt, beyond"):
        engine.push(np.zeros((16, 16), np.uint8), 1e30)


@pytest.mark.parametrize("first_um,step_um,said", [
    (0.0, 1e-300, r"their z \(0, 1e-300 µm: a step of 1e-300 µm\)"),
    (1e4, 1e-4, r"their z \(10000, 10000.0001 µm: a step of 0.0001 µm\)"),
])
def test_a_z_the_depth_map_cannot_tell_from_an_earlier_one_is_refused_naming_both(first_um, step_um, said):
    """Steps of 1e-300 gave a depth map of 0 everywhere, steps of 1e-4 µm at 1e4 µm one of 10000 everywhere: float32
    rounds them to one z. The slice is refused, naming its z, the earlier slice's and the step."""
    engine = StreamingFusion((16, 16), np.uint8, name="fine")
    engine.push(np.zeros((16, 16), np.uint8), first_um)
    with pytest.raises(ValueError, match=r"^fine: slice 1 \(counting from 0\) and slice 0: " + said + " cannot be told "
                       r"apart in the depth map, which holds z as float32 \(about 7 significant digits\); push z "
                       r"nearer 0"):
        engine.push(np.zeros((16, 16), np.uint8), first_um + step_um)
    engine.push(np.zeros((16, 16), np.uint8), first_um)  # (one z again: a stack may repeat one)
    engine.push(np.zeros((16, 16), np.uint8), first_um + 1e-3)  # (float32 tells 10000.001 from 10000)
    assert engine.finish().z_positions == [first_um, first_um, first_um + 1e-3]


def test_unsupported_settings_and_formats_are_clear_errors():
    with pytest.raises(ValueError, match="unknown focus measure 'sharp'"):
        FusionSettings(measure="sharp")
    with pytest.raises(ValueError, match="unknown composition"):
        FusionSettings(composition="average")
    with pytest.raises(ValueError, match="unsupported pixel type int64"):
        StreamingFusion((4, 4), np.int64)


def test_list_source_fits_the_protocol():
    assert isinstance(CountingListSource([]), SliceSource)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_float_stacks_fuse_the_same_at_any_magnitude(scale):
    from tests.conftest import rendered

    stack = rendered("brick", "plane", color=False, bit_depth=0, shape=(96, 128))
    fused = {}
    for factor in (1.0, scale):
        engine = StreamingFusion(stack.slices[0].shape, np.float32)
        for pixels, z in zip(stack.slices, stack.z_um):
            engine.push((pixels * np.float32(factor)).astype(np.float32), z)
        fused[factor] = engine.finish().fused / np.float32(factor)
    np.testing.assert_allclose(fused[scale], fused[1.0], rtol=1e-4, atol=1e-6)


def test_chosen_fraction_counts_only_where_the_depth_is_defined():
    from fusion.engine import FusionResult

    decision = np.array([[0, 0, 1, 2]], np.int16)
    depth = np.array([[0.0, 0.0, 1.0, np.nan]], np.float32)  # the last pixel is textureless
    result = FusionResult(fused=np.zeros((1, 4), np.uint8), depth=depth, depth_unit="slice index",
                          decision=decision, focus_scores=[1.0, 2.0, 3.0], z_positions=[None, None, None])
    assert result.chosen_fraction() == pytest.approx([2 / 3, 1 / 3, 0.0], abs=1e-5)
    textureless = FusionResult(fused=np.zeros((1, 4), np.uint8), depth=np.full((1, 4), np.nan, np.float32),
                               depth_unit="slice index", decision=decision, focus_scores=[1.0, 2.0, 3.0],
                               z_positions=[None, None, None])
    assert textureless.chosen_fraction() == pytest.approx([0.5, 0.25, 0.25], abs=1e-5)  # nothing defined: all


def test_the_images_after_finish_are_fresh_arrays(rgb_stack):
    # The final image is made in the engine's running sums; what it hands out must still be the
    # caller's own, as before: editing the result of finish() changes no later result().
    engine = StreamingFusion(rgb_stack.slices[0].shape, rgb_stack.slices[0].dtype)
    push_all(engine, rgb_stack)
    finished = engine.finish()
    kept = finished.fused.copy()
    later = engine.result()
    assert not np.shares_memory(later, finished.fused)
    finished.fused[:] = 0
    assert np.array_equal(engine.result(), kept) and np.array_equal(later, kept)


@pytest.mark.parametrize("dtype,full_scale", [(np.uint16, 4095.0), (np.float32, 1.0)])
def test_the_fused_image_holds_no_value_that_no_slice_holds(dtype, full_scale):
    """A 12-bit camera in uint16 (or float data in 0..1) at hard full-scale edges: the pyramid's sums
    overshoot there (ringing; 4231 here before), but a value above what the sensor recorded is no measurement."""
    import cv2

    height, width = 96, 128
    sharp = np.zeros((height, width), np.float32)
    sharp[:, width // 2:] = full_scale
    sharp[::6, :] = 0
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    left_sharp, right_sharp = sharp.copy(), sharp.copy()
    left_sharp[:, width // 2:] = blurred[:, width // 2:]
    right_sharp[:, :width // 2] = blurred[:, :width // 2]
    slices = [np.clip(s, 0.015 * full_scale, full_scale).astype(dtype) for s in (left_sharp, right_sharp)]
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings())
    for pixels in slices:
        engine.push(pixels)
    fused = engine.finish().fused
    assert fused.max() <= max(s.max() for s in slices)
    assert fused.min() >= min(s.min() for s in slices)


def test_each_fused_pixel_keeps_within_what_the_slices_show_there():
    """A bright-field edge: a dark specimen sharp in one slice, a blurred shadow a few pixels over in the
    other (it moved), texture beside it sharp in the second. The pyramid adds one slice's fine detail to
    the other's coarse levels, and the sums went 25 grey levels darker than either slice (16 brighter)
    at pixels well inside the stack's overall range: the scorpion stack's purple undershoot."""
    import cv2

    rng = np.random.default_rng(3)
    height, width = 96, 128
    specimen = np.full((height, width), 230, np.float32)
    specimen[:, :60] = 40 + 30 * rng.random((height, 60))
    texture = np.zeros_like(specimen)
    texture[:, 70:] = 40 * rng.random((height, width - 70))
    sharp = specimen + cv2.GaussianBlur(texture, (0, 0), 3)
    shadow = cv2.GaussianBlur(np.roll(specimen, 6, axis=1), (0, 0), 4) + cv2.GaussianBlur(texture, (0, 0), 0.5)
    slices = [np.clip(s, 0, 255).astype(np.uint8) for s in (sharp, shadow)]
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings())
    for pixels in slices:
        engine.push(pixels)
    fused = engine.finish().fused.astype(int)
    assert (fused >= np.minimum(*slices)).all() and (fused <= np.maximum(*slices)).all()
    assert fused.std() > 0.5 * np.stack(slices).std()  # (still a picture, not a flat compromise)


@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
@pytest.mark.parametrize("align", ["off", "auto", "on"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_frame_buffer_reused_after_push_changes_nothing(composition, align, dtype):
    """A camera SDK or ring buffer fills the same array with the next frame as soon as push() returns. Aligning,
    the slice is composed on another thread after that (90% of the pixels were wrong), and a float32 mono frame's
    registration level was the caller's array itself (the next slice was registered against itself)."""
    from simulators.motion import moving_sweep

    stack = moving_sweep("coffee", "dome", (224, 288), 6, 0.02, 8.0, moving=True)
    slices = [np.ascontiguousarray(s.mean(axis=2)).astype(dtype) for s in stack.slices]
    settings = FusionSettings(align=align, composition=composition)
    copies = StreamingFusion(slices[0].shape, dtype, settings)
    for pixels, z in zip(slices, stack.z_um):
        copies.push(pixels.copy(), z)
    expected = copies.finish()
    reused = StreamingFusion(slices[0].shape, dtype, settings)
    buffer = np.empty_like(slices[0])
    for pixels, z in zip(slices, stack.z_um):
        buffer[:] = pixels
        reused.push(buffer, z)
    buffer[:] = 0
    result = reused.finish()
    assert np.array_equal(result.fused, expected.fused)
    assert np.array_equal(result.depth, expected.depth, equal_nan=True)
    assert result.alignment == expected.alignment


def test_the_depth_map_made_after_the_image_is_read_as_an_array_and_pickles(rgb_stack):
    """The pyramid makes the depth map (and the decision) beside, after the fused image that a live session waits
    for: reading the result's depth waits for it; a batch worker's pickled result carries the arrays."""
    import pickle

    engine = StreamingFusion(rgb_stack.slices[0].shape, np.uint8)
    for pixels, z_um in zip(rgb_stack.slices, rgb_stack.z_um):
        engine.push(pixels, z_um)
    expected = engine._composition.depth_so_far(list(rgb_stack.z_um))
    result = engine.finish()
    assert isinstance(result.depth, np.ndarray) and np.array_equal(result.depth, expected, equal_nan=True)
    copy = pickle.loads(pickle.dumps(result))
    assert np.array_equal(copy.depth, expected, equal_nan=True) and np.array_equal(copy.decision, result.decision)
