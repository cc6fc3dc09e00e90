"""Opening the devices a profile names, and closing them again.

Which code opens which device is the rig registry's business (``acquisition.rig_registry``):
the real drivers' openers are built in, simulated ones come from the simulators' plugin. Here
the rig is put together: a Micro-Manager core first when a device lives on one, then the focus
drive, then the camera (a simulated camera renders through the simulated focus opened before it).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acquisition.plans import planned_positions
from acquisition.profile import FaultSettings, Profile
from acquisition.rig_registry import FaultCommitter, GroundTruth, Opened, RigContext, opener_for
from devices.camera import Camera
from devices.focus_drive import FocusDrive
from fusion.depth_z import too_fine_plan


@dataclass
class Rig:
    """The opened devices; for simulated ones, the simulators playing each role and the ground truth."""

    camera: Camera
    focus: FocusDrive
    ground_truth: GroundTruth | None = None      # known to simulated cameras only
    simulated: dict[str, Any] = field(default_factory=dict)   # role ("focus", "camera") -> its simulator
    fault_committers: dict[str, FaultCommitter] = field(default_factory=dict)  # by role
    _closers: list[Callable[[], None]] = field(default_factory=list)
    profile_faults: list[tuple[str, FaultSettings]] = field(default_factory=list)   # (role, the profile's entry)

    def arm_faults(self, planned_index: int, sequence_starts: bool = False) -> None:
        """Start the profile's faults whose slice has come, as planned slice ``planned_index`` (from 0,
        slices lost before it counted, as session.json's ``planned_index``) is about to be taken.

        ``sequence_starts``: a hardware sequence starts at that slice. Its camera runs ahead of the
        session, and its frame k is planned slice ``planned_index + k``, so a camera fault is handed
        over to start by frame count, at exactly the slice it names; a sequence started anew (a retry,
        or the next after a lost slice) hands it over again, counting from its own first slice.
        """
        for role, settings in self.profile_faults:
            committer = self.fault_committers[role]
            if committer.started():
                continue
            if role == "camera" and sequence_starts:
                # (past its slice, which was lost before the camera's turn: the sequence's first frame)
                committer.commit_at_frame(settings, max(0, settings.after_slices - planned_index))
            elif planned_index >= settings.after_slices:
                committer.commit(settings)

    @property
    def faults_injected(self) -> list[dict]:
        """The profile's faults that fired (spoiled an answer or a frame), for the session report."""
        return [{"device": role, "after_slices": settings.after_slices, **settings.model_dump(exclude_defaults=True)}
                for role, settings in self.profile_faults if self.fault_committers[role].fired()]

    def faults_never_due(self) -> list[tuple[str, FaultSettings]]:
        """The profile's faults whose slice never came (in a sequence: the camera's frame for it)."""
        return [(role, settings) for role, settings in self.profile_faults
                if not self.fault_committers[role].started()]

    def faults_unused(self) -> list[tuple[str, FaultSettings]]:
        """The profile's faults switched on at their slice that spoiled nothing: the device was not used again."""
        return [(role, settings) for role, settings in self.profile_faults
                if self.fault_committers[role].started() and not self.fault_committers[role].fired()]

    def truth_for(self, frame_metadata: dict[str, Any]) -> np.ndarray | None:
        """The all-in-focus frame as the frame with this metadata framed it; None without a ground truth."""
        return None if self.ground_truth is None else self.ground_truth.for_frame(frame_metadata)

    def truth_range_um(self) -> tuple[float, float] | None:
        """The simulated specimen's lowest and highest surface point (µm, the focus's frame); None for real ones."""
        return None if self.ground_truth is None else self.ground_truth.height_range_um()

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):  # closing must never hide the session's own error
                close()
        self._closers.clear()


def micromanager_driver(profile: Profile) -> str | None:
    """The core the profile's devices live on: "pycromanager", "micromanager", or None (none of them)."""
    drivers = (profile.focus.driver, profile.camera.driver)
    if "pycromanager" in drivers:
        return "pycromanager"
    return "micromanager" if "micromanager" in drivers else None


def check_plan_reachable(profile: Profile, focus: FocusDrive) -> None:
    """As the rig opens, before anything moves: every planned position is within focus.limits and within
    what the focus drive itself reports it can reach (``FocusDrive.device_range``: a lens's maximum current
    or focal-power range), else a PositionOutOfRangeError naming the position and both ranges; and the depth map
    tells them apart (``fusion.depth_z``), else a ValueError: a step of 1e-4 µm at 1e4 µm was acquired whole, and
    then its fusion refused. (An auto_range plan's positions are found by its pre-sweep, which checks its search
    range.)"""
    plan = profile.plan
    if plan is None or plan.auto_range is not None:
        return
    relative = plan.z is not None and plan.z.is_relative
    positions = planned_positions(plan, focus.position() if relative else 0.0)
    focus.check_reachable(positions, "the plan")
    said = too_fine_plan(positions, focus.unit)
    if said is not None:  # (named by its key, as the profile's own checks name theirs)
        raise ValueError(f"plan.{'z' if plan.z is not None else 'sweep'}: its slices' {said}; nothing was acquired")


def open_rig(profile: Profile) -> Rig:
    """Open camera and focus drive and check the plan against the drive; on any failure, close what was opened
    and re-raise."""
    context = RigContext(profile)
    opened: dict[str, Opened] = {}
    try:
        core_driver = micromanager_driver(profile)
        if core_driver is not None:
            simulated = core_driver == "micromanager" and profile.micromanager.simulated_devices
            opened["core"] = opener_for("core", core_driver, simulated)(context)
            context.shared["core"] = opened["core"].device
        for role in ("focus", "camera"):
            driver = getattr(profile, role).driver
            opened[role] = opener_for(role, driver, profile.simulator_of(role) is not None)(context)
        check_plan_reachable(profile, opened["focus"].device)
    except BaseException:
        for part in reversed(opened.values()):
            with contextlib.suppress(Exception):
                part.close()
        raise
    committers = {role: part.faults for role, part in opened.items() if part.faults is not None}
    faults = [(role, getattr(profile.faults, role)) for role in ("focus", "camera")
              if getattr(profile.faults, role) is not None]
    return Rig(camera=opened["camera"].device, focus=opened["focus"].device,
               ground_truth=opened["camera"].ground_truth,
               simulated={role: part.simulator for role, part in opened.items() if part.simulator is not None},
               fault_committers=committers, _closers=[part.close for part in opened.values()],
               profile_faults=faults)
