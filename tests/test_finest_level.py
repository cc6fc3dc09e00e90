"""The end of a pyramid fusion makes its finest level in one pass (``fusion.finest_level``): the image must be the
one the plain passes make (mean, collapse, scale, the slices' range, rounding), to the bit, in every dtype."""
import numpy as np
import pytest

from fusion import compose, multiscale
from fusion.multiscale import PyramidComposer, PyramidWeighting
from fusion.pixel_range import PixelRange


def _composer_and_range(slices, coverages):
    composer = PyramidComposer(slices[0].shape, PyramidWeighting())
    composer.calibrate(1.0, np.full(slices[0].shape[2] if slices[0].ndim == 3 else 1, 0.5))
    value_range = PixelRange()
    rng = np.random.default_rng(5)
    for index, (pixels, covered) in enumerate(zip(slices, coverages)):
        value_range.add(pixels)
        energy = (rng.random(pixels.shape[:2]) * 50).astype(np.float32)
        composer.add(pixels, energy, float(index), index, covered)
    return composer, value_range


def _plain(composer, value_range, dtype, scale):
    image = composer.final_image()
    if scale != 1.0:
        image *= np.float32(scale)
    return compose.to_dtype(value_range.clip(image), dtype, overwrite=True)


@pytest.mark.parametrize("shape,dtype,top,scale", [
    ((97, 131, 3), np.uint8, 255, 1.0), ((61, 90), np.uint16, 4095, 1.0), ((64, 70, 3), np.uint16, 65535, 1.0),
    ((50, 77), np.float32, 1.0, 1e-3), ((40, 60, 3), np.float32, 1.0, 3e4), ((33, 45, 4), np.float64, 1.0, 1.0)])
def test_the_finest_level_in_one_pass_is_the_plain_passes_image(shape, dtype, top, scale, monkeypatch):
    monkeypatch.setattr(multiscale, "STRIP_VALUES", 7 * int(np.prod(shape[1:])))  # several strips of 7 rows
    rng = np.random.default_rng(2)
    base = rng.random(shape)
    slices = [np.clip((base * (0.5 + 0.15 * k) + rng.normal(0, 0.08, shape)) * top, 0, top).astype(dtype)
              for k in range(5)]
    if np.dtype(dtype).kind == "f":
        slices[2][:4, :6] = np.nan   # no data there in one slice: NaN in its range too
    coverages = [None, rng.random(shape[:2]) > 0.2, None, None, np.ones(shape[:2], bool)]
    coverages[4][:, :5] = False      # a slice aligned away from the left edge
    plain = _plain(*_composer_and_range(slices, coverages), dtype, scale)
    composer, value_range = _composer_and_range(slices, coverages)
    one_pass = composer.final_image_as(dtype, value_range.low, value_range.high, scale)
    assert one_pass.dtype == plain.dtype and one_pass.shape == plain.shape
    assert np.array_equal(one_pass, plain, equal_nan=True)
    if np.dtype(dtype).kind == "f":
        assert np.isnan(one_pass[:4, :6]).all()   # NaN stays NaN, as np.maximum keeps it
    with pytest.raises(RuntimeError, match="final image"):
        composer.image()


def test_a_frame_without_bands_is_refused_with_the_way_out():
    composer, value_range = _composer_and_range([np.full((6, 7), 3, np.uint8)] * 2, [None, None])
    with pytest.raises(ValueError, match="final_image"):
        composer.final_image_as(np.uint8, value_range.low, value_range.high)


def test_each_call_after_the_end_gives_a_fresh_copy_of_the_same_image():
    from fusion import FusionSettings, StreamingFusion

    rng = np.random.default_rng(0)
    engine = StreamingFusion((80, 96, 3), np.uint8, FusionSettings())
    for z in range(4):
        engine.push((rng.random((80, 96, 3)) * 255).astype(np.uint8), float(z))
    fused = engine.finish().fused
    again = engine.result()
    assert np.array_equal(fused, again) and fused is not again
    fused[:] = 0   # what a caller does with its copy is its own
    assert np.array_equal(engine.result(), again)
