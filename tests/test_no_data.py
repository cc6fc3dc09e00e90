"""NaN in float slices is no data (registration's padding, a masked acquisition): those pixels come from the slices
that have data there, and where none has, the fused image and the depth map say NaN. One NaN pixel used to fail the
whole stack ("holds NaN or infinity")."""
import json

import numpy as np
import pytest
import tifffile

from fusion import FusionSettings, StreamingFusion
from fusion.metrics import psnr
from fusion.readers.tiff import read_image_tiff
from tests.conftest import rendered
from tests.test_refuse_cli import run_cli

SHAPE = (96, 128)
PADDED_PX = 8   # every slice's first columns: padding, as a registration leaves where it moved a slice in


def _float_stack():
    stack = rendered("astronaut", "dome", color=True, bit_depth=0, shape=SHAPE)
    return [pixels.astype(np.float32) for pixels in stack.slices], list(stack.z_um), stack.truth


def _padded(slices):
    """Each slice padded with NaN over columns 0..PADDED_PX + its index, and slice 3 with a hole besides."""
    holed = [pixels.copy() for pixels in slices]
    for k, pixels in enumerate(holed):
        pixels[:, :PADDED_PX + k] = np.nan
    holed[3][40:50, 60:70] = np.nan
    return holed


def _fuse(slices, z_um, composition="pyramid", align="off"):
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(composition=composition, align=align))
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    return engine.finish()


@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
def test_nan_pixels_come_from_the_slices_with_data_and_are_nan_where_none_has(composition):
    slices, z_um, truth = _float_stack()
    complete = _fuse(slices, z_um, composition)
    with pytest.warns(UserWarning, match=r"slices 0 \(6.2%\), 1 \(7.0%\), .* hold NaN, taken as no data: .*; "
                                         rf"{SHAPE[0] * PADDED_PX} pixels have data in no slice, and are NaN"):
        result = _fuse(_padded(slices), z_um, composition)
    nowhere = np.zeros(SHAPE, bool)
    nowhere[:, :PADDED_PX] = True
    np.testing.assert_array_equal(np.isnan(result.fused).any(axis=2), nowhere)
    assert np.isnan(result.depth[nowhere]).all()
    # Where every slice has data (right of the widest padding), the fusion is that of the complete stack.
    every = (slice(None), slice(PADDED_PX + len(slices) + 8, None))
    assert abs(psnr(result.fused[every], truth[every], 1.0) - psnr(complete.fused[every], truth[every], 1.0)) < 0.05
    # Slice 3's hole is filled from the others, as well as the complete stack fuses it.
    hole = (slice(40, 50), slice(60, 70))
    assert np.isfinite(result.fused[hole]).all()
    assert psnr(result.fused[hole], truth[hole], 1.0) > psnr(complete.fused[hole], truth[hole], 1.0) - 1.0


def test_nan_padding_in_an_aligned_stack_moves_with_its_slice():
    from simulators.motion import moving_sweep

    stack = moving_sweep("coffee", "dome", (192, 256), 7, 0.02, 8.0, moving=True)
    slices = [pixels.astype(np.float32) / 255 for pixels in stack.slices]
    complete = _fuse(slices, stack.z_um, align="auto")
    padded = [pixels.copy() for pixels in slices]
    for pixels in padded[1:]:
        pixels[:6] = np.nan  # the top rows of every slice but the reference have no data
    with pytest.warns(UserWarning, match="hold NaN, taken as no data"):
        result = _fuse(padded, stack.z_um, align="auto")
    assert np.isfinite(result.fused).all()  # the reference slice has data everywhere
    inner = (slice(30, -30), slice(30, -30))
    truth = stack.truth.astype(np.float32) / 255
    assert psnr(result.fused[inner], truth[inner], 1.0) > psnr(complete.fused[inner], truth[inner], 1.0) - 0.3


def test_refusing_a_float_tiff_with_nan_padding(tmp_path):
    """From the command line: a stack as Fiji saves it after a registration that padded with NaN."""
    slices, z_um, _ = _float_stack()
    path = tmp_path / "registered.tif"
    tifffile.imwrite(path, np.stack(_padded(slices)), photometric="rgb", metadata={"axes": "ZYXS"})
    done = run_cli("--refuse", path, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "hold NaN, taken as no data" in done.stderr and "Traceback" not in done.stderr
    fused = read_image_tiff(tmp_path / "out" / "registered.fused.tif")  # (H, W, C), as Fiji shows it
    assert np.isnan(fused[:, :PADDED_PX]).all() and np.isfinite(fused[:, PADDED_PX:]).all()
    report = json.loads((tmp_path / "out" / "registered.json").read_text())
    assert any("hold NaN" in warning for warning in report["warnings"])


def test_a_float_slice_with_no_data_at_all_has_no_say():
    slices, z_um, truth = _float_stack()
    middle = len(slices) // 2
    empty = np.full_like(slices[0], np.nan)
    with pytest.warns(UserWarning, match=rf"slice {middle} \(counting from 0\) shows nothing of the specimen"):
        result = _fuse(slices[:middle] + [empty] + slices[middle:],
                       z_um[:middle] + [z_um[middle] - 0.5] + z_um[middle:])
    np.testing.assert_array_equal(result.fused, _fuse(slices, z_um).fused)


@pytest.mark.parametrize("dtype, advice", [
    (np.float32, r"NaN marks no data in a float slice: push pixels.filled\(np.nan\)$"),
    (np.uint16, r"an integer slice has no mark for no data: make the engine for float32 and push "
                r"pixels.astype\(np.float32\).filled\(np.nan\), or push pixels.data"),
])
def test_a_masked_array_is_refused_saying_how_to_fill_it(dtype, advice):
    """Its mask was passed over without a word: the masked values were fused as data."""
    from fusion.errors import InvalidPixelsError

    pixels = np.ma.masked_less(np.arange(48, dtype=dtype).reshape(6, 8), 5)
    engine = StreamingFusion((6, 8), dtype)
    with pytest.raises(InvalidPixelsError, match=r"slice 0 \(counting from 0\) is a masked array with 5 masked "
                                                  r"values, and the engine reads no mask: " + advice):
        engine.push(pixels)


def test_a_masked_float_array_filled_with_nan_is_no_data_there():
    slices, z_um, _ = _float_stack()
    masked = [np.ma.masked_invalid(pixels) for pixels in _padded(slices)]
    assert np.array_equal(_fuse([m.filled(np.nan) for m in masked], z_um).fused, _fuse(_padded(slices), z_um).fused,
                          equal_nan=True)
    unmasked = [np.ma.masked_array(pixels) for pixels in slices]  # (a mask that hides nothing: its data)
    assert np.array_equal(_fuse(unmasked, z_um).fused, _fuse(slices, z_um).fused)


@pytest.mark.parametrize("composition", ["pyramid", "blend", "pick"])
def test_a_stack_of_no_data_at_all_leaks_no_numpy_warnings(composition):
    """(A hostile round saw "All-NaN slice encountered": its own np.nanmin of the all-NaN fused image said it. The
    engine handles all-NaN itself and says so once, in its own words.)"""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # (the no-data warning, tested above)
        result = _fuse([np.full((32, 40, 3), np.nan, np.float32)] * 3, [0.0, 1.0, 2.0], composition)
        result.chosen_fraction()
    assert np.isnan(result.fused).all() and np.isnan(result.depth).all()
