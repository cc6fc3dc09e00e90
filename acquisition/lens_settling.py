"""A tunable lens's commanded trajectory and its settling: which focus a frame saw, and whether it held still.

Step model: after a command at time t the lens moves for ``settle_s`` and then holds the
commanded power until the next command. A frame whose exposure [start, end] lies wholly in a
held stretch (with ``guard_s`` of slack each side for clock jitter) saw that command's power;
one that overlaps a settling stretch, or a command, was exposed while the lens moved.
Times are ``time.time()`` seconds, the clock of frame timestamps.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class FrameFocus:
    """What a frame saw: ``command`` (index of the command whose power it saw; None before the first)
    and ``still`` (the lens held that power for the whole exposure)."""

    command: int | None
    still: bool


class LensTrajectory:
    """The commands sent to a lens, in time order, with its settling time."""

    def __init__(self, settle_s: float, guard_s: float = 0.001):
        if settle_s < 0 or guard_s < 0:
            raise ValueError(f"settle_s ({settle_s}) and guard_s ({guard_s}) must not be negative")
        self.settle_s = settle_s
        self.guard_s = guard_s
        self.times_s: list[float] = []
        self.powers: list[float] = []

    def command(self, at_s: float, power: float) -> int:
        """Record a command sent at ``at_s``; returns its index."""
        if self.times_s and at_s < self.times_s[-1]:
            raise ValueError(f"commands must come in time order: {at_s} is before {self.times_s[-1]}")
        self.times_s.append(at_s)
        self.powers.append(power)
        return len(self.times_s) - 1

    def frame_focus(self, start_s: float, end_s: float) -> FrameFocus:
        """Which command's power an exposure from ``start_s`` to ``end_s`` saw, and whether the lens held still.

        Valid once every command up to ``end_s`` has been recorded (true for a frame that has arrived)."""
        start_s, end_s = start_s - self.guard_s, end_s + self.guard_s
        before = bisect.bisect_right(self.times_s, start_s) - 1  # the last command before the exposure
        if before < 0:
            return FrameFocus(None, False)
        settled = self.times_s[before] + self.settle_s <= start_s
        next_command_in_exposure = before + 1 < len(self.times_s) and self.times_s[before + 1] < end_s
        return FrameFocus(before, settled and not next_command_in_exposure)

    def latest_command_before(self, at_s: float) -> int | None:
        """The index of the last command sent before ``at_s``; None if none was."""
        index = bisect.bisect_right(self.times_s, at_s) - 1
        return index if index >= 0 else None
