"""The FocusDrive role: anything that moves the focal plane, in its own unit.

A Z stage moves in micrometres ("um"), a tunable lens in diopters ("dpt") or milliamps
("mA"). ``move_to`` checks the limits in one place and then calls the driver's
``_do_move_to``; drivers stay small and never see an out-of-range request.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from devices.errors import DeviceTimeoutError, PositionOutOfRangeError

UNITS = ("um", "dpt", "mA")


@dataclass(frozen=True)
class FocusLimits:
    """The range a focus drive may be moved in, in its unit."""

    lower: float
    upper: float
    unit: str

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if not self.lower <= self.upper:
            raise ValueError(f"lower limit {self.lower} is above upper limit {self.upper}")

    def contains(self, position: float) -> bool:
        return self.lower <= position <= self.upper


class FocusDrive(ABC):
    """Moves the focal plane. ``position()`` and ``move_to()`` are in ``unit``."""

    name: str
    unit: str

    def __init__(self, name: str, limits: FocusLimits):
        self.name = name
        self.limits = limits
        self.unit = limits.unit

    def move_to(self, position: float) -> None:
        """Start a move to ``position`` (in ``unit``); use ``wait_until_settled`` to wait for it."""
        if not self.limits.contains(position):
            raise PositionOutOfRangeError(
                self.name, f"{position:g} {self.unit} is outside the limits "
                           f"{self.limits.lower:g}..{self.limits.upper:g} {self.unit}")
        self._do_move_to(float(position))

    def wait_until_settled(self, timeout_s: float = 5.0, poll_s: float = 0.005) -> None:
        """Block until the drive reports it is no longer moving, or raise DeviceTimeoutError."""
        deadline = time.monotonic() + timeout_s
        while self._do_is_busy():
            if time.monotonic() > deadline:
                raise DeviceTimeoutError(self.name, f"still moving after {timeout_s:g} s (stuck, or not answering)")
            time.sleep(poll_s)

    def position(self) -> float:
        """The position the device reports, in ``unit``."""
        return self._do_read_position()

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
