"""An Optotune Lens Driver 4 with its lens, simulated on a pseudo-terminal.

    python -m simulators.optotune_lens     # prints "... on /dev/pts/N", serves until Ctrl-C

Speaks the driver's binary protocol (CRC-16/ARC framed). The lens settles a few
milliseconds after each command; its focal power follows the current linearly.
"""
from __future__ import annotations

import struct
import time

from devices.optotune_lens import DEFAULT_BAUDRATE, crc16_arc, frame
from simulators.serial_device import PtySerialDevice, serve_forever

# Command -> number of bytes after the command letters (before the CRC).
COMMANDS = {b"Aw": 2, b"Ar": 2, b"CrMA": 2, b"MwDA": 0, b"MwCA": 0, b"MMA": 0, b"PwDA": 4, b"PrDA": 4,
            b"TCA": 0, b"PwTA": 4, b"H": 0}


class OptotuneLensSimulator(PtySerialDevice):
    def __init__(self, max_current_ma: float = 292.84, dpt_per_ma: float = 0.05, firmware_type: str = "A",
                 settle_s: float = 0.005, temperature_c: float = 31.5, baudrate: int | None = None):
        self.max_current_ma = max_current_ma
        self.dpt_per_ma = dpt_per_ma
        self.firmware_type = firmware_type
        self.settle_s = settle_s
        self.temperature_c = temperature_c
        self.mode = b"D"
        self.upper_temperature_limit_c = 20.0  # the last PwTA's; the focal-power range narrows above 20 °C
        self._previous_ma = self._target_ma = 0.0
        self._changed = 0.0
        self._buffer = b""
        self._started = False
        super().__init__(baudrate or DEFAULT_BAUDRATE)

    @property
    def offset_dpt(self) -> float:
        return 5.0 if self.firmware_type == "A" else 0.0

    def current_ma(self) -> float:
        """What the lens is driven with now (the previous value until it has settled)."""
        return self._target_ma if time.monotonic() - self._changed >= self.settle_s else self._previous_ma

    def focal_power_dpt(self) -> float:
        return self.current_ma() * self.dpt_per_ma

    def error_answer(self, code: int) -> bytes:
        return frame(b"E" + bytes([code])) + b"\r\n"

    def _answer_frame(self, payload: bytes) -> bytes:
        return frame(payload) + b"\r\n"

    def handle(self, data: bytes) -> list[bytes]:
        self._buffer += data
        answers = []
        while self._buffer:
            if self._buffer.startswith(b"Start"):
                self._buffer = self._buffer[5:]
                self.received.append(b"Start")
                self._set_current(0.0)  # the handshake resets the current
                answers.append(b"Ready\r\n")
                continue
            command = next((c for c in sorted(COMMANDS, key=len, reverse=True) if self._buffer.startswith(c)), None)
            if command is None:
                if len(self._buffer) < 4:
                    break  # wait for more bytes
                self._buffer = b""
                answers.append(self.error_answer(3))
                continue
            size = len(command) + COMMANDS[command] + 2
            if len(self._buffer) < size:
                break
            message, self._buffer = self._buffer[:size], self._buffer[size:]
            self.received.append(message)
            body, crc = message[:-2], message[-2:]
            if struct.pack("<H", crc16_arc(body)) != crc:
                answers.append(self.error_answer(1))
                continue
            answer = self._execute(command, body[len(command):])
            if answer is not None:
                answers.append(self._answer_frame(answer))
        return answers

    def _set_current(self, current_ma: float) -> None:
        self._previous_ma, self._target_ma = self.current_ma(), current_ma
        self._changed = time.monotonic()

    def _execute(self, command: bytes, value: bytes) -> bytes | None:
        if command == b"MwDA":
            self.mode = b"D"
            return b"MDA"
        if command == b"MwCA":
            # As the real firmware answers: a status byte, then max and min focal power (as PwTA's)
            self.mode = b"C"
            return b"MCA" + bytes([0]) + self._focal_power_range_value()
        if command == b"Aw":
            raw = struct.unpack(">h", value)[0]
            self._set_current(raw * self.max_current_ma / 4096)
            return None
        if command == b"PwDA":
            power_dpt = struct.unpack(">h", value[:2])[0] / 200 - self.offset_dpt
            self._set_current(power_dpt / self.dpt_per_ma)
            return None
        if command == b"PwTA":
            # The focal-power range the lens can reach; it narrows as the lens warms.
            self.upper_temperature_limit_c = struct.unpack(">hh", value)[0] / 16
            return b"PTA" + self._focal_power_range_value()
        return self._query(command)

    def _focal_power_range_value(self) -> bytes:
        """Max and min focal power (big-endian, PrDA's scale) up to the upper temperature limit."""
        warming_c = max(0.0, self.upper_temperature_limit_c - 20)
        reach_dpt = self.max_current_ma * self.dpt_per_ma * (1 - 0.002 * warming_c)
        return struct.pack(">hh", round((reach_dpt + self.offset_dpt) * 200),
                           round((-reach_dpt + self.offset_dpt) * 200))

    def _query(self, command: bytes) -> bytes | None:
        """The answer to a command that only reads; None for one the driver does not know."""
        if command == b"H":
            return b"H" + self.firmware_type.encode()
        if command == b"CrMA":
            return b"CMA" + struct.pack(">h", round(self.max_current_ma * 100))
        if command == b"MMA":
            return b"MMA" + bytes([1 if self.mode == b"D" else 5])
        if command == b"Ar":
            return b"A" + struct.pack(">h", round(self.current_ma() / self.max_current_ma * 4096))
        if command == b"PrDA":
            return b"PD" + struct.pack(">h", round((self.focal_power_dpt() + self.offset_dpt) * 200))
        if command == b"TCA":
            return b"TCA" + struct.pack(">h", round(self.temperature_c * 16))
        return None

if __name__ == "__main__":
    serve_forever(OptotuneLensSimulator(), "Optotune Lens Driver 4 simulator")
