"""The automatic z-range: a coarse pre-sweep on the rig, then the fine positions that cover it.

The pre-sweep moves from the bottom of ``plan.auto_range.search_um`` upwards every coarse step,
snaps, bins each frame and scores it per tile (``acquisition.auto_range``); it stops early once
the focus curve has risen and fallen back to background. The fine stack then covers from the
lowest to the highest surface found, plus ``margin_steps`` fine steps either side.
A transient device error is retried ``plan.retries`` times, as in the stack; one that persists
ends the pre-sweep with one error saying where, and the session does not start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field

from acquisition.acquirer import with_retries
from acquisition.auto_range import AutoRangeError, PreSweepAnalysis, binned, coarse_positions, fine_positions, within
from acquisition.plans import tidy_position
from acquisition.profile import Profile
from acquisition.session_report import RetryRecord
from devices.errors import TRANSIENT_ERRORS, DeviceError
from fusion.depth_z import too_fine_plan


@dataclass
class RangeFound:
    """What the pre-sweep found and the fine positions it gives (µm)."""

    lo_um: float
    hi_um: float
    positions_um: list[float]
    coarse_z_um: list[float]
    frame_curve: list[float]        # the whole frame's detail per coarse frame
    stopped_early: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)
    retries: list[RetryRecord] = field(default_factory=list)   # their slice: the coarse frame's index

    def report(self) -> dict:
        return {"detail_range_um": [round(self.lo_um, 3), round(self.hi_um, 3)], "frames": len(self.coarse_z_um),
                "coarse_z_um": [round(z, 3) for z in self.coarse_z_um],
                "frame_curve": [float(f"{v:.4g}") for v in self.frame_curve],
                "stopped_early": self.stopped_early, "seconds": round(self.seconds, 4), "warnings": self.warnings,
                "retries": [dataclasses.asdict(retry) for retry in self.retries]}


def find_z_range(profile: Profile, rig) -> RangeFound:
    """Run the pre-sweep on ``rig`` (an ``acquisition.rig.Rig``); the focus returns to where it was
    if the pre-sweep fails. Raises AutoRangeError when no part of the frame came into focus, or when the fine step cuts
    the range found into slices the depth map cannot tell apart (``fusion.depth_z``), before the stack starts."""
    plan = profile.plan
    settings = plan.auto_range if plan is not None else None
    if plan is None or settings is None:
        raise ValueError("find_z_range needs a profile with plan.auto_range")
    focus, camera = rig.focus, rig.camera
    coarse = coarse_positions(settings.search_um, settings.coarse_step)
    focus.check_reachable(coarse, "plan.auto_range.search_um")
    start = focus.position()
    analysis = PreSweepAnalysis()
    stopped_early = False
    started = time.perf_counter()
    retries: list[RetryRecord] = []

    def move_and_settle(z_um: float) -> None:
        focus.move_to(z_um)
        focus.wait_until_settled(profile.focus.settle_timeout_s)

    try:
        for index, z_um in enumerate(coarse):
            try:  # transient errors are retried as in the stack itself
                with_retries(functools.partial(move_and_settle, z_um), "move", plan.retries, retries, index)
                time.sleep(profile.focus.settle_ms / 1000)
                frame = with_retries(functools.partial(camera.snap, timeout_s=profile.camera.timeout_s), "snap",
                                     plan.retries, retries, index)
            except DeviceError as error:
                raise _in_pre_sweep(error, z_um, index, len(coarse), plan.retries) from error
            analysis.add(z_um, binned(frame.pixels, settings.binning))
            if settings.stop_early and analysis.has_fallen_back():
                stopped_early = z_um != coarse[-1]
                break
        lo_um, hi_um = analysis.range_um()
    except BaseException as error:
        with contextlib.suppress(DeviceError):  # the pre-sweep's own error says more
            focus.move_to(start)  # the session never started: leave the focus where the user had it
        if isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt(f"{str(error) or 'interrupted (Ctrl-C)'} during the auto-range pre-sweep, after "
                                    f"{len(analysis.z_um)} of {len(coarse)} coarse frames (a pre-sweep's frames are "
                                    "not kept),") from error
        raise
    # The margin does not reach past an end where the search cut the specimen (nothing is known
    # beyond it), nor past the drive's limits.
    low_cut, high_cut = analysis.ends_in_detail()
    reach = focus.device_range or focus.limits
    bottom = max(focus.limits.lower, reach.lower, settings.search_um[0] if low_cut else -math.inf)
    top = min(focus.limits.upper, reach.upper, settings.search_um[1] if high_cut else math.inf)
    positions = [tidy_position(z) for z in within(fine_positions(lo_um, hi_um, settings.step_um, settings.margin_steps),
                                                  bottom, top)]
    too_fine = too_fine_plan(positions, "um")
    if too_fine is not None:  # known only now: the range found, which the step cuts into slices; said before the stack
        with contextlib.suppress(DeviceError):  # (its acquisition, and then its fusion, was refused)
            focus.move_to(start)
        raise AutoRangeError(f"plan.auto_range: the range its pre-sweep found ({lo_um:.8g}..{hi_um:.8g} µm) in steps "
                             f"of {settings.step_um:g} µm: its slices' {too_fine}; the session did not start")
    return RangeFound(lo_um, hi_um, positions,
                      list(analysis.z_um), analysis.frame_curve, stopped_early, time.perf_counter() - started,
                      analysis.edge_warnings(), retries)


def _in_pre_sweep(error: DeviceError, z_um: float, index: int, frames: int, retries: int) -> DeviceError:
    """``error`` (of the same kind) saying where in the pre-sweep it came, after how many tries, and that
    the session did not start."""
    tries = f" after {retries + 1} tries (plan.retries: {retries})" if isinstance(error, TRANSIENT_ERRORS) else ""
    return type(error)(error.device, f"{error.message}, in the auto-range pre-sweep at {z_um:g} µm (coarse frame "
                                     f"{index + 1} of {frames}){tries}; the session did not start", error.reply)
