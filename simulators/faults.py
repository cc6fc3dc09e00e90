"""Faults a simulator can be told to commit, to test that drivers fail clearly and never hang."""
from __future__ import annotations

from dataclasses import dataclass


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
    """

    silent: bool = False
    garbage: bool = False
    error_reply: int | None = None
    delay_s: float = 0.0
    drop_frames: int = 0
    disconnected: bool = False
    times: int | None = None

    def spend_one(self) -> None:
        """Count one spoiled answer; a transient fault clears itself when its times run out."""
        if self.times is None:
            return
        self.times -= 1
        if self.times <= 0:
            self.silent = self.garbage = False
            self.error_reply = None
            self.delay_s = 0.0
            self.times = None

    @property
    def active(self) -> bool:
        return self.silent or self.garbage or self.error_reply is not None or self.delay_s > 0
