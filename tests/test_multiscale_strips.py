"""The pyramid engine folds each band strip by strip (one strip of band energies in memory); the
result must be the whole band's, exactly, whatever the strip height."""
import numpy as np
import pytest

from fusion import multiscale, pyramid
from fusion.multiscale import PyramidComposer, PyramidWeighting


def _fused(slices, energies, coverages, strip_values, monkeypatch):
    monkeypatch.setattr(multiscale, "STRIP_VALUES", strip_values)
    composer = PyramidComposer(slices[0].shape, PyramidWeighting())
    composer.calibrate(1.0, np.full(slices[0].shape[2] if slices[0].ndim == 3 else 1, 0.5))
    for index, (pixels, energy, covered) in enumerate(zip(slices, energies, coverages)):
        composer.add(pixels, energy, float(index), index, covered)
    image = composer.image()
    final = composer.final_image()  # made in the running sums, collapsed strip by strip
    assert np.array_equal(final, image)
    with pytest.raises(RuntimeError, match="final image"):
        composer.image()
    return image, composer.depth(len(slices))


@pytest.mark.parametrize("shape", [(97, 131, 3), (61, 90)])
def test_strips_of_any_height_give_the_whole_band_result(shape, monkeypatch):
    rng = np.random.default_rng(3)
    slices = [(rng.random(shape) * 255).astype(np.float32) for _ in range(4)]
    energies = [(rng.random(shape[:2]) * 50).astype(np.float32) for _ in range(4)]
    coverages = [None, rng.random(shape[:2]) > 0.1, None, rng.random(shape[:2]) > 0.3]
    whole_image, whole_depth = _fused(slices, energies, coverages, 10 ** 6, monkeypatch)
    row_values = int(np.prod(shape[1:]))
    for rows in (1, 5, 11):  # at level 0: narrower than the smoothing's reach, about it, and wider
        image, depth = _fused(slices, energies, coverages, rows * row_values, monkeypatch)
        assert np.array_equal(image, whole_image), rows
        assert np.array_equal(depth, whole_depth, equal_nan=True), rows


@pytest.mark.parametrize("shape,dtype", [((97, 131, 3), np.uint8), ((61, 90), np.uint16), ((2, 3, 3), np.uint8),
                                         ((130, 40, 4), np.float64)])
def test_the_finest_band_made_in_strips_is_the_whole_pyramids(shape, dtype):
    rng = np.random.default_rng(5)
    pixels = (rng.random(shape) * 1000).astype(dtype)
    whole = pyramid.laplacian_pyramid(pixels, 1)[0]  # from a float32 copy of the whole frame
    for strip_values in (1, 3 * shape[1], 10 ** 9):  # rows of one value, strips of 3 rows or more, whole
        coarser = pyramid.reduce_in_strips(pixels, strip_values)
        assert np.array_equal(coarser, pyramid.reduce(pixels.astype(np.float32)))
        finest = multiscale._FinestBand(pixels, coarser)
        for top, bottom in [(0, shape[0]), (0, 1), (1, 2), (shape[0] // 2, shape[0]), (max(0, shape[0] - 5), shape[0])]:
            assert np.array_equal(finest.rows(top, bottom), whole[top:bottom]), (strip_values, top, bottom)


def test_the_callers_energy_is_left_as_it_was_even_unsmoothed():
    # Unsmoothed (evidence_sigma_px 0) the pooled evidence is a view of the caller's own array
    # (np.ascontiguousarray with a dtype gives a new view, not the same object): the noise floor was
    # added into it, and the focus score that the caller then took from it moved (found on review).
    composer = PyramidComposer((40, 50), PyramidWeighting(evidence_sigma_px=0))
    composer.calibrate(1.0, np.array([0.5]))
    energy = np.random.default_rng(2).random((40, 50), dtype=np.float32)
    before = energy.copy()
    composer.add(np.random.default_rng(3).random((40, 50), dtype=np.float32), energy, 0.0, 0)
    assert np.array_equal(energy, before)


def test_reducing_a_large_frame_holds_no_float_copy_of_it():
    """The finest band's reduction of a 5 MP RGB frame once converted the whole frame to float32
    (60 MB) because its strips were counted in reduced values; now a strip reads a few MB."""
    import tracemalloc
    frame = np.random.default_rng(0).integers(0, 255, (1944, 2592, 3), dtype=np.uint8)
    whole = pyramid.reduce(frame.astype(np.float32))
    tracemalloc.start()
    try:
        reduced = pyramid.reduce_in_strips(frame, multiscale.STRIP_VALUES)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(reduced, whole)
    float_copy_bytes = frame.size * 4
    assert peak_bytes - reduced.nbytes < float_copy_bytes / 4, (peak_bytes, reduced.nbytes)


def test_pool_then_fold_is_add_and_fold_needs_its_pool():
    rng = np.random.default_rng(5)
    slices = [(rng.random((40, 50, 3)) * 255).astype(np.uint8) for _ in range(3)]
    energies = [(rng.random((40, 50)) * 50).astype(np.float32) for _ in range(3)]
    composers = [PyramidComposer((40, 50, 3), PyramidWeighting()) for _ in range(2)]
    for composer in composers:
        composer.calibrate(1.0, np.full(3, 0.5))
    for index, (pixels, energy) in enumerate(zip(slices, energies)):
        composers[0].add(pixels, energy, float(index), index)
        composers[1].pool(energy)
        composers[1].fold(pixels, float(index), index)
    assert np.array_equal(composers[0].image(), composers[1].image())
    with pytest.raises(RuntimeError, match="needs the slice's pool"):
        composers[1].fold(slices[0], 3.0, 3)


def test_two_threads_fold_a_large_level_into_the_sums_one_thread_makes(monkeypatch):
    """A level of SHARED_FOLD_VALUES or more is folded by two threads, every other strip each, with a scratch each;
    the running sums (and so image and depth) must be one thread's to the bit."""
    rng = np.random.default_rng(7)
    shape = (97, 131, 3)
    slices = [(rng.random(shape) * 255).astype(np.uint8) for _ in range(4)]
    energies = [(rng.random(shape[:2]) * 50).astype(np.float32) for _ in range(4)]
    coverages = [None, rng.random(shape[:2]) > 0.1, None, None]
    shared = []
    real_side_by_side = multiscale.side_by_side

    def counted(here, beside):
        shared.append(1)
        return real_side_by_side(here, beside)

    monkeypatch.setattr(multiscale, "side_by_side", counted)
    monkeypatch.setattr(multiscale, "kernels_may_run_concurrently", lambda: True)  # (as under TBB)
    monkeypatch.setattr(multiscale, "SHARED_FOLD_VALUES", 1 << 62)
    one_image, one_depth = _fused(slices, energies, coverages, 10 ** 6, monkeypatch)
    assert not shared
    monkeypatch.setattr(multiscale, "SHARED_FOLD_VALUES", 4000)  # levels 0 and 1 (97 x 131 and 49 x 66)
    for strip_rows in (5, 100):  # many strips each, and a level cut in two
        two_image, two_depth = _fused(slices, energies, coverages, strip_rows * shape[1] * 3, monkeypatch)
        assert np.array_equal(two_image, one_image)
        assert np.array_equal(two_depth, one_depth, equal_nan=True)
    assert len(shared) == 2 * 2 * len(slices)  # two levels of each slice, in both runs
