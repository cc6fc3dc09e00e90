"""One contract, every implementation: each focus drive and each camera against its simulator."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import numpy as np
import pytest

from devices.camera import Camera, Frame
from devices.errors import DeviceTimeoutError, PositionOutOfRangeError, UnsupportedFeatureError
from devices.focus_drive import UNITS, FocusDrive
from simulators.optics import DefocusRenderer, Optics
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map
from tests.devices_fixtures import asi_stage, demo_core, optotune_lens, unicore_rig
from tests.devices_fixtures import pycromanager_core  # noqa: F401  (fixture)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.hardware_sim


@contextlib.contextmanager
def drive_named(name, request):
    from devices.micromanager import MicroManagerFocusDrive
    from devices.pycromanager_core import PycroManagerFocusDrive

    if name == "asi":
        with asi_stage() as (stage, _):
            yield stage, [120.5, -40.0, 0.0], 0.1
    elif name == "optotune-dpt":
        with optotune_lens() as (lens, _):
            yield lens, [2.5, -1.0, 0.0], 0.01
    elif name == "optotune-mA":
        with optotune_lens("current") as (lens, _):
            yield lens, [80.0, -35.5, 0.0], 0.1
    elif name == "mmcore-demo":
        with demo_core() as core:
            drive = MicroManagerFocusDrive(core)
            try:
                yield drive, [12.5, -3.0, 0.0], 0.01
            finally:
                drive.close()
    elif name == "unicore-python":
        with unicore_rig() as (_, drive, _, _, _):
            yield drive, [15.0, 4.0, 0.0], 1e-6
    elif name == "pycromanager":
        drive = PycroManagerFocusDrive(request.getfixturevalue("pycromanager_core"))
        yield drive, [7.0, 1.5, 0.0], 0.01
        drive.close()


DRIVES = ["asi", "optotune-dpt", "optotune-mA", "mmcore-demo", "unicore-python", "pycromanager"]


@pytest.mark.parametrize("name", DRIVES)
def test_focus_drive_moves_settles_and_reads_back(name, request):
    with drive_named(name, request) as (drive, positions, tolerance):
        assert isinstance(drive, FocusDrive) and drive.unit in UNITS
        for position in positions:
            drive.move_to(position)
            drive.wait_until_settled(timeout_s=2.0)
            assert drive.position() == pytest.approx(position, abs=tolerance)


@pytest.mark.parametrize("name", DRIVES)
def test_focus_drive_refuses_moves_beyond_its_limits(name, request):
    with drive_named(name, request) as (drive, _, _):
        before = drive.position()
        # (A lens's default limits reach past what it reports it can reach: that range is the one named.)
        beyond = "beyond what the device reports it can reach:" if drive.device_range else "outside the limits"
        with pytest.raises(PositionOutOfRangeError, match=f"{beyond} .* {drive.unit}"):
            drive.move_to(drive.limits.upper + 1)
        assert drive.position() == pytest.approx(before)


@pytest.mark.parametrize("name,resolution", [("asi", 0.1), ("optotune-dpt", 0.005), ("optotune-mA", None)])
def test_a_drive_that_knows_its_smallest_step_makes_it_and_no_smaller_one(name, resolution, request):
    with drive_named(name, request) as (drive, positions, _):
        step = drive.resolution
        assert step == pytest.approx(resolution or drive.max_current_ma / 4096)  # mA: the driver's full scale

        def reached(position):
            drive.move_to(position)
            drive.wait_until_settled(timeout_s=2.0)
            return drive.position()

        here = reached(positions[0])  # on the drive's own grid
        assert reached(here + step) == pytest.approx(here + step)
        assert reached(here + 0.3 * step) == pytest.approx(here)  # a smaller move keeps the setting


def test_drives_that_do_not_know_their_smallest_step_say_none(request):
    with drive_named("unicore-python", request) as (drive, _, _):
        assert drive.resolution is None


def test_asi_stage_takes_time_to_travel_and_reports_busy():
    with asi_stage() as (stage, simulator):
        simulator.speed_um_per_s = 1000.0
        stage.move_to_um(200.0)  # 0.2 s of travel
        started = time.monotonic()
        assert stage._do_is_busy()
        stage.wait_until_settled(timeout_s=2.0)
        assert time.monotonic() - started > 0.1
        assert stage.position_um() == pytest.approx(200.0)


def test_asi_stage_zero_here_and_halt():
    with asi_stage() as (stage, simulator):
        stage.move_to_um(50.0)
        stage.wait_until_settled()
        stage.zero_here()
        assert stage.position_um() == pytest.approx(0.0)
        simulator.speed_um_per_s = 100.0
        stage.move_to_um(500.0)
        stage.halt()
        stage.wait_until_settled(timeout_s=1.0)  # halted: no 5 s of travel left
        assert 0.0 <= stage.position_um() < 500.0


def test_optotune_lens_reads_temperature_and_sets_temperature_limits():
    with optotune_lens() as (lens, simulator):
        assert lens.firmware_type == "A" and lens.max_current_ma == pytest.approx(292.84)
        assert lens.temperature_c() == pytest.approx(simulator.temperature_c, abs=1 / 16)
        low_dpt, high_dpt = lens.set_temperature_limits_c(20.0, 45.0)
        assert low_dpt < 0 < high_dpt
        # focal power on the wire carries the firmware offset: the lens sees the true value
        lens.set_focal_power_dpt(3.25)
        lens.wait_until_settled()
        assert simulator.focal_power_dpt() == pytest.approx(3.25, abs=0.01)


def test_optotune_lens_current_mode_scales_by_the_maximum_current():
    with optotune_lens("current") as (lens, simulator):
        lens.set_current_ma(146.42)  # half of CrMA
        lens.wait_until_settled()
        assert simulator.current_ma() == pytest.approx(146.42, abs=0.1)
        with pytest.raises(UnsupportedFeatureError, match="current mode"):
            lens.set_focal_power_dpt(1.0)


@contextlib.contextmanager
def camera_named(name, request):
    from devices.genicam import GenICamCamera, bundled_producer
    from devices.micromanager import MicroManagerCamera
    from devices.pycromanager_core import PycroManagerCamera

    if name == "mmcore-demo":
        with demo_core() as core:
            camera = MicroManagerCamera(core)
            try:
                yield camera, (512, 512), np.uint16
            finally:
                camera.close()
    elif name == "unicore-specimen":
        with unicore_rig() as (_, _, camera, _, _):
            yield camera, (64, 80, 3), np.uint8
    elif name == "pycromanager":
        camera = PycroManagerCamera(request.getfixturevalue("pycromanager_core"))
        yield camera, (512, 512), np.uint16
        camera.close()
    elif name == "genicam-viky":
        camera = GenICamCamera(bundled_producer(), serial_number="0")
        yield camera, (400, 400, 3), np.uint8
        camera.close()
    elif name == "simulated-optics":
        from simulators.optics_camera import SimulatedCamera, SimulatedStage

        shape = (64, 80)
        stage = SimulatedStage()
        specimen = VirtualSpecimen(load_texture("astronaut", shape), make_height_map("dome", shape, 20.0))
        camera = SimulatedCamera(DefocusRenderer(specimen, Optics(0.3)), lambda: (stage.physical_um(), 1.0))
        yield camera, (64, 80, 3), np.uint8
        camera.close()


CAMERAS = ["mmcore-demo", "unicore-specimen", "pycromanager", "genicam-viky", "simulated-optics"]


@pytest.mark.parametrize("name", CAMERAS)
def test_camera_snaps_a_frame_with_metadata(name, request):
    with camera_named(name, request) as (camera, shape, dtype):
        assert isinstance(camera, Camera)
        frame = camera.snap(timeout_s=5.0)
        assert isinstance(frame, Frame)
        assert frame.pixels.shape == shape and frame.pixels.dtype == dtype
        assert 8 <= frame.bit_depth <= 16 and abs(frame.timestamp_s - time.time()) < 60
        assert frame.pixels.std() > 0  # an image, not a blank buffer


@pytest.mark.parametrize("name", CAMERAS)
def test_camera_sequence_delivers_every_frame(name, request):
    with camera_named(name, request) as (camera, shape, _):
        frames = list(camera.sequence(4, timeout_s=5.0))
        assert len(frames) == 4 and all(f.pixels.shape == shape for f in frames)


# A core freed the moment its sequence has ended, 30 times (run in a process of its own: a failure is a crash).
FREED_AFTER_SEQUENCES = """
import gc
from devices.micromanager import MicroManagerCamera, open_mmcore
from tests.devices_fixtures import demo_config
for _ in range(30):
    core = open_mmcore(demo_config())
    camera = MicroManagerCamera(core)
    assert len(list(camera.sequence(4, timeout_s=5.0))) == 4
    camera.close()
    del core, camera
    gc.collect()
"""


@pytest.mark.slow  # 30 cores opened: ~10-25 s
def test_a_core_freed_as_soon_as_its_sequence_ends_does_not_crash():
    """Micro-Manager's demo camera says its sequence is over (and stopSequenceAcquisition returns at once) while
    its own thread still tells the core so: the sequence waits for that thread. Without the wait 3 such processes
    in 3 segfaulted within 30 sequences (in CDemoCamera::OnThreadExiting, while ~CMMCore ran in the main thread)."""
    run = subprocess.run([sys.executable, "-X", "faulthandler", "-c", FREED_AFTER_SEQUENCES], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("name", CAMERAS)
def test_camera_exposure_is_set_or_clearly_unsupported(name, request):
    with camera_named(name, request) as (camera, _, _):
        if name == "genicam-viky":
            with pytest.raises(UnsupportedFeatureError, match="has no exposure feature"):
                camera.set_exposure_ms(20.0)
            assert camera.exposure_ms is None
        else:
            camera.set_exposure_ms(20.0)
            assert camera.exposure_ms == pytest.approx(20.0)
            assert camera.snap().exposure_ms == pytest.approx(20.0)


@pytest.mark.parametrize("name", [c for c in CAMERAS if c != "genicam-viky"])  # (viky has no exposure to set)
def test_an_exposure_longer_than_the_timeout_is_waited_out_and_the_timeout_runs_beyond_it(name, request):
    """One rule for every camera (devices.camera.frame_wait_s): a 6 s exposure with camera.timeout_s 5 is
    waited for 11 s; the simulated camera lost every such frame, and a Micro-Manager sequence every frame.
    Here a 300 ms exposure with a 0.2 s timeout (frames come 3-4 ms after their exposure on an idle machine; a 0.05 s
    timeout failed once beside a busy CI run): the timeout alone would give up before the frame."""
    with camera_named(name, request) as (camera, shape, _):
        camera.set_exposure_ms(300.0)
        assert camera.snap(timeout_s=0.2).pixels.shape == shape
        frames = list(camera.sequence(2, timeout_s=0.2))
        assert [frame.pixels.shape for frame in frames] == [shape, shape]


def test_a_frame_later_than_its_exposure_and_the_timeout_says_both():
    with camera_named("simulated-optics", None) as (camera, _, _):
        camera.set_exposure_ms(200.0)
        camera.faults.delay_s = 0.5
        with pytest.raises(DeviceTimeoutError, match=r"no frame within 0.25 s \(200 ms exposure \+ 0.05 s timeout\)"):
            camera.snap(timeout_s=0.05)


def test_specimen_camera_renders_sharper_where_the_stage_focuses():
    with unicore_rig() as (_, drive, camera, _, _):
        sharpness = []
        for z_um in (-30.0, 10.0, 50.0):
            drive.move_to(z_um)
            drive.wait_until_settled()
            pixels = camera.snap().pixels.astype(float).mean(axis=2)
            sharpness.append(np.abs(np.diff(pixels, axis=1)).mean())
        assert sharpness[1] > sharpness[0] and sharpness[1] > sharpness[2]


def test_genicam_pixel_format_and_camera_selection():
    from devices.genicam import GenICamCamera, bundled_producer

    camera = GenICamCamera(bundled_producer(), model="Viky", index=2, pixel_format="Mono8")
    try:
        assert camera.pixel_format == "Mono8"
        assert camera.snap().pixels.ndim == 2
        with pytest.raises(UnsupportedFeatureError, match="'Mono16' is not one of"):
            camera.set_pixel_format("Mono16")
    finally:
        camera.close()
