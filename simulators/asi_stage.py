"""An ASI MS-2000 controller's Z axis, simulated on a pseudo-terminal.

    python -m simulators.asi_stage     # prints "... on /dev/pts/N", serves until Ctrl-C

Moves take time (travel speed plus a settle time); the stage is busy ('B') until then.
Positions on the wire are tenths of a micrometre.
"""
from __future__ import annotations

import re
import time

from devices.asi_stage import DEFAULT_BAUDRATE
from simulators.serial_device import PtySerialDevice, serve_forever

COMMAND = re.compile(r"^\s*(?P<verb>[A-Za-z/\\]+)\s*(?P<args>.*)$")


class AsiStageSimulator(PtySerialDevice):
    def __init__(self, speed_um_per_s: float = 2000.0, settle_s: float = 0.01,
                 travel_um: tuple[float, float] = (-5000.0, 5000.0), axes: str = "XYZ",
                 baudrate: int | None = None):
        self.speed_um_per_s = speed_um_per_s
        self.settle_s = settle_s
        self.travel_um = travel_um
        self.axes = axes
        self._start_um = self._target_um = 0.0
        self._move_started = 0.0
        self._move_s = 0.0
        self._origin_um = 0.0
        self._buffer = b""
        super().__init__(baudrate or DEFAULT_BAUDRATE)

    # -- the physical stage (absolute micrometres) --
    def position_um(self) -> float:
        elapsed = time.monotonic() - self._move_started
        if self._move_s <= 0 or elapsed >= self._move_s:
            return self._target_um
        return self._start_um + (self._target_um - self._start_um) * elapsed / self._move_s

    def is_busy(self) -> bool:
        return time.monotonic() - self._move_started < self._move_s + self.settle_s

    def error_answer(self, code: int) -> bytes:
        return f":N-{code}\r\n".encode()

    def handle(self, data: bytes) -> list[bytes]:
        self._buffer += data
        answers = []
        while b"\r" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r", 1)
            line = line.strip(b"\n")
            if not line:
                continue
            self.received.append(line)
            answers.append(self._execute(line.decode("ascii", "replace")))
        return answers

    def _execute(self, line: str) -> bytes:
        match = COMMAND.match(line)
        if not match:
            return b":N-1\r\n"
        verb, args = match["verb"].upper(), match["args"].strip().upper()
        handler = self._handler(verb)
        return b":N-1\r\n" if handler is None else handler(args)

    def _handler(self, verb: str):
        """What answers ``verb`` (long or short form); None for a command the stage does not know."""
        return {"/": self._status, "\\": self._halt, "M": self._move, "MOVE": self._move,
                "W": self._where, "WHERE": self._where, "H": self._here, "HERE": self._here}.get(verb)

    def _status(self, args: str) -> bytes:
        return b"B\r\n" if self.is_busy() else b"N\r\n"

    def _halt(self, args: str) -> bytes:
        interrupted = self.is_busy()
        self._target_um = self.position_um()
        self._move_s = 0.0
        return b":N-21\r\n" if interrupted else b":A\r\n"

    def _move(self, args: str) -> bytes:
        if not args:
            return b":N-3\r\n"
        axis, _, value = args.partition("=")
        if axis not in self.axes:
            return b":N-2\r\n"
        if axis != "Z":
            return b":A\r\n"
        try:
            target_um = float(value) / 10.0 + self._origin_um
        except ValueError:
            return b":N-3\r\n"
        if not self.travel_um[0] <= target_um <= self.travel_um[1]:
            return b":N-4\r\n"
        self._start_um, self._target_um = self.position_um(), target_um
        self._move_started = time.monotonic()
        self._move_s = abs(target_um - self._start_um) / self.speed_um_per_s
        return b":A\r\n"

    def _where(self, args: str) -> bytes:
        if not args:
            return b":N-3\r\n"
        if args not in self.axes:
            return b":N-2\r\n"
        tenths = round((self.position_um() - self._origin_um) * 10) if args == "Z" else 0
        return f":A {tenths}\r\n".encode()

    def _here(self, args: str) -> bytes:
        axis = args.partition("=")[0]
        if axis not in self.axes:
            return b":N-2\r\n"
        if axis == "Z":
            self._origin_um = self.position_um()
        return b":A\r\n"

if __name__ == "__main__":
    serve_forever(AsiStageSimulator(), "ASI MS-2000 Z stage simulator")
