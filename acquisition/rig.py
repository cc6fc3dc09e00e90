"""Opening the devices a profile names, simulators included, and closing them again.

The only place that maps profile settings to driver classes. Simulated parts (a serial
simulator on a pseudo-terminal, UniMMCore Python devices, the optics camera) start here
when the profile asks for them, and the simulated camera is wired to the simulated
focus so that it renders what that focus would show.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import numpy as np

from acquisition.profile import Profile
from devices.camera import Camera
from devices.focus_drive import FocusDrive, FocusLimits

SIMULATED_PORT = "simulated"


@dataclass
class Rig:
    """The opened devices, and what the simulators know (``truth``: the all-in-focus frame)."""

    camera: Camera
    focus: FocusDrive
    truth: np.ndarray | None = None
    simulators: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    pending_faults: list[tuple[str, Any]] = field(default_factory=list)  # (role, FaultSettings) of the profile
    faults_injected: list[dict] = field(default_factory=list)            # for the session report

    def arm_faults(self, acquired_slices: int) -> None:
        """Start the profile's faults whose time has come, ``acquired_slices`` slices into the session."""
        for role, settings in list(self.pending_faults):
            if acquired_slices >= settings.after_slices:
                self.pending_faults.remove((role, settings))
                commit_fault(self.simulators, role, settings)
                self.faults_injected.append({"device": role, "after_slices": acquired_slices,
                                             **settings.model_dump(exclude_defaults=True)})

    def truth_for(self, reference_metadata: dict) -> np.ndarray | None:
        """The all-in-focus frame as the reference (first) slice frames it: fused images are
        in that frame, and a breathing lens magnifies it."""
        magnification = reference_metadata.get("magnification", 1.0)
        camera = self.simulators.get("camera")
        if camera is None or magnification == 1.0:
            return self.truth
        return camera.truth(magnification)

    def truth_range_um(self) -> tuple[float, float] | None:
        """The simulated specimen's lowest and highest surface point (µm, the focus's frame); None for real ones."""
        camera = self.simulators.get("camera") or self.simulators.get("mm_camera")
        if camera is None:
            return None
        height_um = camera.renderer.specimen.height_um
        return float(height_um.min()), float(height_um.max())

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):  # closing must never hide the session's own error
                close()
        self._closers.clear()


# Where the simulators of each role sit in Rig.simulators, whichever profile opened them.
SIMULATOR_KEYS = {"focus": ("stage", "lens", "mm_stage"), "camera": ("camera", "mm_camera")}


def commit_fault(simulators: dict[str, Any], role: str, settings) -> None:
    """Have the simulator playing ``role`` commit the faults ``settings`` (a profile's FaultSettings)."""
    from simulators.serial_device import PtySerialDevice

    simulator = next(simulators[key] for key in SIMULATOR_KEYS[role] if key in simulators)
    faults = simulator.faults
    faults.times = settings.times
    faults.silent, faults.garbage = settings.silent, settings.garbage
    faults.error_reply, faults.delay_s = settings.error_reply, settings.delay_s
    faults.drop_frames = settings.drop_frames
    if settings.disconnect:
        if isinstance(simulator, PtySerialDevice):
            simulator.disconnect()  # the port closes under the driver
        else:
            faults.disconnected = True


def _specimen_renderer(profile: Profile):
    from simulators.optics import DefocusRenderer, Optics
    from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

    spec = profile.camera.specimen
    shape = (spec.height_px, spec.width_px)
    specimen = VirtualSpecimen(load_texture(spec.texture, shape, color=spec.color),
                               make_height_map(spec.surface, shape, spec.depth_um, np.random.default_rng(spec.seed)))
    return DefocusRenderer(specimen, Optics(blur_px_per_um=profile.camera.optics.blur_px_per_um))


def _noise(profile: Profile):
    from simulators.optics import CameraNoise

    n = profile.camera.noise
    return CameraNoise(full_well_e=n.full_well_e, read_noise_e=n.read_noise_e, bit_depth=n.bit_depth)


def _limits(profile: Profile, default: FocusLimits | None) -> FocusLimits | None:
    if profile.focus.limits is None:
        return default
    return FocusLimits(profile.focus.limits[0], profile.focus.limits[1], profile.focus.unit)


def open_rig(profile: Profile) -> Rig:
    """Open camera and focus drive; on any failure, close what was opened and re-raise."""
    opened: list[Callable[[], None]] = []
    try:
        return _open(profile, opened)
    except BaseException:
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                close()
        raise


def _open(profile: Profile, opened: list) -> Rig:  # noqa: C901 -- replaced by the rig registry (issue 15, item 1)
    simulators: dict[str, Any] = {}
    focus_settings, camera_settings = profile.focus, profile.camera
    core = None
    optical_state = None  # for the simulated camera: () -> (focus_um, magnification)
    focus: FocusDrive
    camera: Camera
    simulator: Any
    stage_limits = _limits(profile, FocusLimits(-10000, 10000, "um"))
    assert stage_limits is not None  # a stage has a default

    if "micromanager" in (focus_settings.driver, camera_settings.driver) or \
            "pycromanager" in (focus_settings.driver, camera_settings.driver):
        core = _open_micromanager(profile, simulators, opened)

    # -- focus drive --
    if focus_settings.driver == "simulated":
        from simulators.optics_camera import SimulatedStage

        focus = SimulatedStage(focus_settings.speed_um_per_s, stage_limits)
        simulators["stage"] = focus
        optical_state = lambda: (focus.physical_um(), 1.0)  # noqa: E731
    elif focus_settings.driver == "asi":
        from devices.asi_stage import AsiZStage

        port = focus_settings.port or ""  # the profile requires one for asi
        if port == SIMULATED_PORT:
            from simulators.asi_stage import AsiStageSimulator

            simulator = AsiStageSimulator(speed_um_per_s=focus_settings.speed_um_per_s)
            opened.append(simulator.close)
            simulators["stage"] = simulator
            port = simulator.port
            optical_state = lambda: (simulator.position_um(), 1.0)  # noqa: E731
        focus = AsiZStage(port, limits=stage_limits)
    elif focus_settings.driver == "optotune":
        from devices.optotune_lens import OptotuneLens

        port = focus_settings.port or ""  # the profile requires one for optotune
        if port == SIMULATED_PORT:
            from simulators.optics import TunableLensOptics
            from simulators.optotune_lens import OptotuneLensSimulator

            simulator = OptotuneLensSimulator()
            opened.append(simulator.close)
            simulators["lens"] = simulator
            port = simulator.port
            lens_optics = TunableLensOptics(camera_settings.optics.um_per_dpt, camera_settings.optics.breathing_per_dpt)
            optical_state = lambda: (lens_optics.focus_um(simulator.focal_power_dpt()),  # noqa: E731
                                     lens_optics.magnification(simulator.focal_power_dpt()))
        mode = "current" if focus_settings.unit == "mA" else "focal power"
        focus = OptotuneLens(port, mode=mode, limits=_limits(profile, None))
    else:  # micromanager / pycromanager
        from devices.micromanager import MicroManagerFocusDrive

        focus = MicroManagerFocusDrive(core, label=focus_settings.label,
                                       limits=stage_limits)
        if "mm_stage" in simulators:
            optical_state = lambda: (simulators["mm_stage"].focus_um(), 1.0)  # noqa: E731
    opened.append(focus.close)

    # -- camera --
    truth = None
    if camera_settings.driver == "simulated":
        from simulators.optics_camera import SimulatedCamera

        if optical_state is None:
            raise ValueError("a simulated camera needs a simulated focus drive to look through "
                             "(focus.driver: simulated, or a serial drive with port: simulated)")
        camera = SimulatedCamera(_specimen_renderer(profile), optical_state, _noise(profile),
                                 exposure_ms=camera_settings.exposure_ms or 10.0)
        simulators["camera"] = camera
        truth = camera.truth()
    elif camera_settings.driver == "genicam":
        from devices.genicam import GenICamCamera, bundled_producer

        cti = (bundled_producer() if camera_settings.cti == "bundled" else camera_settings.cti) or ""  # "": not found
        camera = GenICamCamera(cti, serial_number=camera_settings.serial_number, model=camera_settings.model,
                               index=camera_settings.index, pixel_format=camera_settings.pixel_format,
                               exposure_ms=camera_settings.exposure_ms, gain=camera_settings.gain)
    else:
        from devices.micromanager import MicroManagerCamera

        camera = MicroManagerCamera(core, label=camera_settings.label)
        if camera_settings.exposure_ms is not None:
            camera.set_exposure_ms(camera_settings.exposure_ms)
        if "mm_camera" in simulators:
            truth = simulators["mm_camera"].camera_noise.ideal(simulators["mm_camera"].renderer.specimen.texture)
    opened.append(camera.close)
    faults = [(role, getattr(profile.faults, role)) for role in ("focus", "camera")
              if getattr(profile.faults, role) is not None]
    return Rig(camera=camera, focus=focus, truth=truth, simulators=simulators, _closers=list(opened),
               pending_faults=faults)


def _open_micromanager(profile: Profile, simulators: dict, opened: list):
    settings = profile.micromanager
    config = settings.config
    if config == "demo":
        import os

        import mm_test_adapters

        config = os.path.join(mm_test_adapters.device_adapter_path(), "MMConfig_demo.cfg")
    if "pycromanager" in (profile.focus.driver, profile.camera.driver):
        from devices.pycromanager_core import connect, stop_headless

        if config is not None:
            import mm_test_adapters

            core = connect(mm_test_adapters.device_adapter_path() if settings.config == "demo" else None, config)
            opened.append(stop_headless)
        else:
            core = connect()
        return core
    from devices.micromanager import open_mmcore

    python_devices = None
    if settings.simulated_devices:
        from simulators.micromanager_devices import SimulatedZStage, SpecimenCamera

        stage = SimulatedZStage(speed_um_per_s=profile.focus.speed_um_per_s,
                                sequence_max_length=(SIMULATED_SEQUENCE_MAX_LENGTH
                                                     if settings.simulated_sequencing else 0))
        # The camera's exposure-out line is wired to the stage's trigger input (used when it sequences).
        camera = SpecimenCamera(_specimen_renderer(profile), stage.focus_um, _noise(profile), trigger_out=stage.trigger)
        simulators.update(mm_stage=stage, mm_camera=camera)
        python_devices = {"SimZ": stage, "SimCamera": camera}
    core = open_mmcore(config, python_devices=python_devices)
    if python_devices:
        core.setFocusDevice("SimZ")
        core.setCameraDevice("SimCamera")
    set_device_properties(core, settings.properties)
    return core


SIMULATED_SEQUENCE_MAX_LENGTH = 1024  # positions a simulated sequencing stage holds, as a piezo controller's table


def set_device_properties(core, properties: dict[str, dict[str, str]]) -> None:
    """Set the profile's micromanager.properties; an unknown device, property or value is a DeviceErrorReply."""
    from devices.errors import DeviceErrorReply

    for device, values in properties.items():
        for name, value in values.items():
            try:
                core.setProperty(device, name, value)
            except (RuntimeError, ValueError) as error:
                raise DeviceErrorReply(f"Micro-Manager device {device}",
                                       f"micromanager.properties: cannot set {name} to {value!r}",
                                       str(error)) from error
