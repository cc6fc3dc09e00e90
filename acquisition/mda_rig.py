"""The Micro-Manager core that a profile with an ``mda`` plan runs its sequence on.

A ``.cfg`` (or "demo") is loaded into pymmcore-plus's CMMCorePlus; ``simulated_devices``
builds a UniMMCore around the simulators' slide instead (registered in the rig registry by
``simulators.rigs``): Z and XY stages, a filter wheel whose labels are the plan's channels,
and a camera that renders the field under the stage in that channel, with ground truth.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from acquisition.mda_plan import channel_names
from acquisition.profile import Profile
from acquisition.rig_registry import RigContext, opener_for
from devices.errors import DeviceNotFoundError


@dataclass
class MDARig:
    core: Any
    close: Callable[[], None]
    # Simulated only: truth(x_um, y_um, channel_index), the noise-free all-in-focus image of that field.
    ground_truth: Callable[[float | None, float | None, int], np.ndarray] | None = None


def open_mda_rig(profile: Profile) -> MDARig:
    """Open the core, choose camera and focus, apply the camera's exposure; errors name the device."""
    opened = opener_for("mda_core", "micromanager", profile.micromanager.simulated_devices)(RigContext(profile))
    core = opened.device
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
        opened.close()
        raise DeviceNotFoundError("Micro-Manager", f"the channel group {group} has no preset {missing[0]!r}; "
                                                   f"it has {', '.join(core.getAvailableConfigs(group)) or 'none'}")
    return MDARig(core, opened.close, opened.ground_truth)
