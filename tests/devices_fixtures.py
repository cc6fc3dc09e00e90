"""Every driver, opened against a simulator at its real interface (shared by the device tests)."""
from __future__ import annotations

import contextlib
import os

import pytest

from simulators.optics import DefocusRenderer, Optics
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map


def demo_config() -> str:
    import mm_test_adapters

    return os.path.join(mm_test_adapters.device_adapter_path(), "MMConfig_demo.cfg")


def small_demo_core(width_px: int = 128, height_px: int = 96):
    """The real MMCore on the demo config, its camera cropped small (quick MDAs)."""
    from devices.micromanager import open_mmcore

    core = open_mmcore(demo_config())
    core.setProperty("Camera", "OnCameraCCDXSize", width_px)
    core.setProperty("Camera", "OnCameraCCDYSize", height_px)
    return core


@contextlib.contextmanager
def asi_stage():
    from devices.asi_stage import AsiZStage
    from simulators.asi_stage import AsiStageSimulator

    with AsiStageSimulator() as simulator:
        stage = AsiZStage(simulator.port, timeout_s=0.5)
        try:
            yield stage, simulator
        finally:
            stage.close()


@contextlib.contextmanager
def optotune_lens(mode="focal power"):
    from devices.optotune_lens import OptotuneLens
    from simulators.optotune_lens import OptotuneLensSimulator

    with OptotuneLensSimulator() as simulator:
        lens = OptotuneLens(simulator.port, mode=mode, timeout_s=0.5)
        try:
            yield lens, simulator
        finally:
            lens.close()


@contextlib.contextmanager
def unicore_rig(shape=(64, 80)):
    """UniMMCore with the simulators' Python devices: a Z stage and a camera rendering the specimen."""
    from devices.micromanager import MicroManagerCamera, MicroManagerFocusDrive, open_mmcore
    from simulators.micromanager_devices import SimulatedZStage, SpecimenCamera

    specimen = VirtualSpecimen(load_texture("astronaut", shape), make_height_map("dome", shape, 20.0))
    stage = SimulatedZStage()
    camera = SpecimenCamera(DefocusRenderer(specimen, Optics(0.3)), stage.focus_um)
    core = open_mmcore(python_devices={"SimZ": stage, "SimCam": camera})
    core.setFocusDevice("SimZ")
    core.setCameraDevice("SimCam")
    drive, cam = MicroManagerFocusDrive(core), MicroManagerCamera(core)
    try:
        yield core, drive, cam, stage, camera
    finally:
        drive.close()
        cam.close()


@contextlib.contextmanager
def demo_core():
    """The real MMCore on the demo config, its devices unloaded at the end: not whenever the garbage collector
    frees it, inside a later test."""
    from devices.micromanager import open_mmcore

    core = open_mmcore(demo_config())
    try:
        yield core
    finally:
        core.unloadAllDevices()


@pytest.fixture(scope="session")
def pycromanager_core():
    """pycromanager's headless Python backend on the demo adapters (one per test session)."""
    import mm_test_adapters

    from devices.pycromanager_core import connect, stop_headless

    core = connect(mm_test_adapters.device_adapter_path(), demo_config())
    yield core
    stop_headless()
