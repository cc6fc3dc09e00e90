"""An Optotune Lens Driver 4 (electrically tunable lens), over its binary serial protocol.

Frames are the command bytes followed by their CRC-16/ARC, little-endian; answers end with
their own CRC and CR LF, and every answer's CRC is checked. The lens is driven in current
mode (milliamps, scaled by the driver's maximum current ``CrMA``) or focal-power mode
(diopters, encoded with an offset that depends on the firmware type).
"""
from __future__ import annotations

import struct

from devices.errors import DeviceErrorReply, DeviceProtocolError, UnsupportedFeatureError
from devices.focus_drive import FocusDrive, FocusLimits
from devices.serial_link import SerialLink

CURRENT_STEPS = 4096          # full scale of the current register
FOCAL_POWER_STEPS_PER_DPT = 200
TEMPERATURE_STEPS_PER_C = 16
# Focal power is sent as (dpt + offset) * 200; the offset depends on the firmware type.
FOCAL_POWER_OFFSET_DPT = {"A": 5.0}
ERROR_CODES = {1: "CRC mismatch in the command", 2: "command not available in this firmware",
               3: "command not recognised", 4: "no lens connected"}
MODES = {"current": b"D", "focal power": b"C"}
# What each mode switch answers after its echo: MwCA adds a status byte and the focal-power range (max, min,
# big-endian int16 each, scaled as PrDA), as the public Lens Driver 4 drivers read it ('>xxxBhh').
MODE_ANSWER_BYTES = {"current": 0, "focal power": 5}
DEFAULT_BAUDRATE = 115200  # the Lens Driver 4's
# The temperatures the focal-power range is asked for as the lens opens (PwTA): the driver answers the
# range it can hold across them, and the lens warms as it works.
TEMPERATURE_LIMITS_C = (20.0, 45.0)


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0xA001 reflected, initial 0), as the Lens Driver 4 computes it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(payload: bytes) -> bytes:
    """Payload plus its CRC, little-endian."""
    return payload + struct.pack("<H", crc16_arc(payload))


class OptotuneLens(FocusDrive):
    """The lens on channel A. ``mode`` is "current" (unit mA) or "focal power" (unit dpt)."""

    def __init__(self, port: str, mode: str = "focal power", name: str = "Optotune lens",
                 limits: FocusLimits | None = None, timeout_s: float = 1.0, baudrate: int = DEFAULT_BAUDRATE,
                 temperature_limits_c: tuple[float, float] = TEMPERATURE_LIMITS_C):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self._link = SerialLink(name, port, baudrate=baudrate, timeout_s=timeout_s)
        self.name = name
        self.baudrate = baudrate
        try:
            self._handshake()
            self.firmware_type = self._firmware_type()
            self.max_current_ma = self._read_max_current_ma()
            self._set_mode(mode)
            self.mode = mode
            # What the lens can reach, as the driver reports it: checked before any move (FocusDrive).
            self._focal_power_range_dpt = (None if mode == "current"
                                           else self.set_temperature_limits_c(*temperature_limits_c))
        except Exception:
            self._link.close()
            raise
        if limits is None:
            limits = self.device_range if mode == "current" else FocusLimits(-5.0, 15.0, "dpt")
        super().__init__(name, limits)
        self._target: float | None = None

    # -- the lens's own vocabulary --
    def set_current_ma(self, current_ma: float) -> None:
        self._require_mode("current")
        self.move_to(current_ma)

    def current_ma(self) -> float:
        answer = self._query(b"Ar\x00\x00", b"A", 2)
        return struct.unpack(">h", answer)[0] * self.max_current_ma / CURRENT_STEPS

    def set_focal_power_dpt(self, power_dpt: float) -> None:
        self._require_mode("focal power")
        self.move_to(power_dpt)

    def focal_power_dpt(self) -> float:
        answer = self._query(b"PrDA\x00\x00\x00\x00", b"PD", 2)
        return struct.unpack(">h", answer)[0] / FOCAL_POWER_STEPS_PER_DPT - self._offset_dpt()

    def temperature_c(self) -> float:
        answer = self._query(b"TCA", b"TCA", 2)
        return struct.unpack(">h", answer)[0] / TEMPERATURE_STEPS_PER_C

    def set_temperature_limits_c(self, lower_c: float, upper_c: float) -> tuple[float, float]:
        """Set the temperature range; returns the focal-power range (min, max) in dpt it allows."""
        if not lower_c < upper_c:
            raise ValueError(f"lower temperature limit {lower_c} must be below the upper {upper_c}")
        payload = b"PwTA" + struct.pack(">hh", round(upper_c * TEMPERATURE_STEPS_PER_C),
                                        round(lower_c * TEMPERATURE_STEPS_PER_C))
        answer = self._query(payload, b"PTA", 4)
        self._focal_power_range_dpt = self._focal_power_range_from(
            answer, f"PwTA (its focal-power range for {lower_c:g} to {upper_c:g} °C)")
        self._temperature_limits_c = (lower_c, upper_c)
        return self._focal_power_range_dpt

    # -- FocusDrive --
    @property
    def device_range(self) -> FocusLimits:
        """In current mode: what the current register reaches (its maximum current, CrMA, scaled to
        -4096..4095 steps); in focal-power mode: the range the driver answered for the temperature limits."""
        if self.mode == "current":
            return FocusLimits(-self.max_current_ma, self.max_current_ma * (CURRENT_STEPS - 1) / CURRENT_STEPS, "mA",
                               f"the lens's maximum current, CrMA: {self.max_current_ma:g} mA")
        assert self._focal_power_range_dpt is not None  # asked as the lens opened in focal-power mode
        low_dpt, high_dpt = self._focal_power_range_dpt
        low_c, high_c = self._temperature_limits_c
        return FocusLimits(low_dpt, high_dpt, "dpt", f"the lens's focal-power range for {low_c:g} to {high_c:g} °C, "
                                                     "as the driver answered PwTA")

    @property
    def resolution(self) -> float:
        """One step of the register the driver writes: of the current, or of the focal power."""
        return self.max_current_ma / CURRENT_STEPS if self.mode == "current" else 1.0 / FOCAL_POWER_STEPS_PER_DPT

    def _do_move_to(self, position: float) -> None:
        if self.mode == "current":
            raw = round(position / self.max_current_ma * CURRENT_STEPS)
            self._send(b"Aw" + struct.pack(">h", max(-CURRENT_STEPS, min(CURRENT_STEPS - 1, raw))))
        else:
            raw = round((position + self._offset_dpt()) * FOCAL_POWER_STEPS_PER_DPT)
            self._send(b"PwDA" + struct.pack(">h", raw) + b"\x00\x00")
        self._target = position

    def _do_read_position(self) -> float:
        return self.current_ma() if self.mode == "current" else self.focal_power_dpt()

    def _do_is_busy(self) -> bool:
        # The driver has no busy flag: the lens has settled when it reads back the target, to the register's
        # rounding (half a step). A whole step's tolerance took a one-step move as settled before it began.
        if self._target is None:
            return False
        return abs(self._do_read_position() - self._target) > 0.6 * self.resolution

    # -- protocol --
    def _handshake(self) -> None:
        self._link.write(b"Start")
        answer = self._link.read_until(b"\n", max_bytes=64, what="Ready after Start")
        if answer != b"Ready\r\n":
            # Noise here is most often a port set to another rate than the driver's.
            raise DeviceProtocolError(self.name, f"handshake failed at {self.baudrate} baud: expected 'Ready' "
                                                 f"(the Lens Driver 4 talks at {DEFAULT_BAUDRATE})", answer)

    def _firmware_type(self) -> str:
        return self._query(b"H", b"H", 1).decode("ascii", "replace")

    def _read_max_current_ma(self) -> float:
        answer = self._query(b"CrMA\x00\x00", b"CMA", 2)
        max_current_ma = struct.unpack(">h", answer)[0] / 100.0
        if max_current_ma <= 0:  # every current is scaled by it: the range would be upside down, or 0..0
            raise DeviceProtocolError(self.name, f"answered CrMA (its maximum current) with {max_current_ma:g} mA; "
                                                 "a lens's maximum current is above 0 mA", answer)
        return max_current_ma

    def _set_mode(self, mode: str) -> None:
        code = MODES[mode]
        answer = self._query(b"Mw" + code + b"A", b"M" + code + b"A", MODE_ANSWER_BYTES[mode])
        if mode == "focal power":
            # The status byte's codes are documented nowhere public, and public drivers ignore it; so do we.
            self._focal_power_range_dpt = self._focal_power_range_from(
                answer[1:], "MwCA (its focal-power range on entering focal-power mode)")

    def _focal_power_range_from(self, value: bytes, what: str) -> tuple[float, float]:
        """(min, max) in dpt from an answer's max and min focal power (big-endian int16, as PrDA's);
        a range upside down or empty is a protocol error naming ``what`` was asked."""
        high, low = struct.unpack(">hh", value)
        offset = self._offset_dpt()
        low_dpt, high_dpt = low / FOCAL_POWER_STEPS_PER_DPT - offset, high / FOCAL_POWER_STEPS_PER_DPT - offset
        if not low_dpt < high_dpt:
            raise DeviceProtocolError(self.name, f"answered {what} with {high_dpt:g} dpt at most and {low_dpt:g} at "
                                                 "least: no range", value)
        return low_dpt, high_dpt

    def _offset_dpt(self) -> float:
        return FOCAL_POWER_OFFSET_DPT.get(self.firmware_type, 0.0)

    def _require_mode(self, mode: str) -> None:
        if self.mode != mode:
            raise UnsupportedFeatureError(self.name, f"the lens is in {self.mode} mode; open it with mode={mode!r}")

    def _send(self, payload: bytes) -> None:
        self._link.write(frame(payload))

    def _query(self, payload: bytes, echo: bytes, n_value_bytes: int) -> bytes:
        """Send a framed command; check the answer's echo and CRC; return its value bytes."""
        self._send(payload)
        expected = len(echo) + n_value_bytes + 4  # + CRC + CR LF
        head = self._link.read_exactly(1, what=f"the answer to {payload[:4]!r}")
        if head == b"E":  # error answers are 'E', code, CRC, CR LF
            rest = self._link.read_exactly(5, what="the rest of an error answer")
            answer = head + rest
            self._check_crc(answer)
            code = answer[1]
            raise DeviceErrorReply(self.name, f"error {code}: {ERROR_CODES.get(code, 'unknown error code')}", answer)
        answer = head + self._link.read_exactly(expected - 1, what=f"the answer to {payload[:4]!r}")
        self._check_crc(answer)
        if not answer.startswith(echo):
            raise DeviceProtocolError(self.name, f"answer does not echo {echo!r}", answer)
        return answer[len(echo): len(echo) + n_value_bytes]

    def _check_crc(self, answer: bytes) -> None:
        body, crc, tail = answer[:-4], answer[-4:-2], answer[-2:]
        if tail != b"\r\n" or struct.pack("<H", crc16_arc(body)) != crc:
            raise DeviceProtocolError(self.name, "answer fails its CRC check", answer)

    def close(self) -> None:
        self._link.close()
