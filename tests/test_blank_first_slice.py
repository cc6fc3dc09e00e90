"""A stack whose first slices are blank (one value throughout: a dark frame, a camera that started
before the light) fuses as well as the same stack without them, and a stack of blank slices only
fuses to their value; blank slices later in the stack change nothing.

The pyramid calibrated its value scale and noise floors on the first slice; on a blank one they came
out in units unrelated to the data, and the fused image was about the average of the slices."""
import cv2
import numpy as np
import pytest

from fusion import StreamingFusion
from fusion.metrics import psnr
from tests.conftest import rendered

SHAPE = (96, 128)  # small frames: each stack fuses in well under a second
# (colour, bit depth, value units): float 0..1, float in units of a thousandth, float in thousands,
# 8- and 16-bit integers, mono and colour.
CASES = {
    "mono-float-0..1": (False, 0, 1.0),
    "rgb-float-0..0.001": (True, 0, 1e-3),
    "mono-float-0..1000": (False, 0, 1e3),
    "mono-uint16": (False, 16, 1.0),
    "rgb-uint8": (True, 8, 1.0),
}


def _stack(color, bit_depth, units):
    """(slices, z in um, truth, height map in um, full scale) of a small rendered sweep."""
    stack = rendered("astronaut", "dome", color=color, bit_depth=bit_depth, shape=SHAPE)
    slices, truth = list(stack.slices), stack.truth
    if units != 1.0:
        slices = [(pixels * np.float32(units)).astype(np.float32) for pixels in slices]
        truth = (truth * np.float32(units)).astype(np.float32)
    full_scale = units if bit_depth == 0 else 2.0 ** bit_depth - 1
    return slices, list(stack.z_um), truth, stack.height_um, full_scale


def _fuse(slices, z_um):
    engine = StreamingFusion(slices[0].shape, slices[0].dtype)
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    return engine.finish()


def _with_blank_first(slices, z_um, n_blank=1, value=0):
    step_um = z_um[1] - z_um[0]
    blank = [np.full_like(slices[0], value) for _ in range(n_blank)]
    return blank + slices, [z_um[0] - step_um * (n_blank - k) for k in range(n_blank)] + z_um


@pytest.mark.parametrize("case", list(CASES))
def test_a_blank_first_slice_fuses_as_well_as_the_stack_without_it(case):
    slices, z_um, truth, _, full_scale = _stack(*CASES[case])
    without_db = psnr(_fuse(slices, z_um).fused, truth, full_scale)
    result = _fuse(*_with_blank_first(slices, z_um))
    with_db = psnr(result.fused, truth, full_scale)
    average = np.mean([pixels.astype(np.float64) for pixels in [np.zeros_like(slices[0])] + slices], axis=0)
    assert with_db > without_db - 0.5, (with_db, without_db)
    assert with_db > psnr(average, truth, full_scale) + 10.0, with_db
    assert result.fused.dtype == slices[0].dtype and np.isfinite(result.fused).all()


@pytest.mark.parametrize("case", ["mono-uint16", "rgb-float-0..0.001"])
def test_the_blank_slice_is_chosen_nowhere_and_the_depth_holds(case):
    slices, z_um, _, height_um, _ = _stack(*CASES[case])
    spacing_um = z_um[1] - z_um[0]

    def within_one_spacing(depth):
        defined = np.isfinite(depth)
        return defined.mean(), (np.abs(depth - height_um)[defined] <= spacing_um).mean()

    defined, within = within_one_spacing(_fuse(slices, z_um).depth)
    result = _fuse(*_with_blank_first(slices, z_um))
    assert not (result.decision == 0).any()
    blank_defined, blank_within = within_one_spacing(result.depth)
    assert blank_defined > defined - 0.02 and blank_within > within - 0.02, (blank_defined, blank_within)


def test_several_blank_slices_at_any_level_then_a_sweep():
    """Three dark frames at the camera's offset, not at 0; the live view meanwhile shows that offset."""
    slices, z_um, truth, _, full_scale = _stack(False, 16, 1.0)
    blank_slices, blank_z = _with_blank_first(slices, z_um, n_blank=3, value=100)
    engine = StreamingFusion(slices[0].shape, slices[0].dtype)
    for k, (pixels, z) in enumerate(zip(blank_slices, blank_z)):
        engine.push(pixels, z)
        if k == 2:  # only the blank slices so far
            assert (engine.result() == 100).all()
            assert np.isnan(engine.preview()[1]).all()
    result = engine.finish()
    assert psnr(result.fused, truth, full_scale) > psnr(_fuse(slices, z_um).fused, truth, full_scale) - 0.5
    assert not (result.decision < 3).any()
    assert result.focus_scores[:3] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("shape,dtype,value", [
    (SHAPE, np.uint16, 1234),
    (SHAPE + (3,), np.uint8, (10, 200, 0)),
    (SHAPE, np.float32, 0.0),
    (SHAPE + (3,), np.float32, (0.25, 1e-3, 0.5)),
    (SHAPE, np.float32, 1e-6),
])
@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
def test_a_stack_of_blank_slices_only_fuses_to_their_value(shape, dtype, value, composition):
    from fusion import FusionSettings

    frame = np.empty(shape, dtype)
    frame[...] = value
    engine = StreamingFusion(shape, dtype, FusionSettings(composition=composition))
    for z in range(4):
        engine.push(frame.copy(), float(z))
        np.testing.assert_array_equal(engine.result(), frame)
    result = engine.finish()
    np.testing.assert_array_equal(result.fused, frame)
    assert result.fused.dtype == np.dtype(dtype)
    assert result.depth.shape == SHAPE and result.decision.shape == SHAPE


@pytest.mark.parametrize("case", ["rgb-uint8", "mono-float-0..1000"])
def test_blank_slices_in_the_middle_of_a_stack_change_nothing(case):
    """A black frame (a shutter that missed) and a saturated one mid-sweep: the fused image and the depth map are
    those of the stack without them (their evidence tied with the noise in flat areas: each darkened or brightened
    them by up to 1/n), and neither is chosen anywhere."""
    slices, z_um, _, _, full_scale = _stack(*CASES[case])
    middle = len(slices) // 2
    with_blanks = slices[:middle] + [np.zeros_like(slices[0]), np.full_like(slices[0], full_scale)] + slices[middle:]
    step_um = z_um[middle] - z_um[middle - 1]
    blank_z = [z_um[middle - 1] + 0.25 * step_um, z_um[middle - 1] + 0.5 * step_um]
    expected = _fuse(slices, z_um)
    result = _fuse(with_blanks, z_um[:middle] + blank_z + z_um[middle:])
    np.testing.assert_array_equal(result.fused, expected.fused)
    np.testing.assert_array_equal(result.depth, expected.depth)
    assert not np.isin(result.decision, [middle, middle + 1]).any()
    assert result.focus_scores[middle:middle + 2] == [0.0, 0.0]


def test_a_black_frame_in_a_moving_stack_is_skipped_with_a_warning_that_says_it_is_blank():
    from fusion import FusionSettings
    from simulators.motion import moving_sweep

    stack = moving_sweep("coffee", "dome", (256, 320), 7, 0.02, 8.0, moving=True)

    def fuse(slices, z_um):
        engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(align="auto"))
        for pixels, z in zip(slices, z_um):
            engine.push(pixels, z)
        return engine.finish()

    expected = fuse(stack.slices, stack.z_um)
    with pytest.warns(UserWarning, match=r"slice 3 .*could not be aligned reliably: it is blank"):
        result = fuse(stack.slices[:3] + [np.zeros_like(stack.slices[0])] + stack.slices[3:],
                      stack.z_um[:3] + [(stack.z_um[2] + stack.z_um[3]) / 2] + stack.z_um[3:])
    np.testing.assert_array_equal(result.fused, expected.fused)


@pytest.mark.parametrize("composition", ["blend", "pick"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_black_frame_has_no_say_in_the_single_scale_compositions_either(composition, where):
    """Noise-free flat areas (renders, float data): every slice's measure ties there, and a black first frame was
    picked ("pick": the flats came out black) or averaged in ("blend": darker by 1/n)."""
    from fusion import FusionSettings

    rng = np.random.default_rng(0)
    specimen = np.full((96, 128), 128.0)
    specimen[30:60, 40:90] += 60 * rng.standard_normal((30, 50))
    slices = [np.clip(cv2.GaussianBlur(specimen, (0, 0), 0.5 + abs(k - 3) * 1.5), 0, 255).astype(np.uint8)
              for k in range(7)]
    at = {"first": 0, "middle": 3, "last": len(slices)}[where]
    with_black = slices[:at] + [np.zeros_like(slices[0])] + slices[at:]

    def fused(stack):
        engine = StreamingFusion(stack[0].shape, stack[0].dtype, FusionSettings(composition=composition))
        for pixels in stack:
            engine.push(pixels)
        return engine.finish().fused

    expected = fused(slices)
    assert abs(float(expected[:20].mean()) - 128) < 2  # the flat area
    np.testing.assert_array_equal(fused(with_black), expected)


def _dark_frame(like: np.ndarray, full_scale: float, seed: int = 1) -> np.ndarray:
    """What a camera gives with the light off: its black level (1% of full scale) and its read noise."""
    noisy = 0.01 * full_scale + 0.004 * full_scale * np.random.default_rng(seed).standard_normal(like.shape)
    if like.dtype.kind == "f":
        return noisy.astype(like.dtype)
    return np.clip(np.round(noisy), 0, full_scale).astype(like.dtype)


@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
@pytest.mark.parametrize("case", ["rgb-uint8", "mono-uint16", "mono-float-0..1000"])
def test_a_dark_noisy_frame_mid_stack_has_no_say_and_is_named(case, composition):
    """A camera's dark frame is not one value: it holds the sensor's noise, and given its say it darkened the flat
    areas (a bright-field stack of 9 slices: 41.19 -> 40.47 dB with one). Now the fused image and the depth map are
    those of the stack without it, and a warning names it."""
    from fusion import FusionSettings

    slices, z_um, _, _, full_scale = _stack(*CASES[case])
    middle = len(slices) // 2
    step_um = z_um[middle] - z_um[middle - 1]

    def fuse(stack, z):
        engine = StreamingFusion(stack[0].shape, stack[0].dtype, FusionSettings(composition=composition))
        for pixels, at in zip(stack, z):
            engine.push(pixels, at)
        return engine.finish()

    expected = fuse(slices, z_um)
    with pytest.warns(UserWarning, match=rf"slice {middle} \(counting from 0\) shows nothing of the specimen"):
        result = fuse(slices[:middle] + [_dark_frame(slices[0], full_scale)] + slices[middle:],
                      z_um[:middle] + [z_um[middle - 1] + step_um / 2] + z_um[middle:])
    np.testing.assert_array_equal(result.fused, expected.fused)
    np.testing.assert_array_equal(result.depth, expected.depth)


def test_a_dim_slice_that_shows_the_specimen_keeps_its_say():
    """Darker is not dark: a slice at a tenth of the light (a lamp that flickered) still shows the specimen, above
    its noise, and is fused as any slice; so is a frame of noise as bright as the stack (nothing tells it apart)."""
    import warnings

    slices, z_um, _, _, full_scale = _stack(*CASES["mono-uint16"])
    middle = len(slices) // 2
    dim = (slices[middle].astype(np.float64) * 0.1).astype(slices[0].dtype)
    bright_noise = _dark_frame(slices[0], full_scale) + np.uint16(slices[middle].mean())
    for odd in (dim, bright_noise):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fuse(slices[:middle] + [odd] + slices[middle:], z_um[:middle] + [z_um[middle] - 0.5] + z_um[middle:])
        assert not [w for w in caught if "shows nothing" in str(w.message)]


def test_blank_slices_beside_slices_with_detail_are_named_too():
    """A blank first frame (a camera that started before the light) is left out as before; the warning says so."""
    slices, z_um, _, _, _ = _stack(*CASES["rgb-uint8"])
    with pytest.warns(UserWarning, match=r"slice 0 \(counting from 0\) shows nothing of the specimen \(one value "):
        _fuse(*_with_blank_first(slices, z_um))


def _fuse_with(composition, slices, z_um):
    from fusion import FusionSettings

    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(composition=composition))
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    return engine.finish()


def _with_dark_first(slices, z_um, full_scale, n_dark=3):
    step_um = z_um[1] - z_um[0]
    dark = [_dark_frame(slices[0], full_scale, seed=k) for k in range(n_dark)]
    return dark + slices, [z_um[0] - step_um * (n_dark - k) for k in range(n_dark)] + z_um


@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
@pytest.mark.parametrize("case", ["rgb-uint8", "mono-uint16", "mono-float-0..1000"])
def test_dark_noisy_frames_before_the_first_slice_with_detail_have_no_say_and_are_named(case, composition):
    """A camera started before the light gives dark frames of noise first. Fused as they came, three of them before
    a phone's 32 photographs of a keyboard halved the grey of its blurred wall. They are now held until a slice
    with detail shows that they are dark: the fused image and the depth map are those of the stack without them."""
    slices, z_um, _, _, full_scale = _stack(*CASES[case])
    expected = _fuse_with(composition, slices, z_um)
    with pytest.warns(UserWarning, match=r"slices 0, 1, 2 \(counting from 0\) show nothing of the specimen"):
        result = _fuse_with(composition, *_with_dark_first(slices, z_um, full_scale))
    np.testing.assert_array_equal(result.fused, expected.fused)
    np.testing.assert_array_equal(result.depth, expected.depth)


@pytest.mark.parametrize("composition", ["pyramid", "pick"])
def test_frames_of_noise_first_that_are_not_dark_are_fused_as_before(composition, monkeypatch):
    """Holding changes nothing for frames of noise at the stack's own level (nothing tells them apart) or for a
    stack of noise only: each is fused as it was before anything was held."""
    from fusion import blank_slices

    slices, z_um, _, _, full_scale = _stack(*CASES["mono-uint16"])
    bright_noise = [_dark_frame(slices[0], full_scale, seed=k) + np.uint16(slices[0].mean()) for k in range(2)]
    step_um = z_um[1] - z_um[0]
    stacks = {
        "noise at the stack's level": (bright_noise + slices, [z_um[0] - 2 * step_um, z_um[0] - step_um] + z_um),
        "noise only": (bright_noise, z_um[:2]),
    }
    for name, (stack, z) in stacks.items():
        held = _fuse_with(composition, stack, z)
        with monkeypatch.context() as nothing_held:
            nothing_held.setattr(blank_slices, "noise_only", lambda gray, step: False)
            as_before = _fuse_with(composition, stack, z)
        np.testing.assert_array_equal(held.fused, as_before.fused, err_msg=name)
        np.testing.assert_array_equal(held.depth, as_before.depth, err_msg=name)


@pytest.mark.parametrize("composition", ["pyramid", "pick"])
def test_dark_frames_beyond_what_can_be_held_have_no_say_either(composition, monkeypatch):
    """Past HELD_NOISE_BYTES_AT_MOST (7 frames of 5 MP RGB) every held frame was let go and fused, dark ones
    included, without a word: 170 dark frames before the keyboard's photographs made it 10 greys darker. Frames of
    noise beyond the hold get no say; those held are judged as before; all are named."""
    from fusion import blank_slices

    slices, z_um, _, _, full_scale = _stack(*CASES["rgb-uint8"])
    monkeypatch.setattr(blank_slices, "HELD_NOISE_BYTES_AT_MOST", slices[0].nbytes + slices[0][..., 0].size * 4)
    expected = _fuse_with(composition, slices, z_um)
    with pytest.warns(UserWarning, match=r"slices 0, 1, 2, 3 \(counting from 0\) show nothing of the specimen"):
        result = _fuse_with(composition, *_with_dark_first(slices, z_um, full_scale, n_dark=4))
    np.testing.assert_array_equal(result.fused, expected.fused)
    np.testing.assert_array_equal(result.depth, expected.depth)


def test_the_live_view_shows_the_frames_held_before_the_first_slice_with_detail():
    slices, z_um, _, _, full_scale = _stack(*CASES["rgb-uint8"])
    dark, _ = _with_dark_first(slices, z_um, full_scale, n_dark=2)
    engine = StreamingFusion(slices[0].shape, slices[0].dtype)
    for pixels, z in zip(dark[:2], z_um):
        engine.push(pixels, z)
    shown = engine.result()
    assert shown.shape == slices[0].shape and shown.dtype == slices[0].dtype
    assert abs(float(shown.mean()) - float(np.mean(dark[:2]))) < 1
