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
from acquisition.rig_openers import stage_limits
from acquisition.rig_registry import RigContext, opener_for
from devices.errors import DeviceNotFoundError
from fusion.depth_z import too_fine_plan


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


def check_mda_reachable(profile: Profile, sequence, core) -> None:
    """Before anything moves: every z the sequence visits (``sequence``: the profile's, relative z-plans centred as
    the session runs them) is within focus.limits (or the stage driver's default limits), as a single stack's plan
    is (``acquisition.rig.check_plan_reachable``); else a PositionOutOfRangeError naming the z, the profile's keys
    it comes from and the limits. And the depth map tells each stack's z apart (``fusion.depth_z``), else a
    ValueError naming those keys and the least step it holds there: a z_plan stepping 1e-5 µm at 250 µm was acquired
    whole, and then each stack's fusion was refused."""
    from devices.micromanager import MicroManagerFocusDrive

    visits: dict[str, dict[float, None]] = {}  # whence (profile keys) -> its z positions, in the order visited
    # (Without the time plan: each time point visits the same z, and a plate's long time-lapse has millions of events,
    # at ~50 us each in useq.)
    for event in sequence.model_copy(update={"time_plan": None}):
        if event.z_pos is not None:
            visits.setdefault(_z_source(profile, sequence, event), {})[float(event.z_pos)] = None
    if not visits:
        return  # no z is set: the stage stays where it is
    focus = MicroManagerFocusDrive(core, label=profile.focus.label, limits=stage_limits(profile))
    try:
        for whence, positions in visits.items():
            focus.check_reachable(list(positions), whence)
    finally:
        focus.close()
    # (A whence's positions are those of each stack it plans: one plan around one centre.)
    for whence, positions in visits.items():
        said = too_fine_plan(list(positions), "um")
        if said is not None:
            raise ValueError(f"{whence}: its slices' {said}; nothing was acquired")


def _z_source(profile: Profile, sequence, event) -> str:
    """The profile's keys that an event's z comes from: "mda.stage_positions.0.z (5000 um) with mda.z_plan",
    "mda.z_plan" (absolute), "mda.z_plan around the stage's current z (12 um)", "mda.stage_positions.1.z"."""
    assert profile.mda is not None  # an mda rig runs an mda profile
    p = event.index.get("p")
    position = sequence.stage_positions[p] if p is not None and p < len(sequence.stage_positions) else None
    own_plan = position.sequence.z_plan if position is not None and position.sequence is not None else None
    plan, plan_key = (own_plan, f"mda.stage_positions.{p}.sequence.z_plan") if own_plan is not None \
        else (sequence.z_plan, "mda.z_plan")
    if plan is None:
        return f"mda.stage_positions.{p}.z"
    if not plan.is_relative:
        return plan_key
    given = profile.mda.stage_positions[p] if p is not None and p < len(profile.mda.stage_positions) else None
    if given is not None and given.z is not None:
        return f"mda.stage_positions.{p}.z ({given.z:g} um) with {plan_key}"
    centre = position.z if position is not None and position.z is not None else 0.0
    return f"{plan_key} around the stage's current z ({centre:g} um)"
