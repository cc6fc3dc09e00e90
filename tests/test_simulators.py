"""Simulators on their own: serial simulators as commands, and the optics' physics."""
import signal
import subprocess
import sys

import numpy as np
import pytest

from simulators.optics import DefocusRenderer, Optics, TunableLensOptics, magnify
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map
from tests.conftest import REPO_ROOT, with_default_sigint

pytestmark = pytest.mark.hardware_sim


@pytest.mark.parametrize("module,driver", [("simulators.asi_stage", "asi"), ("simulators.optotune_lens", "lens")])
def test_serial_simulator_runs_as_a_command_and_serves_its_port(module, driver):
    from devices.asi_stage import AsiZStage
    from devices.optotune_lens import OptotuneLens

    process = subprocess.Popen([sys.executable, "-m", module], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                               preexec_fn=with_default_sigint)
    try:
        port = process.stdout.readline().split()[-1]
        assert port.startswith("/dev/pts/")
        device = AsiZStage(port) if driver == "asi" else OptotuneLens(port)
        device.move_to(1.5)
        device.wait_until_settled()
        assert device.position() == pytest.approx(1.5, abs=0.01)
        device.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_defocus_blur_grows_with_distance_from_the_surface():
    shape = (64, 64)
    specimen = VirtualSpecimen(load_texture("gravel", shape, color=False), make_height_map("plane", shape, 0.0))
    renderer = DefocusRenderer(specimen, Optics(blur_px_per_um=0.5))
    detail = [np.abs(np.diff(renderer.render(z), axis=1)).mean() for z in (0.0, 2.0, 6.0, 12.0)]
    assert detail == sorted(detail, reverse=True)
    np.testing.assert_allclose(renderer.render(0.0), specimen.texture, atol=1e-6)


def test_focus_breathing_magnifies_about_the_centre():
    image = np.zeros((101, 101), np.float32)
    image[50, 90] = 1.0  # a point 40 px right of the centre
    lens = TunableLensOptics(um_per_dpt=10.0, breathing_per_dpt=0.01)
    zoomed = magnify(image, lens.magnification(5.0))  # 5% larger
    row, col = np.unravel_index(np.argmax(zoomed), zoomed.shape)
    assert (row, col) == (50, 92)
    assert lens.focus_um(2.0) == pytest.approx(20.0)


def test_defocus_psf_is_a_normalised_kernel_that_widens_with_defocus():
    from simulators.psf import DefocusPSF

    psf = DefocusPSF(radius_px_per_um=0.5, disk_fraction=0.7, base_sigma_px=0.5, spherical=0.4)
    widths = []
    for defocus_um in (0.0, 4.0, 12.0, -12.0):
        kernel = psf.kernel(defocus_um)
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert kernel.sum() == pytest.approx(1.0) and kernel.min() >= 0
        half = kernel.shape[0] // 2
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
        widths.append(float(np.sqrt((kernel * (xx ** 2 + yy ** 2)).sum())))
    assert widths[0] < 1.0 < widths[1] < widths[2]
    # Spherical aberration: the two sides of focus blur alike in size but not in shape.
    assert widths[3] == pytest.approx(widths[2], rel=0.1)
    assert not np.allclose(psf.kernel(12.0), psf.kernel(-12.0), atol=1e-4)


@pytest.mark.parametrize("kind", ["opaque", "absorbing", "emitting"])
def test_layered_render_in_focus_everywhere_is_the_truth(kind):
    from simulators.layered import LayeredRenderer, LayeredSpecimen
    from simulators.psf import DefocusPSF

    rng = np.random.default_rng(0)
    content = rng.uniform(0.1, 0.9, (64, 80, 3)).astype(np.float32)
    flat = np.full((64, 80), 5.0, np.float32)
    specimen = LayeredSpecimen(kind, content, flat, background=0.8 if kind == "absorbing" else 0.05)
    renderer = LayeredRenderer(specimen, DefocusPSF(base_sigma_px=0.0))  # no blur at best focus
    np.testing.assert_allclose(renderer.render(5.0), np.clip(specimen.in_focus(), 0, 1), atol=2e-3)
    blurred = renderer.render(25.0)
    assert np.std(blurred) < 0.5 * np.std(specimen.in_focus())


def _camera_on_a_grey_card(radiance: float, exposure_ms: float, bit_depth: int = 12):
    """The simulated camera looking at a flat card of ``radiance`` (in focus), at ``exposure_ms``."""
    from simulators.optics import CameraNoise
    from simulators.optics_camera import SimulatedCamera

    shape = (64, 64)
    card = VirtualSpecimen(np.full(shape, radiance, np.float32), np.zeros(shape, np.float32))
    return SimulatedCamera(DefocusRenderer(card), lambda: (0.0, 1.0), CameraNoise(bit_depth=bit_depth),
                           exposure_ms=exposure_ms)


def test_the_simulated_camera_collects_twice_the_light_in_twice_the_exposure():
    """The simulated camera gave the same image at any exposure: a profile's exposure did not matter, so neither
    auto-exposure nor saturation could be rehearsed. Twice the exposure now gives twice the signal, with the shot
    noise of twice the electrons (its variance doubles too); the driver's set_exposure_ms is what it follows."""
    camera = _camera_on_a_grey_card(0.2, exposure_ms=5.0)
    short = camera.snap().pixels.astype(np.float64)
    camera.set_exposure_ms(10.0)
    frame = camera.snap()
    long = frame.pixels.astype(np.float64)
    assert frame.exposure_ms == 10.0
    assert long.mean() / short.mean() == pytest.approx(2.0, rel=0.01)
    assert long.var() / short.var() == pytest.approx(2.0, rel=0.25)  # (shot noise dominates read noise here)
    assert camera.truth().mean() == pytest.approx(0.2 * 4095, abs=1)  # at 10 ms the card's radiance as it is


def test_the_simulated_camera_saturates_at_its_bit_depth():
    """A bright card exposed 4x longer than it takes to fill the well clips at 4095 (12 bits), never above."""
    frame = _camera_on_a_grey_card(0.8, exposure_ms=40.0).snap()
    assert frame.pixels.dtype == np.uint16 and frame.bit_depth == 12
    assert (frame.pixels == 4095).all()


def test_the_simulated_float_camera_saturates_at_one():
    """The float camera (bit_depth 0) at 10 s, its full scale 10 ms, gave frames up to 1000.0 (and a truth of
    1000 x the card), where its frames are float32 in [0, 1] and PSNR takes a peak of 1.0. A full well reads 1.0."""
    camera = _camera_on_a_grey_card(0.8, exposure_ms=10_000.0, bit_depth=0)
    frame = camera.snap()
    assert frame.pixels.dtype == np.float32
    assert (frame.pixels == 1.0).all()
    assert (camera.truth() == 1.0).all()
    # Below full scale the signal is as it was: a dim card at a tenth of the exposure, not clipped.
    camera.set_exposure_ms(1.0)
    assert camera.snap().pixels.mean() == pytest.approx(0.08, rel=0.01)


def test_the_simulated_float_camera_at_its_full_scale_is_not_clipped():
    """At the full-scale exposure (the shipped profiles' 10 ms) the float camera's frames are those of before it
    modelled exposure: a bright card's noise goes past 1.0, unclipped, so that its mean stays that of the card."""
    frame = _camera_on_a_grey_card(1.0, exposure_ms=10.0, bit_depth=0).snap()
    assert frame.pixels.max() > 1.0
    assert frame.pixels.mean() == pytest.approx(1.0, abs=1e-3)
