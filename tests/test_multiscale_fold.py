"""The fold kernel keeps, per pixel and channel, the weighted mean of the slices' bands that its docstring
promises: checked against the same weights computed plainly in float64, slice after slice (a larger weight
arriving late rescales the sums), with and without band energy and coverage, at widths whose runs do and do
not fill whole vector registers; and the decision map that the fold keeps beside."""
import numpy as np
import pytest

from fusion import multiscale
from fusion.multiscale import NO_TOP_EXPONENT, _track_best


def _weights64(pooled, floor, energy, floors, coverage, evidence_power, band_power):
    """(pooled / floor) ** evidence_power * ((energy + floor_c) / floor_c) ** band_power [* coverage ** 8], float64."""
    evidence_root, band_root, shared, cap = multiscale._roots(evidence_power, band_power)
    ratio = np.minimum(pooled.astype(np.float64) / floor, cap)[:, :, None]
    weight = ratio ** evidence_root
    if coverage.size:
        weight = weight * coverage.astype(np.float64)[:, :, None] ** max(1, 8 // shared)
    if energy.size:
        weight = weight * np.minimum(1 + energy.astype(np.float64) / floors, cap) ** band_root
    return weight ** shared


@pytest.mark.parametrize("shape", [(7, 13, 3), (5, 16, 1), (4, 37, 2)])
@pytest.mark.parametrize("evidence_power,band_power,with_coverage", [(2, 10, False), (6, 12, True), (12, 0, True)])
def test_the_fold_is_the_weighted_mean_of_the_bands(shape, evidence_power, band_power, with_coverage):
    rng = np.random.default_rng(7)
    height, width, channels = shape
    floors = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    roots = multiscale._roots(evidence_power, band_power)
    weighted = np.zeros(shape, np.float32)
    weights = np.zeros(shape, np.float32)
    top = np.full(shape, NO_TOP_EXPONENT, np.int8)
    total, total_weight = np.zeros(shape), np.zeros(shape)
    for index in range(5):
        band = rng.normal(0, 20, shape).astype(np.float32)
        # Sharper slices later: each brings larger weights than the ones before, so the sums are rescaled.
        pooled = rng.uniform(1, 3 + 4 * index, (height, width)).astype(np.float32)
        energy = rng.uniform(0, 5 + 10 * index, shape).astype(np.float32) if band_power else multiscale._EMPTY3
        coverage = np.where(rng.random((height, width)) < 0.2, 0, rng.uniform(0.5, 1, (height, width)))
        coverage = coverage.astype(np.float32) if with_coverage else multiscale._EMPTY2
        multiscale._fold_level(band, pooled, np.float32(1.5), energy, floors, coverage, *roots, weighted, weights, top)
        weight = _weights64(pooled, 1.5, energy, floors, coverage, evidence_power, band_power)
        total += weight * band
        total_weight += weight
    covered = total_weight > 0
    expected = np.divide(total, total_weight, out=np.zeros(shape), where=covered)
    folded = np.divide(weighted, np.maximum(weights, np.float32(1e-30)))
    np.testing.assert_allclose(folded[covered], expected[covered], rtol=1e-4, atol=1e-3)


def test_the_decision_map_is_the_first_slice_with_the_most_evidence_where_each_shows_something():
    """The decision map (``best_index``): per pixel, the slice whose pooled evidence is the greatest, the earlier one
    on a tie, never a slice where it covers nothing (an aligned slice's edge); -1 where no slice covered it."""
    rng = np.random.default_rng(3)
    shape, n_slices = (37, 53), 6
    evidence = rng.integers(0, 4, (n_slices,) + shape).astype(np.float32)   # (few values: many ties)
    covered = rng.random((n_slices,) + shape) > 0.2
    covered[:, 0, 0] = False   # (a pixel no slice covers)
    best_evidence, best_index = np.zeros(shape, np.float32), np.full(shape, -1, np.int16)
    for index in range(n_slices):
        _track_best(evidence[index], index, best_evidence, best_index, covered[index].view(np.uint8))
    masked = np.where(covered, evidence, -np.inf)
    expected = np.where(covered.any(axis=0), np.argmax(masked, axis=0), -1)
    np.testing.assert_array_equal(best_index, expected)
    # Without a coverage mask, every slice covers every pixel.
    best_evidence, best_index = np.zeros(shape, np.float32), np.full(shape, -1, np.int16)
    for index in range(n_slices):
        _track_best(evidence[index], index, best_evidence, best_index, np.zeros((0, 0), np.uint8))
    np.testing.assert_array_equal(best_index, np.argmax(evidence, axis=0))


def test_slices_with_and_without_coverage_share_one_compiled_decision_kernel():
    """An aligned stack's first slice comes without a coverage mask and the next ones with one: both take the same
    compiled decision kernel (a second one cost a cache load, 0.1-0.2 s, in the middle of a live stack)."""
    kernel = getattr(_track_best, "__wrapped__", _track_best)   # (behind fusion.parallel_kernels.one_at_a_time)
    composer = multiscale.PyramidComposer((40, 48))
    composer.calibrate(1.0, np.ones(1))
    rng = np.random.default_rng(0)
    covered = np.ones((40, 48), bool)
    covered[:, :3] = False
    for index, coverage in enumerate([None, covered]):
        image = rng.random((40, 48), dtype=np.float32)
        composer.add(image, np.square(image), float(index), index, coverage)
    # (Other tests in the same process may add signatures of their own: the coverage argument is what differed.)
    assert {str(signature[-1].dtype) for signature in kernel.signatures} == {"uint8"}, kernel.signatures
