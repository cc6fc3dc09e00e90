"""The Micro-Manager core that a profile with an ``mda`` plan runs its sequence on.

A ``.cfg`` (or "demo") is loaded into pymmcore-plus's CMMCorePlus; ``simulated_devices``
builds a UniMMCore around the slide simulator instead: Z and XY stages, a filter wheel whose
labels are the plan's channels (config group "Channel"), and a camera that renders the
field under the stage in that channel, with ground truth.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from acquisition.mda_plan import channel_names
from acquisition.profile import Profile
from devices.errors import DeviceNotFoundError

CHANNEL_GROUP = "Channel"


@dataclass
class MDARig:
    core: Any
    slide: Any = None  # simulators.micromanager_slide.SlideCamera when simulated: it knows the truth

    def truth(self, x_um: float | None, y_um: float | None, channel_index: int):
        """The noise-free all-in-focus image of that field and channel, when simulated; else None."""
        if self.slide is None:
            return None
        return self.slide.truth(self.slide.field_at(x_um or 0.0, y_um or 0.0), channel_index)

    def close(self) -> None:
        self.core.unloadAllDevices()


def open_mda_rig(profile: Profile) -> MDARig:
    """Open the core, choose camera and focus, apply the camera's exposure; errors name the device."""
    from devices.micromanager import open_mmcore

    settings = profile.micromanager
    slide = None
    if settings.simulated_devices:
        core, slide = _slide_core(profile)
    else:
        config = settings.config
        if config == "demo":
            import mm_test_adapters

            config = os.path.join(mm_test_adapters.device_adapter_path(), "MMConfig_demo.cfg")
        if config is None:
            raise DeviceNotFoundError("Micro-Manager", "an mda plan needs micromanager.config (a .cfg file, or demo) "
                                                       "or micromanager.simulated_devices: true")
        core = open_mmcore(config)
    for setter, label in ((core.setCameraDevice, profile.camera.label), (core.setFocusDevice, profile.focus.label)):
        if label is not None:
            setter(label)
    if profile.camera.exposure_ms is not None:
        core.setExposure(profile.camera.exposure_ms)
    if not core.getShutterDevice():
        core.setAutoShutter(False)  # pymmcore-plus would try to open a shutter that is not there
    assert profile.mda is not None  # an mda rig runs an mda profile
    missing = [c for c in channel_names(profile.mda) if c not in core.getAvailableConfigs(core.getChannelGroup() or "")]
    if missing:
        group = core.getChannelGroup() or "(no channel group)"
        core.unloadAllDevices()
        raise DeviceNotFoundError("Micro-Manager", f"the channel group {group} has no preset {missing[0]!r}; "
                                                   f"it has {', '.join(core.getAvailableConfigs(group)) or 'none'}")
    return MDARig(core, slide)


def _slide_core(profile: Profile):
    from devices.micromanager import open_mmcore
    from simulators.micromanager_devices import SimulatedZStage
    from simulators.micromanager_slide import FilterWheel, SimulatedXYStage, SlideCamera
    from simulators.optics import CameraNoise, Optics

    spec, noise = profile.camera.specimen, profile.camera.noise
    channels = (channel_names(profile.mda) if profile.mda is not None else []) or ["none"]
    z = SimulatedZStage(speed_um_per_s=profile.focus.speed_um_per_s)
    xy, wheel = SimulatedXYStage(), FilterWheel(channels)
    slide = SlideCamera((spec.height_px, spec.width_px), spec.depth_um, z.focus_um, xy.get_position_um,
                        wheel.get_state, Optics(blur_px_per_um=profile.camera.optics.blur_px_per_um),
                        CameraNoise(noise.full_well_e, noise.read_noise_e, noise.bit_depth), spec.surface, spec.seed)
    core = open_mmcore(python_devices={"SimZ": z, "SimXY": xy, "Wheel": wheel, "SimCamera": slide})
    core.setFocusDevice("SimZ")
    core.setXYStageDevice("SimXY")
    core.setCameraDevice("SimCamera")
    for channel in channels:
        core.defineConfig(CHANNEL_GROUP, channel, "Wheel", "Label", channel)
    core.setChannelGroup(CHANNEL_GROUP)
    return core, slide
