"""The pyramid's weighting per level: powers given per level (finest first) or one for all, read
back from a report's JSON, refused with the bad value named, and applied level by level."""
import dataclasses
import json

import numpy as np
import pytest

from fusion import FusionSettings, StreamingFusion
from fusion.metrics import psnr
from fusion.multiscale import PyramidWeighting
from tests.conftest import rendered


def test_per_level_powers_survive_a_reports_json():
    settings = FusionSettings(pyramid=PyramidWeighting(evidence_power=(2, 6, 8), band_power=10))
    read_back = FusionSettings(**json.loads(json.dumps(dataclasses.asdict(settings))))  # lists, as --resume reads
    assert read_back == settings
    assert read_back.pyramid.evidence_power == (2, 6, 8)
    assert [read_back.pyramid.evidence_power_at(k) for k in range(5)] == [2, 6, 8, 8, 8]  # the last holds on
    assert [read_back.pyramid.band_power_at(k) for k in range(3)] == [10, 10, 10]


@pytest.mark.parametrize("changes,message", [
    ({"evidence_power": [2, 1.5]}, "evidence_power must be a whole number from 0 to 32, got 1.5"),
    ({"band_power": [12, 40]}, "band_power must be a whole number from 0 to 32, got 40"),
    ({"band_power": ["12"]}, "band_power must be a whole number from 0 to 32, got '12'"),
    ({"evidence_power": []}, "evidence_power needs at least one power"),
    ({"evidence_pool_power": 3}, r"evidence_pool_power must be one of \(1, 2\), got 3"),
])
def test_a_bad_power_is_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=f"pyramid weighting: {message}"):
        PyramidWeighting(**changes)


def _fused(stack, weighting):
    engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, FusionSettings(pyramid=weighting))
    for pixels, z in zip(stack.slices, stack.z_um):
        engine.push(pixels, z)
    return engine.finish().fused


def test_each_weighting_has_one_spelling():
    # (--resume fuses again when the settings differ: [4, 4, 4] and 4 are the same weighting.)
    assert PyramidWeighting(evidence_power=[4, 4, 4], band_power=(12,)) == PyramidWeighting(evidence_power=4,
                                                                                            band_power=12)
    assert PyramidWeighting(evidence_power=(2, 6, 6, 8, 12, 12, 12)).evidence_power == (2, 6, 6, 8, 12)


def test_each_level_gets_its_own_power():
    # Level 0's evidence alone decides nothing there once its power is 0 and the band's is 0 too
    # (every slice weighs the same at that level); the coarser levels still follow focus.
    stack = rendered(seed=4, color=False)
    even_at_finest = _fused(stack, PyramidWeighting(evidence_power=(0, 4), band_power=(0, 12)))
    default = _fused(stack, PyramidWeighting())
    assert not np.array_equal(even_at_finest, default)
    # The finest band of the first is the plain mean of the slices' finest bands: it is less sharp.
    def fine_energy(image):
        image = image.astype(np.float32)
        return float(np.mean((image[1:-1, 1:-1] * 4 - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2]
                              - image[1:-1, 2:]) ** 2))
    assert fine_energy(even_at_finest) < 0.8 * fine_energy(default)
    # ... while its coarser levels do follow focus: far closer to the truth than the slices' mean
    # (which is what powers of 0 at every level give).
    mean_of_slices = np.mean(np.stack(stack.slices).astype(np.float32), axis=0)
    assert psnr(even_at_finest, stack.truth, 255) > psnr(mean_of_slices, stack.truth, 255) + 3
