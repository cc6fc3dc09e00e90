"""Which acquisition a profile gets on an opened rig: stepped, hardware-sequenced, or a lens stream.

``plan.hardware_sequencing``: ``auto`` sequences when the focus stage takes z-sequences and the
camera runs sequence acquisitions (and no focus fault is to start mid-stack); ``on`` demands it,
and a device that cannot is an error that names it; ``off`` steps. ``plan.stream`` sweeps a
tunable lens with the camera free-running.
"""
from __future__ import annotations

from acquisition.acquirer import Acquirer
from acquisition.profile import Profile, ProfileError
from acquisition.rig import Rig
from devices.errors import UnsupportedFeatureError


def why_not_sequenced(rig: Rig) -> tuple[str, str] | None:
    """(device name, reason) when the rig cannot run a hardware-sequenced z-stack; None when it can."""
    focus, camera = rig.focus, rig.camera
    if not hasattr(focus, "sequence_max_length"):
        return focus.name, "it is not a Micro-Manager stage, so it takes no z-sequence"
    if focus.sequence_max_length() < 2:
        return focus.name, ("the stage is not sequenceable (for the demo adapters' stage set micromanager.properties "
                            "{Z: {UseSequences: 'Yes'}})")
    if not getattr(camera, "can_run_sequences", lambda: False)():
        return camera.name, ("it is not a Micro-Manager camera, so it runs no sequence acquisition on the "
                             "stage's trigger")
    return None


def _lens_stream(profile: Profile, rig: Rig) -> Acquirer:
    """The free-running lens sweep on this rig; a camera it cannot use is an error naming it."""
    from acquisition.lens_stream import ARRIVAL_LATENCY_S, SETTLE_FRAMES_AT_MOST, LensStreamAcquirer, settle_frames

    assert profile.plan is not None  # a stream is a plan's
    camera = rig.camera
    if not hasattr(camera, "sequence"):
        raise UnsupportedFeatureError(camera.name, "plan.stream needs a camera that streams frames")
    if camera.exposure_ms is None:  # a frame's exposure window is what says which power it saw
        raise UnsupportedFeatureError(camera.name, "plan.stream needs a camera that reports its exposure time, to "
                                      "tell which focal power each frame saw and whether the lens held still; this "
                                      "one reports none (a GenICam camera without ExposureTime): set plan.stream: "
                                      "false to step the sweep")
    settle_ms, exposure_ms = profile.focus.settle_ms, camera.exposure_ms
    if settle_frames(settle_ms / 1000, exposure_ms) > SETTLE_FRAMES_AT_MOST:
        raise ProfileError(f"focus.settle_ms: {settle_ms:g} ms is {settle_frames(settle_ms / 1000, exposure_ms)} "
                           f"exposures of camera.exposure_ms ({exposure_ms:g} ms): a lens stream would take and "
                           f"discard that many frames at each position while the lens settles (at most "
                           f"{SETTLE_FRAMES_AT_MOST}); set plan.stream: false to step the sweep (it waits out the "
                           f"settle, then snaps), or a shorter focus.settle_ms or a longer camera.exposure_ms")
    arrival_latency_ms = profile.camera.arrival_latency_ms
    return LensStreamAcquirer(camera, rig.focus, settle_s=settle_ms / 1000,
                              frame_timeout_s=profile.camera.timeout_s, retries=profile.plan.retries,
                              give_up_after_s=profile.camera.give_up_after_s,
                              arrival_latency_s=ARRIVAL_LATENCY_S if arrival_latency_ms is None
                              else arrival_latency_ms / 1000)


def acquirer_for(profile: Profile, rig: Rig, warnings: list[str] | None = None) -> Acquirer | None:
    """The acquirer the profile asks for on this rig; None for the session's own stepped loop.

    A choice the user should hear of (``auto`` stepping on a rig that could sequence) goes into ``warnings``.
    """
    plan = profile.plan
    if plan is None:  # an MDA profile: its sequence runs in mda_session
        return None
    if plan.stream:
        return _lens_stream(profile, rig)
    if plan.hardware_sequencing == "off":
        return None
    problem = why_not_sequenced(rig)
    if problem is not None:
        if plan.hardware_sequencing == "on":
            device, reason = problem
            raise UnsupportedFeatureError(device, f"plan.hardware_sequencing is on, but this device cannot run a "
                                                  f"hardware-sequenced z-stack: {reason}; set "
                                                  "plan.hardware_sequencing: auto (or off) to step instead")
        return None
    focus_fault = profile.faults.focus
    if focus_fault is not None and focus_fault.after_slices > 0:  # the stage hears nothing mid-sequence
        if plan.hardware_sequencing == "on":
            raise UnsupportedFeatureError(rig.focus.name, "faults.focus.after_slices: in a hardware-sequenced "
                                          "stack the stage steps on the camera's trigger and is sent no command "
                                          "between slices, so its fault cannot start mid-stack; give after_slices: 0 "
                                          "(it meets the sequence's first move) or plan.hardware_sequencing: auto "
                                          "to step instead")
        # auto leaves the mode to the system; the rehearsal is what the user asked for: step, and say so.
        if warnings is not None:
            warnings.append(f"the stack was stepped, not hardware-sequenced (plan.hardware_sequencing: auto), so "
                            f"that faults.focus (after_slices: {focus_fault.after_slices}) could start mid-stack: "
                            "a sequenced stage steps on the camera's trigger and is sent no command between slices")
        return None
    from acquisition.sequenced import HardwareSequencedAcquirer

    # Each sequence run arms the profile's faults as it starts, from its first planned slice (Rig.arm_faults).
    return HardwareSequencedAcquirer(rig.camera, rig.focus, frame_timeout_s=profile.camera.timeout_s,
                                     settle_timeout_s=profile.focus.settle_timeout_s, retries=plan.retries,
                                     give_up_after_s=profile.camera.give_up_after_s,
                                     before_sequence=lambda first_index: rig.arm_faults(first_index,
                                                                                        sequence_starts=True))
