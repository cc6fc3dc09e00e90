"""The FocusDrive role: anything that moves the focal plane, in its own unit.

A Z stage moves in micrometres ("um"), a tunable lens in diopters ("dpt") or milliamps
("mA"). ``move_to`` checks the limits in one place and then calls the driver's
``_do_move_to``; drivers stay small and never see an out-of-range request. Two ranges are
checked: ``limits`` (the profile's focus.limits, or the driver's default) and ``device_range``
(what the device itself reports it can reach, where it says: a lens's maximum current or
focal-power range), since a device asked beyond its range clamps in silence or refuses.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from devices.errors import DeviceProtocolError, DeviceTimeoutError, PositionOutOfRangeError

UNITS = ("um", "dpt", "mA")
# The source of limits a profile set: a plan beyond them names that key. Others are the driver's default, which the
# profile did not choose, so a message must not send the user to a focus.limits they never set.
PROFILE_LIMITS = "focus.limits"


@dataclass(frozen=True)
class FocusLimits:
    """The range a focus drive may be moved in, in its unit."""

    lower: float
    upper: float
    unit: str
    source: str = ""   # where the range comes from, for messages ("its maximum current, CrMA"; PROFILE_LIMITS)

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if not self.lower <= self.upper:
            raise ValueError(f"lower limit {self.lower} is above upper limit {self.upper}")

    def contains(self, position: float) -> bool:
        return self.lower <= position <= self.upper

    def text(self) -> str:
        """"-292.84..292.84 mA"."""
        return f"{self.lower:g}..{self.upper:g} {self.unit}"


class FocusDrive(ABC):
    """Moves the focal plane. ``position()`` and ``move_to()`` are in ``unit``."""

    name: str
    unit: str
    # How fast the drive travels, in ``unit`` per second, where known (a stage's speed): ``wait_until_settled``
    # allows the last move's distance at that speed beyond its timeout, which is for settling, not for travel.
    travel_speed: float | None = None

    def __init__(self, name: str, limits: FocusLimits):
        self.name = name
        self.limits = limits
        self.unit = limits.unit
        self._known_position: float | None = None   # the last position read or moved to
        self._last_travel = 0.0                     # how far the last move went from there (0: not known)

    def move_to(self, position: float) -> None:
        """Start a move to ``position`` (in ``unit``); use ``wait_until_settled`` to wait for it."""
        self.check_reachable([position])
        self._do_move_to(float(position))
        known = self._known_position
        if known != float(position):  # (the same move again, a retry: it may still have that way to go)
            self._last_travel = 0.0 if known is None else abs(float(position) - known)
        self._known_position = float(position)

    def travel_s(self) -> float:
        """How long the last move takes to travel at ``travel_speed`` (0 where either is not known)."""
        return self._last_travel / self.travel_speed if self.travel_speed else 0.0

    def check_reachable(self, positions, what: str | None = None) -> None:
        """Raise PositionOutOfRangeError for the first of ``positions`` outside ``limits`` or beyond
        ``device_range``, naming it (of a plan, the plan's farthest position on that side), the range it is outside
        and where that range comes from (the profile's focus.limits, the device, the driver's default); nothing is
        sent. ``what``: whose positions they are ("the plan"), for the message and what to change; None for a
        single move."""
        device_range = self.device_range
        profile_set = self.limits.source == PROFILE_LIMITS
        positions = list(positions)

        def where(position: float, outside: FocusLimits) -> str:
            if not what:
                return f"{position:g} {self.unit} is"
            # The plan's farthest position past the range: its first one outside (1001 µm of a plan to 4400 in
            # 1 µm steps) read like a rounding error of what the user typed.
            farthest = max(positions) if position > outside.upper else min(positions)
            return f"{what} goes to {farthest:g} {self.unit},"

        for position in positions:
            if profile_set and not self.limits.contains(position):
                raise PositionOutOfRangeError(self.name, f"{where(position, self.limits)} outside the limits "
                                                         f"{self.limits.text()} (focus.limits)")
            # Before the driver's default limits: the device's own range is what no setting can widen.
            if device_range is not None and not device_range.contains(position):
                said = self._beyond_device_range(where(position, device_range), device_range, what)
                raise PositionOutOfRangeError(self.name, said)
            if not self.limits.contains(position):
                said = self._outside_default_limits(where(position, self.limits), what)
                raise PositionOutOfRangeError(self.name, said)

    def _beyond_device_range(self, where: str, device_range: FocusLimits, what: str | None) -> str:
        """The message for a position beyond what the device reports it can reach, and what to change."""
        source = f" ({device_range.source})" if device_range.source else ""
        said = f"{where} beyond what the device reports it can reach: {device_range.text()}{source}"
        if self.limits.source == PROFILE_LIMITS:  # the profile's limits let it through: they are wrong too
            return (f"{said}; focus.limits ({self.limits.text()}) do not rule it out: set focus.limits within the "
                    "device's range and keep the plan inside them")
        return f"{said}; keep {what} inside it" if what else said

    def _outside_default_limits(self, where: str, what: str | None) -> str:
        """The message for a position outside limits the profile did not set (the driver's default)."""
        said = f"{where} outside the limits {self.limits.text()}, the driver's default (no focus.limits given)"
        return f"{said}: keep {what} inside them, or set focus.limits to the range the device really reaches" \
            if what else said

    @property
    def device_range(self) -> FocusLimits | None:
        """What the device itself reports it can reach, in ``unit``; None where it does not say."""
        return None

    def wait_until_settled(self, timeout_s: float = 5.0, poll_s: float = 0.005) -> None:
        """Block until the drive reports it is no longer moving, or raise DeviceTimeoutError once ``timeout_s``
        has passed beyond the last move's travel (``travel_s``): 20 mm at 2 mm/s takes 10 s before it settles."""
        travel_s = self.travel_s()
        deadline = time.monotonic() + travel_s + timeout_s
        self._wait_for_arrival(deadline)
        while self._do_is_busy():
            if time.monotonic() > deadline:
                travel = f" beyond {travel_s:g} s of travel ({self._last_travel:g} {self.unit} at " \
                         f"{self.travel_speed:g} {self.unit}/s)" if travel_s else ""
                raise DeviceTimeoutError(self.name, f"still moving after {timeout_s:g} s{travel} (stuck, or not "
                                                    "answering)")
            time.sleep(poll_s)

    def _wait_for_arrival(self, deadline: float) -> None:  # noqa: B027 -- optional: most drives are polled
        """Before polling: a drive that knows when its move ends waits for that, up to ``deadline``."""

    def position(self) -> float:
        """The position the device reports, in ``unit``; a DeviceProtocolError where it is not a number (NaN, inf)."""
        position = self._do_read_position()
        if not math.isfinite(position):  # a plan centred on it would go to nan, and name the limits instead
            raise DeviceProtocolError(self.name, f"reported a position that is not a number ({position} {self.unit})")
        self._known_position = position
        return position

    @property
    def resolution(self) -> float | None:
        """The smallest step the drive makes, in ``unit``; None where the driver does not know it."""
        return None

    def close(self) -> None:  # noqa: B027 -- optional: a drive that holds no port has nothing to release
        """Release the port or handle; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @abstractmethod
    def _do_move_to(self, position: float) -> None: ...

    @abstractmethod
    def _do_read_position(self) -> float: ...

    @abstractmethod
    def _do_is_busy(self) -> bool: ...
