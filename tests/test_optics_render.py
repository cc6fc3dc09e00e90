"""The optics simulator's fast paths against their definitions: the defocus ladder, the camera noise."""
import numpy as np
import pytest
from scipy import ndimage, stats

from simulators.optics import CameraNoise, DefocusRenderer, Optics
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map


def reference_render(specimen: VirtualSpecimen, optics: Optics, sigmas_px: np.ndarray, focus_um: float) -> np.ndarray:
    """The renderer's definition in plain numpy: scipy's Gaussian at each ladder sigma, blended per pixel."""
    texture = specimen.texture
    spatial = (1, 1, 0) if texture.ndim == 3 else (1, 1)
    levels = np.stack([texture if s == 0 else ndimage.gaussian_filter(texture, [s * k for k in spatial], mode="reflect")
                       for s in sigmas_px]).astype(np.float32)
    sigma = np.minimum(np.abs(specimen.height_um - np.float32(focus_um)) * optics.blur_px_per_um, sigmas_px[-1])
    upper = np.clip(np.searchsorted(sigmas_px, sigma, side="right"), 1, len(sigmas_px) - 1)
    lower = upper - 1
    t = np.clip((sigma - sigmas_px[lower]) / (sigmas_px[upper] - sigmas_px[lower]), 0, 1)
    rows, cols = np.indices(sigma.shape)
    if texture.ndim == 3:
        t = t[:, :, None]
    return levels[lower, rows, cols] * (1 - t) + levels[upper, rows, cols] * t


@pytest.mark.parametrize("color,surface,shape", [(True, "dome", (96, 128)), (False, "irregular", (70, 90))])
def test_render_matches_the_definition_at_every_focus(color, surface, shape):
    specimen = VirtualSpecimen(load_texture("astronaut", shape, color=color),
                               make_height_map(surface, shape, 30.0, np.random.default_rng(1)))
    optics = Optics(blur_px_per_um=0.5)
    renderer = DefocusRenderer(specimen, optics)
    for focus_um in (-10.0, 0.0, 3.3, 15.0, 29.9, 80.0):  # below, on, inside, above and far past the surface
        rendered = renderer.render(focus_um)
        assert rendered.dtype == np.float32 and rendered.shape == specimen.texture.shape
        np.testing.assert_allclose(rendered, reference_render(specimen, optics, renderer._sigmas, focus_um), atol=2e-6)


def electrons(camera: CameraNoise, mean_e: float, n: int = 400_000, seed: int = 0) -> np.ndarray:
    """What a float camera (bit_depth 0) counts from a flat field of ``mean_e`` expected electrons."""
    radiance = np.full((n // 400, 400), mean_e / camera.full_well_e, np.float32)
    return camera.expose(radiance, np.random.default_rng(seed)).astype(np.float64).ravel() * camera.full_well_e


@pytest.mark.parametrize("mean_e", [3.0, 40.0, 99.0, 101.0, 2_000.0, 19_000.0])
def test_shot_and_read_noise_have_the_physical_mean_and_variance(mean_e):
    camera = CameraNoise(full_well_e=20_000, read_noise_e=5.0, bit_depth=0)
    counted = electrons(camera, mean_e)
    variance = mean_e + 5.0 ** 2
    assert counted.mean() == pytest.approx(mean_e, abs=5 * np.sqrt(variance / counted.size))
    assert counted.var() == pytest.approx(variance, rel=0.02)
    # Above 100 electrons shot noise is its Gaussian limit: it lacks the Poisson skewness, under 0.08 there.
    assert stats.skew(counted) == pytest.approx(mean_e / variance ** 1.5, abs=0.08)


def test_few_electrons_are_counted_as_poisson_exactly():
    camera = CameraNoise(full_well_e=1000, read_noise_e=0.0, bit_depth=0)
    counted = np.rint(electrons(camera, 4.0)).astype(int)
    frequencies = np.bincount(counted, minlength=20)[:20] / counted.size
    np.testing.assert_allclose(frequencies, stats.poisson.pmf(np.arange(20), 4.0), atol=0.003)


@pytest.mark.parametrize("mean_e", [10.0, 30.0, 70.0])
def test_more_electrons_are_counted_as_poisson_exactly_too(mean_e):
    """From 10 electrons up counts come by transformed rejection instead of inversion: the same pmf."""
    camera = CameraNoise(full_well_e=1000, read_noise_e=0.0, bit_depth=0)
    counted = np.rint(electrons(camera, mean_e)).astype(int)
    k = np.arange(int(mean_e - 4 * np.sqrt(mean_e)), int(mean_e + 4 * np.sqrt(mean_e)))
    frequencies = np.bincount(counted, minlength=k[-1] + 1)[k] / counted.size
    np.testing.assert_allclose(frequencies, stats.poisson.pmf(k, mean_e), atol=0.003)


@pytest.mark.parametrize("camera", [CameraNoise(), CameraNoise(bit_depth=12), CameraNoise(bit_depth=0),
                                    CameraNoise(full_well_e=0, read_noise_e=0)])
@pytest.mark.parametrize("color", [True, False])
def test_rendered_and_exposed_a_row_at_a_time_is_the_same_frame(camera, color):
    shape = (60, 70)
    specimen = VirtualSpecimen(load_texture("astronaut", shape, color=color), make_height_map("dome", shape, 30.0))
    renderer = DefocusRenderer(specimen, Optics(blur_px_per_um=0.5))
    for focus_um in (-5.0, 12.0):
        frame = renderer.exposed(camera, focus_um, np.random.default_rng(5))
        assert frame.dtype == camera.dtype and frame.shape == specimen.texture.shape
        np.testing.assert_array_equal(frame, camera.expose(renderer.render(focus_um), np.random.default_rng(5)))


def test_noise_is_gaussian_in_its_tails():
    counted = electrons(CameraNoise(full_well_e=20_000, read_noise_e=100.0, bit_depth=0), 10_000.0) - 10_000.0
    z = counted / np.sqrt(10_000.0 + 100.0 ** 2)
    for k in (1.0, 2.0, 3.0):
        assert np.mean(np.abs(z) > k) == pytest.approx(2 * stats.norm.sf(k), rel=0.05)


def test_noise_is_independent_between_pixels_rows_and_frames():
    camera = CameraNoise(full_well_e=20_000, read_noise_e=5.0, bit_depth=0)
    radiance = np.full((400, 500, 3), 0.5, np.float32)
    rng = np.random.default_rng(7)
    first, second = (camera.expose(radiance, rng) - 0.5 for _ in range(2))
    pairs = ((first[:, :-1], first[:, 1:]), (first[:-1], first[1:]), (first[..., 0], first[..., 1]), (first, second))
    for a, b in pairs:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01


def test_frames_are_reproducible_from_the_generator_seed():
    camera = CameraNoise()
    radiance = np.random.default_rng(0).random((50, 60, 3), dtype=np.float32)
    same = [camera.expose(radiance, np.random.default_rng(3)) for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], camera.expose(radiance, np.random.default_rng(4)))


@pytest.mark.parametrize("bit_depth", [8, 12, 16, 0])
def test_without_noise_a_frame_is_the_ideal_frame(bit_depth):
    camera = CameraNoise(full_well_e=0, read_noise_e=0, bit_depth=bit_depth)
    radiance = np.random.default_rng(0).uniform(-0.1, 1.1, (40, 50)).astype(np.float32)
    frame = camera.expose(radiance, np.random.default_rng(0))
    assert frame.dtype == camera.dtype
    np.testing.assert_array_equal(frame, camera.ideal(np.clip(radiance, 0, 1)))
