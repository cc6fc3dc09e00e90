"""Device errors: each says which device failed and, where it answered, what it said.

    DeviceError
    ├── DeviceNotFoundError      the port, file, adapter or camera named does not exist
    ├── DeviceTimeoutError       the device did not answer (or settle) within its deadline
    ├── DeviceErrorReply         the device answered with an error code; ``reply`` holds it
    ├── DeviceProtocolError      the answer was not valid for the protocol (garbage, bad CRC)
    ├── DeviceDisconnectedError  the port closed or the device vanished mid-use
    ├── UnsupportedFeatureError  the device has no such feature (e.g. a camera without Gain)
    └── PositionOutOfRangeError  a move was asked for beyond the limits, or the device refused it as
                                 beyond its travel (deterministic: never retried)
"""
from __future__ import annotations


import difflib

MAX_QUOTED_REPLY = 120  # characters of a reply that an error message quotes


def seconds_text(seconds: float) -> str:
    """A duration for a message: 3 significant digits ("0.49 s", "12.3 s"), whole seconds from 100 s."""
    return f"{seconds:.0f} s" if seconds >= 100 else f"{seconds:.3g} s"


def did_you_mean(name: str, known: list[str], what: str) -> str:
    """For a name not found among ``known`` (``what``: "devices"): the nearest, else all of them."""
    if not known:
        return f"it has no {what}"
    guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean {guess[0]!r}?" if guess else f"its {what}: {', '.join(known)}"


class DeviceError(Exception):
    """Base of every device error; ``device`` names the device, ``message`` says what failed, ``reply``
    is its answer if any."""

    def __init__(self, device: str, message: str, reply: bytes | str | None = None):
        self.device = device
        self.message = message
        self.reply = reply
        quoted = repr(reply) if reply else ""
        if reply and len(quoted) > MAX_QUOTED_REPLY:  # a port streaming junk: 4 KB of it helps no one read the error
            unit = "bytes" if isinstance(reply, bytes) else "characters"
            quoted = f"{quoted[:MAX_QUOTED_REPLY]}... ({len(reply)} {unit} in all)"
        detail = f" (device replied {quoted})" if quoted else ""
        super().__init__(f"{device}: {message}{detail}")


class DeviceNotFoundError(DeviceError):
    """Raised when the port, configuration, adapter or camera named does not exist."""


class DeviceTimeoutError(DeviceError):
    """Raised when a device does not answer, or does not settle, within its deadline."""


class DeviceErrorReply(DeviceError):
    """Raised when a device answers with one of its error codes; ``code`` holds it where the protocol numbers them."""

    def __init__(self, device: str, message: str, reply: bytes | str | None = None, code: int | None = None):
        super().__init__(device, message, reply)
        self.code = code


class DeviceProtocolError(DeviceError):
    """Raised when an answer is not valid for the protocol: garbage bytes, a bad CRC, a wrong echo."""


class DeviceDisconnectedError(DeviceError):
    """Raised when the port closes or the device vanishes while in use."""


class UnsupportedFeatureError(DeviceError):
    """Raised when a setting is asked of a device that does not have it."""


class PositionOutOfRangeError(DeviceError):
    """Raised when a move is asked for outside the limits (nothing is sent), or the device itself refused
    the position as beyond its travel. Never retried: the same position is refused again."""


# Errors that may pass on a retry (a late answer, an error answer, a garbled reply); a lost
# connection, a missing device or a position beyond the travel will not.
TRANSIENT_ERRORS = (DeviceTimeoutError, DeviceErrorReply, DeviceProtocolError)
