"""A tunable lens's commanded trajectory and its settling: which focus a frame saw, and whether it held still.

Step model: a command is sent at time t_sent; the lens takes it no later than t_taken (when the driver
answered a query sent after it: a serial device takes its commands in order), moves for ``settle_s`` from
then, and holds the commanded power until the next command is sent. A frame whose exposure [start, end]
lies wholly in a held stretch (with ``guard_s`` of slack each side for clock jitter) saw that command's
power; one that overlaps a settling stretch, or a command, was exposed while the lens moved. (The
settle counted from t_sent alone took frames exposed before a late lens had moved, under a busy host or a
USB-serial adapter's latency, for frames of the new power.)
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
        self.times_s: list[float] = []          # when each command was sent
        self._taken_by_s: list[float] = []      # when the lens had surely taken it
        self.powers: list[float] = []

    def command(self, at_s: float, power: float, taken_by_s: float | None = None) -> int:
        """Record a command sent at ``at_s`` and taken by the lens no later than ``taken_by_s`` (default: at
        once); returns its index."""
        taken_by_s = at_s if taken_by_s is None else taken_by_s
        if self.times_s and at_s < self.times_s[-1]:
            raise ValueError(f"commands must come in time order: {at_s} is before {self.times_s[-1]}")
        if taken_by_s < at_s:
            raise ValueError(f"a command cannot be taken ({taken_by_s}) before it is sent ({at_s})")
        self.times_s.append(at_s)
        self._taken_by_s.append(taken_by_s)
        self.powers.append(power)
        return len(self.times_s) - 1

    def frame_focus(self, start_s: float, end_s: float) -> FrameFocus:
        """Which command's power an exposure from ``start_s`` to ``end_s`` saw, and whether the lens held still.

        Valid once every command up to ``end_s`` has been recorded (true for a frame that has arrived)."""
        start_s, end_s = start_s - self.guard_s, end_s + self.guard_s
        before = bisect.bisect_right(self.times_s, start_s) - 1  # the last command before the exposure
        if before < 0:
            return FrameFocus(None, False)
        settled = self._taken_by_s[before] + self.settle_s <= start_s
        next_command_in_exposure = before + 1 < len(self.times_s) and self.times_s[before + 1] < end_s
        return FrameFocus(before, settled and not next_command_in_exposure)

    def latest_command_before(self, at_s: float) -> int | None:
        """The index of the last command sent before ``at_s``; None if none was."""
        index = bisect.bisect_right(self.times_s, at_s) - 1
        return index if index >= 0 else None
