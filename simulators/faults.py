"""Faults a simulator can be told to commit, to test that drivers fail clearly and never hang."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Switches, all off by default; tests flip them while a driver is connected.

    silent: read commands but never answer (a device that hangs).
    garbage: answer every command with random bytes.
    error_reply: answer every command with this device error code instead (e.g. 5).
    delay_s: answer this late (a slow device or a late frame).
    drop_frames: for cameras, lose this many frames (the next ones are never delivered).
    disconnected: the device has vanished: every call fails as a lost connection (serial
        simulators close their port instead: ``PtySerialDevice.disconnect``).
    times: how many answers the faults above spoil before clearing themselves (None: until
        turned off) -- a transient fault.
    fired: set by the simulator once any of them has spoiled an answer or a frame (a fault
        switched on that the driver never met did not happen).
    """

    silent: bool = False
    garbage: bool = False
    error_reply: int | None = None
    delay_s: float = 0.0
    drop_frames: int = 0
    disconnected: bool = False
    times: int | None = None
    fired: bool = False
    # A fault waiting for its frame: (frames to let through first, what switches it on).
    _scheduled: tuple[int, Callable[[], None]] | None = field(default=None, repr=False)

    def spend_one(self) -> None:
        """Count one spoiled answer; a transient fault clears itself when its times run out."""
        self.fired = True
        if self.times is None:
            return
        self.times -= 1
        if self.times <= 0:
            self.silent = self.garbage = False
            self.error_reply = None
            self.delay_s = 0.0
            self.times = None

    def raise_error_reply(self, kind: str) -> None:
        """Where ``error_reply`` is on: spend it and raise what a Python device in UniMMCore raises for a device error
        (a RuntimeError, "<kind> error <code>"), which the core passes on as the adapter's error."""
        if self.error_reply is not None:
            code = self.error_reply
            self.spend_one()
            raise RuntimeError(f"{kind} error {code}")

    def drop_frame(self) -> bool:
        """Whether the frame being made is lost (drop_frames counts the losses down)."""
        if self.drop_frames <= 0:
            return False
        self.drop_frames -= 1
        self.fired = True
        return True

    def gone(self) -> bool:
        """Whether the device has vanished (asked where a call then fails)."""
        self.fired = self.fired or self.disconnected
        return self.disconnected

    def schedule(self, frames_before: int, start: Callable[[], None]) -> None:
        """Have ``start`` switch faults on as a camera begins the frame after the next ``frames_before``:
        a camera that runs ahead of whoever arms the fault still spoils exactly that frame. A schedule
        still waiting is replaced."""
        self._scheduled = (frames_before, start)

    def frame_starting(self) -> None:
        """Cameras call this as each frame's exposure begins: a scheduled fault whose frame it is starts."""
        if self._scheduled is None:
            return
        frames_before, start = self._scheduled
        if frames_before > 0:
            self._scheduled = (frames_before - 1, start)
            return
        self._scheduled = None
        start()

    @property
    def active(self) -> bool:
        return self.silent or self.garbage or self.error_reply is not None or self.delay_s > 0
