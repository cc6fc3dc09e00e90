"""The real stacks in shared/data fuse without error and come out sharper than each slice."""
import cv2
import numpy as np
import pytest
import tifffile

from fusion import FusionSettings
from fusion.metrics import spatial_frequency
from fusion.readers import open_stack
from fusion.refuse import refuse_stack

pytestmark = pytest.mark.slow

STACKS = ["keyboard-phone", "pcb", "scorpion-microscope"]


def fine_detail(image: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image binned 2x2: the finest detail, which a defocused shadow or glow
    barely has, and with the pixel noise halved (fusion averages the noise of flat areas away)."""
    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    height, width = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    binned = grey[:height:2, :width:2] + grey[1:height:2, :width:2] + grey[:height:2, 1:width:2] \
        + grey[1:height:2, 1:width:2]
    return float(np.mean(cv2.Laplacian(binned / 4, cv2.CV_32F) ** 2))


@pytest.mark.parametrize("name", STACKS)
def test_real_stack_is_sharper_fused_than_any_slice(shared_data, tmp_path, name):
    # Aligned as `run_session.py --refuse` aligns (the scorpion and the pcb move). Not the average gradient: it counts
    # defocused shadows, glows and the noise of flat areas, which the fusion rightly leaves out; the aligned scorpion
    # has 0.91x its slice 4's, with every edge kept, and passed it only unaligned, by the ghost edges' gradients.
    report = refuse_stack(shared_data / name, tmp_path, FusionSettings(align="auto"))
    fused = tifffile.imread(report.outputs["fused"])
    with open_stack(shared_data / name) as stack:
        slice_sf, slice_detail = zip(*[(spatial_frequency(p), fine_detail(p)) for p, _ in stack])
        assert fused.shape == stack.first_slice_format()[0]
    assert report.n_slices == len(slice_sf)
    assert spatial_frequency(fused) > max(slice_sf)
    assert fine_detail(fused) > max(slice_detail)


def test_dark_frames_before_a_real_stack_change_neither_its_image_nor_where_it_has_a_depth(shared_data):
    """Three dark frames of noise before the keyboard's 32 photographs (a camera started before the light): held,
    then given no say. The depth map's test for textureless areas counted them among the slices all the same, and
    gave a depth to pixels that have none without them (130 here; 23,558 on the pcb)."""
    from fusion import StreamingFusion

    with open_stack(shared_data / "keyboard-phone") as stack:
        slices = [np.array(pixels) for pixels, _ in stack]
    rng = np.random.default_rng(0)
    dark = [np.clip(rng.normal(6, 4, slices[0].shape), 0, 255).astype(np.uint8) for _ in range(3)]

    def fuse(frames):
        engine = StreamingFusion(frames[0].shape, frames[0].dtype, FusionSettings(), name="keyboard")
        for pixels in frames:
            engine.push(pixels)
        return engine.finish()

    plain = fuse(slices)
    with pytest.warns(UserWarning, match=r"slices 0, 1, 2 \(counting from 0\) show nothing of the specimen"):
        with_dark = fuse(dark + slices)
    np.testing.assert_array_equal(with_dark.fused, plain.fused)
    np.testing.assert_array_equal(np.isnan(with_dark.depth), np.isnan(plain.depth))
    np.testing.assert_allclose(with_dark.depth - 3, plain.depth, atol=1e-4)   # (in slice indices: 3 more first)


def test_dark_frames_before_a_real_stack_are_not_its_alignment_reference(shared_data):
    """The same three dark frames, aligned (``--align auto``): the first was the registration reference, so the
    keyboard's first photograph could not be registered to it, and the user was told that a dark frame 'could not be
    aligned reliably' and shown the photograph as a fallback. The reference is now that photograph: no warning of
    alignment, no fallback, and each photograph aligned as without the dark frames."""
    import warnings

    from fusion import StreamingFusion

    with open_stack(shared_data / "keyboard-phone") as stack:
        slices = [np.array(pixels) for pixels, _ in stack]
    rng = np.random.default_rng(0)
    dark = [np.clip(rng.normal(6, 4, slices[0].shape), 0, 255).astype(np.uint8) for _ in range(3)]

    def fuse(frames):
        engine = StreamingFusion(frames[0].shape, frames[0].dtype, FusionSettings(align="auto"), name="keyboard")
        for pixels in frames:
            engine.push(pixels)
        return engine.finish()

    plain = fuse(slices)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with_dark = fuse(dark + slices)
    said = [str(warning.message) for warning in caught]
    assert not [text for text in said if "aligned" in text], said
    assert [text for text in said if "slices 0, 1, 2 (counting from 0) show nothing" in text], said
    assert [a["fallback"] for a in with_dark.alignment] == [False] * len(dark + slices)
    assert with_dark.alignment[3:] == plain.alignment
    np.testing.assert_array_equal(with_dark.fused, plain.fused)
