"""A Z stage on an ASI MS-2000 controller, over its serial command set.

On the wire: ASCII commands ending in CR; answers ``:A ...`` ending in CR LF; positions in
tenths of a micrometre. In this API: micrometres.
"""
from __future__ import annotations

import math

from devices.errors import DeviceErrorReply, DeviceProtocolError, PositionOutOfRangeError
from devices.focus_drive import FocusDrive, FocusLimits
from devices.serial_link import SerialLink

# What the MS-2000 error codes mean (ASI's MS-2000 programming manual).
ERROR_CODES = {
    1: "unknown command",
    2: "unrecognised axis parameter",
    3: "missing parameters",
    4: "parameter out of range",
    5: "operation failed",
    6: "undefined error",
    7: "invalid card address",
    21: "serial command halted by the HALT command",
}
PARAMETER_OUT_OF_RANGE = 4   # the answer to a move beyond the travel
TENTHS_PER_UM = 10.0
DEFAULT_BAUDRATE = 9600   # the MS-2000's usual setting


def describe_error(code: int) -> str:
    if code in ERROR_CODES:
        return ERROR_CODES[code]
    if 8 <= code <= 20:
        return "reserved error code (filter wheel or card specific)"
    return "unknown error code"


class AsiZStage(FocusDrive):
    """The Z axis of an MS-2000. ``port`` is a device name or a pyserial URL."""

    def __init__(self, port: str, name: str = "ASI MS-2000 Z stage", axis: str = "Z",
                 limits: FocusLimits = FocusLimits(-10000.0, 10000.0, "um"), baudrate: int = DEFAULT_BAUDRATE,
                 timeout_s: float = 1.0, speed_um_per_s: float | None = None):
        """``speed_um_per_s``: the stage's travel speed (the profile's focus.speed_um_per_s), which the wait for
        a move allows for beyond its settle timeout; None: no allowance."""
        super().__init__(name, limits)
        self.travel_speed = speed_um_per_s
        self.axis = axis
        self.baudrate = baudrate
        self._link = SerialLink(name, port, baudrate=baudrate, timeout_s=timeout_s)

    def move_to_um(self, z_um: float) -> None:
        self.move_to(z_um)

    def position_um(self) -> float:
        return self.position()

    def halt(self) -> None:
        """Stop any motion now (``\\``). The controller may answer :N-21 to the interrupted move."""
        self._command("\\", allow_halt=True)
        self._known_position = None  # (it stopped somewhere on the way)

    def zero_here(self) -> None:
        """Make the current position zero (``H Z``)."""
        self._command(f"H {self.axis}")
        self._known_position = 0.0

    @property
    def resolution(self) -> float:
        """The controller counts in tenths of a micrometre."""
        return 1 / TENTHS_PER_UM

    def _do_move_to(self, z_um: float) -> None:
        try:
            self._command(f"M {self.axis}={round(z_um * TENTHS_PER_UM)}")
        except DeviceErrorReply as error:
            if error.code != PARAMETER_OUT_OF_RANGE:
                raise
            # Deterministic: the controller refuses the same z again, so this is no error to retry.
            raise PositionOutOfRangeError(self.name, f"refused to move to {z_um:g} µm: {error.message}, beyond the "
                                                     f"stage's travel; set focus.limits (now {self.limits.text()}) to "
                                                     "the stage's travel", error.reply) from None

    def _do_read_position(self) -> float:
        answer = self._command(f"W {self.axis}")
        try:
            tenths = float(answer.split()[0])
        except (IndexError, ValueError):
            tenths = math.nan
        if not math.isfinite(tenths):  # (float() reads "nan" and "inf": a plan centred there went to nan um)
            raise DeviceProtocolError(self.name, "reported a position that is not a number", answer)
        return tenths / TENTHS_PER_UM

    def _do_is_busy(self) -> bool:
        self._link.write(b"/\r")
        answer = self._link.read_until(b"\n", what="the busy status").strip()
        if answer.startswith(b":N"):
            self._raise_error(answer)
        status = answer.lstrip(b":A").strip()
        if status not in (b"B", b"N"):
            raise self._unexpected("busy status is neither B nor N", answer)
        self._link.understood = True
        return status == b"B"

    def _command(self, command: str, allow_halt: bool = False) -> str:
        """Send one command; return the text after ``:A``, or raise the error it answered."""
        self._link.write(command.encode("ascii") + b"\r")
        answer = self._link.read_until(b"\n", what=f"the answer to {command!r}").strip()
        if answer.startswith((b":A", b":N")):  # an answer of the protocol: the rate is right
            self._link.understood = True
        if answer.startswith(b":A"):
            return answer[2:].decode("ascii", "replace").strip()
        if answer.startswith(b":N"):
            if allow_halt and answer == b":N-21":
                return ""
            self._raise_error(answer)
        raise self._unexpected(f"unexpected answer to {command!r}", answer)

    def _unexpected(self, what: str, answer: bytes) -> DeviceProtocolError:
        # The MS-2000 answers in printable ASCII: anything else, before it has ever answered well, is most
        # often a port at another rate; once it has, the rate is right and the answer was garbled on the line.
        if any(not 32 <= byte < 127 for byte in answer):
            if self._link.understood:
                what += ", garbled on the line: the controller answered correctly before on this port"
            else:
                what += f" at {self.baudrate} baud; set focus.baudrate to the controller's rate"
        return DeviceProtocolError(self.name, what, answer)

    def _raise_error(self, answer: bytes):
        try:
            code = int(answer[3:] if answer.startswith(b":N-") else answer[2:])
        except ValueError:
            raise DeviceProtocolError(self.name, "malformed error answer", answer) from None
        raise DeviceErrorReply(self.name, f"error {code}: {describe_error(code)}", answer.decode("ascii", "replace"),
                               code=code)

    def close(self) -> None:
        self._link.close()
