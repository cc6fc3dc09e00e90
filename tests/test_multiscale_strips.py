"""The pyramid engine folds each band strip by strip (one strip of band energies in memory); the
result must be the whole band's, exactly, whatever the strip height."""
import numpy as np
import pytest

from fusion import multiscale
from fusion.multiscale import PyramidComposer, PyramidWeighting


def _fused(slices, energies, coverages, strip_rows, monkeypatch):
    monkeypatch.setattr(multiscale, "STRIP_ROWS", strip_rows)
    composer = PyramidComposer(slices[0].shape, PyramidWeighting())
    composer.calibrate(1.0, np.full(slices[0].shape[2] if slices[0].ndim == 3 else 1, 0.5))
    for index, (pixels, energy, covered) in enumerate(zip(slices, energies, coverages)):
        composer.add(pixels, energy, float(index), index, covered)
    return composer.image(), composer.depth(len(slices))


@pytest.mark.parametrize("shape", [(97, 131, 3), (61, 90)])
def test_strips_of_any_height_give_the_whole_band_result(shape, monkeypatch):
    rng = np.random.default_rng(3)
    slices = [(rng.random(shape) * 255).astype(np.float32) for _ in range(4)]
    energies = [(rng.random(shape[:2]) * 50).astype(np.float32) for _ in range(4)]
    coverages = [None, rng.random(shape[:2]) > 0.1, None, rng.random(shape[:2]) > 0.3]
    whole_image, whole_depth = _fused(slices, energies, coverages, 10 ** 6, monkeypatch)
    for strip_rows in (1, 5, 16):  # narrower than the smoothing's reach, about it, and wider
        image, depth = _fused(slices, energies, coverages, strip_rows, monkeypatch)
        assert np.array_equal(image, whole_image), strip_rows
        assert np.array_equal(depth, whole_depth, equal_nan=True), strip_rows
