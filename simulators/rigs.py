"""The simulators' rig openers and ground truths, registered in ``acquisition.rig_registry``.

Importing this module registers them: ``run_session.py`` does, and so do the tests and
benchmarks that open simulated rigs (see ``acquisition.rig_registry`` for why there). Serial simulators are met through
the real drivers on their pseudo-terminals, Micro-Manager simulators through the real MMCore; the
simulated camera renders a virtual specimen through whichever simulated focus was opened before
it (``RigContext.shared["optical_state"]``: () -> (focus in µm, magnification)).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from acquisition.mda_plan import channel_names
from acquisition.profile import FaultSettings, Profile
from acquisition.rig_openers import (open_asi_stage, open_micromanager_camera, open_micromanager_focus,
                                     open_optotune_lens, set_profile_properties, stage_limits)
from acquisition.rig_registry import Opened, RigContext, register_opener
from simulators.optics import CameraNoise, DefocusRenderer, Optics, TunableLensOptics
from simulators.serial_device import PtySerialDevice
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

MDA_CHANNEL_GROUP = "Channel"
SIMULATED_SEQUENCE_MAX_LENGTH = 1024  # positions a simulated sequencing stage holds, as a piezo controller's table


def commit_fault(simulator: Any, settings: FaultSettings) -> None:
    """Have ``simulator`` commit the faults ``settings`` (a profile's faults: entry)."""
    faults = simulator.faults
    faults.times = settings.times
    faults.silent, faults.garbage = settings.silent, settings.garbage
    faults.error_reply, faults.delay_s = settings.error_reply, settings.delay_s
    faults.drop_frames = settings.drop_frames
    if settings.disconnect:
        if isinstance(simulator, PtySerialDevice):
            simulator.disconnect()  # the port closes under the driver
            faults.fired = True     # done: whatever the driver sends next fails
        else:
            faults.disconnected = True


class SimulatorFaults:
    """Commits a profile's faults on ``simulator`` (an ``acquisition.rig_registry.FaultCommitter``)."""

    def __init__(self, simulator: Any):
        self.simulator = simulator
        self._started = False

    def commit(self, settings: FaultSettings) -> None:
        if self._started:  # a schedule replaced by a sequence started anew may have started it already
            return
        self._started = True
        commit_fault(self.simulator, settings)

    def commit_at_frame(self, settings: FaultSettings, frames_before: int) -> None:
        self.simulator.faults.schedule(frames_before, lambda: self.commit(settings))

    def started(self) -> bool:
        return self._started

    def fired(self) -> bool:
        return self.simulator.faults.fired


def _simulated(part: Opened, simulator: Any) -> Opened:
    """``part`` played by ``simulator``, which commits the profile's faults for it."""
    part.simulator = simulator
    part.faults = SimulatorFaults(simulator)
    return part


def _closing_both(part: Opened, simulator_close) -> Opened:
    """The driver closes first, then the simulator it talks to."""
    driver_close = part.close

    def close() -> None:
        try:
            driver_close()
        finally:
            simulator_close()

    part.close = close
    return part


def _height_range_um(renderer: DefocusRenderer) -> tuple[float, float]:
    height_um = renderer.specimen.height_um
    return float(height_um.min()), float(height_um.max())


class FixedTruth:
    """A ground truth that does not depend on how the frame was taken."""

    def __init__(self, truth: np.ndarray, renderer: DefocusRenderer | None = None):
        self.truth = truth
        self.renderer = renderer

    def for_frame(self, frame_metadata: dict[str, Any]) -> np.ndarray:
        return self.truth

    def height_range_um(self) -> tuple[float, float] | None:
        return None if self.renderer is None else _height_range_um(self.renderer)


class RenderedTruth:
    """The optics camera's truth, magnified as the frame was (a breathing tunable lens)."""

    def __init__(self, camera):
        self.camera = camera
        self.unmagnified = camera.truth()

    def for_frame(self, frame_metadata: dict[str, Any]) -> np.ndarray:
        magnification = frame_metadata.get("magnification", 1.0)
        return self.unmagnified if magnification == 1.0 else self.camera.truth(magnification)

    def height_range_um(self) -> tuple[float, float]:
        return _height_range_um(self.camera.renderer)


def specimen_renderer(profile: Profile) -> DefocusRenderer:
    spec = profile.camera.specimen
    shape = (spec.height_px, spec.width_px)
    specimen = VirtualSpecimen(load_texture(spec.texture, shape, color=spec.color),
                               make_height_map(spec.surface, shape, spec.depth_um, np.random.default_rng(spec.seed)))
    return DefocusRenderer(specimen, Optics(blur_px_per_um=profile.camera.optics.blur_px_per_um))


def camera_noise(profile: Profile) -> CameraNoise:
    n = profile.camera.noise
    return CameraNoise(full_well_e=n.full_well_e, read_noise_e=n.read_noise_e, bit_depth=n.bit_depth)


# -- focus drives --
def _open_simulated_stage(context: RigContext) -> Opened:
    from simulators.optics_camera import SimulatedStage

    stage = SimulatedStage(context.profile.focus.speed_um_per_s, stage_limits(context.profile))
    context.shared["optical_state"] = lambda: (stage.physical_um(), 1.0)
    return _simulated(Opened(stage, stage.close), stage)


def _open_asi_simulator(context: RigContext) -> Opened:
    from simulators.asi_stage import AsiStageSimulator

    focus = context.profile.focus
    simulator = AsiStageSimulator(speed_um_per_s=focus.speed_um_per_s, baudrate=focus.baudrate)
    try:
        part = open_asi_stage(context, simulator.port)
    except BaseException:
        simulator.close()
        raise
    context.shared["optical_state"] = lambda: (simulator.position_um(), 1.0)
    return _simulated(_closing_both(part, simulator.close), simulator)


def _open_optotune_simulator(context: RigContext) -> Opened:
    from simulators.optotune_lens import OptotuneLensSimulator

    simulator = OptotuneLensSimulator(baudrate=context.profile.focus.baudrate)
    try:
        part = open_optotune_lens(context, simulator.port)
    except BaseException:
        simulator.close()
        raise
    optics = context.profile.camera.optics
    lens_optics = TunableLensOptics(optics.um_per_dpt, optics.breathing_per_dpt)
    context.shared["optical_state"] = lambda: (lens_optics.focus_um(simulator.focal_power_dpt()),
                                               lens_optics.magnification(simulator.focal_power_dpt()))
    return _simulated(_closing_both(part, simulator.close), simulator)


def _open_micromanager_simulated_focus(context: RigContext) -> Opened:
    stage = context.shared["mm_stage"]
    context.shared["optical_state"] = lambda: (stage.focus_um(), 1.0)
    return _simulated(open_micromanager_focus(context), stage)


# -- cameras --
def _open_optics_camera(context: RigContext) -> Opened:
    from simulators.optics_camera import SimulatedCamera

    optical_state = context.shared.get("optical_state")
    if optical_state is None:
        raise ValueError("a simulated camera needs a simulated focus drive to look through "
                         "(focus.driver: simulated, or a serial drive with port: simulated)")
    profile = context.profile
    camera = SimulatedCamera(specimen_renderer(profile), optical_state, camera_noise(profile),
                             exposure_ms=profile.camera.exposure_ms or 10.0,
                             full_scale_exposure_ms=profile.camera.noise.full_scale_exposure_ms)
    part = _simulated(Opened(camera, camera.close), camera)
    part.ground_truth = RenderedTruth(camera)
    return part


def _open_micromanager_simulated_camera(context: RigContext) -> Opened:
    simulator = context.shared["mm_camera"]
    part = _simulated(open_micromanager_camera(context), simulator)
    part.ground_truth = FixedTruth(simulator.camera_noise.ideal(simulator.renderer.specimen.texture),
                                   simulator.renderer)
    return part


# -- Micro-Manager cores with Python devices --
def _open_micromanager_simulated_core(context: RigContext) -> Opened:
    from devices.micromanager import open_mmcore
    from simulators.micromanager_devices import SimulatedZStage, SpecimenCamera

    profile = context.profile
    settings = profile.micromanager
    stage = SimulatedZStage(speed_um_per_s=profile.focus.speed_um_per_s,
                            sequence_max_length=SIMULATED_SEQUENCE_MAX_LENGTH if settings.simulated_sequencing else 0)
    # The camera's exposure-out line is wired to the stage's trigger input (used when it sequences).
    camera = SpecimenCamera(specimen_renderer(profile), stage.focus_um, camera_noise(profile),
                            trigger_out=stage.trigger)
    context.shared.update(mm_stage=stage, mm_camera=camera)
    config = settings.config
    if config == "demo":
        from acquisition.rig_openers import demo_config_path

        config = demo_config_path()
    core = open_mmcore(config, python_devices={"SimZ": stage, "SimCamera": camera})
    core.setFocusDevice("SimZ")
    core.setCameraDevice("SimCamera")
    set_profile_properties(context, core)
    return Opened(core, lambda: None)


class SlideTruth:
    """The slide simulator's truth: the noise-free all-in-focus image of a field, in a channel."""

    def __init__(self, slide):
        self.slide = slide

    def __call__(self, x_um: float | None, y_um: float | None, channel_index: int) -> np.ndarray:
        return self.slide.truth(self.slide.field_at(x_um or 0.0, y_um or 0.0), channel_index)


def _open_slide_core(context: RigContext) -> Opened:
    """A UniMMCore around the slide simulator: Z and XY stages, a filter wheel whose labels are
    the plan's channels (config group "Channel"), and a camera rendering the field under the stage."""
    from devices.micromanager import open_mmcore
    from simulators.micromanager_devices import SimulatedZStage
    from simulators.micromanager_slide import FilterWheel, SimulatedXYStage, SlideCamera

    profile = context.profile
    spec = profile.camera.specimen
    channels = (channel_names(profile.mda) if profile.mda is not None else []) or ["none"]
    z = SimulatedZStage(speed_um_per_s=profile.focus.speed_um_per_s)
    xy, wheel = SimulatedXYStage(), FilterWheel(channels)
    slide = SlideCamera((spec.height_px, spec.width_px), spec.depth_um, z.focus_um, xy.get_position_um,
                        wheel.get_state, Optics(blur_px_per_um=profile.camera.optics.blur_px_per_um),
                        camera_noise(profile), spec.surface, spec.seed)
    context.shared.update(mm_stage=z, mm_camera=slide)  # (as the single-stack core leaves its own: their faults)
    core = open_mmcore(python_devices={"SimZ": z, "SimXY": xy, "Wheel": wheel, "SimCamera": slide})
    core.setFocusDevice("SimZ")
    core.setXYStageDevice("SimXY")
    core.setCameraDevice("SimCamera")
    for channel in channels:
        core.defineConfig(MDA_CHANNEL_GROUP, channel, "Wheel", "Label", channel)
    core.setChannelGroup(MDA_CHANNEL_GROUP)
    try:
        set_profile_properties(context, core)  # (an MDA on the slide left them unset, without a word)
    except BaseException:
        core.unloadAllDevices()
        raise
    return Opened(core, core.unloadAllDevices, simulator=slide, ground_truth=SlideTruth(slide))


register_opener("focus", "simulated", _open_simulated_stage, simulated=True)
register_opener("focus", "asi", _open_asi_simulator, simulated=True)
register_opener("focus", "optotune", _open_optotune_simulator, simulated=True)
register_opener("focus", "micromanager", _open_micromanager_simulated_focus, simulated=True)
register_opener("camera", "simulated", _open_optics_camera, simulated=True)
register_opener("camera", "micromanager", _open_micromanager_simulated_camera, simulated=True)
register_opener("core", "micromanager", _open_micromanager_simulated_core, simulated=True)
register_opener("mda_core", "micromanager", _open_slide_core, simulated=True)
