"""The hook between the session and an acquisition that streams: frames in, each with its z.

The stepped loop (move, settle, snap) lives in the session itself. A hardware-sequenced stack
(``acquisition.sequenced``) or a free-running lens sweep (``acquisition.lens_stream``) instead
hands the session an iterator of ``AcquiredSlice`` and ``LostSlice``, in plan order; the session
stores, fuses and records each one as it comes, exactly as it does a stepped slice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from collections.abc import Generator

from acquisition.session_report import RetryRecord
from devices.camera import Frame
from devices.errors import TRANSIENT_ERRORS, DeviceError

# Stepped, sequenced or streamed alike: a camera that loses this many positions in a row has stopped.
MAX_LOST_IN_A_ROW = 3


def with_retries(action, what: str, retries: int, log: list[RetryRecord], index: int):
    """Run ``action``; retry transient device errors (``devices.errors.TRANSIENT_ERRORS``; a lost
    connection is not one) up to ``retries`` times, logging each try that failed."""
    for attempt in range(retries + 1):
        try:
            return action()
        except TRANSIENT_ERRORS as error:
            log.append(RetryRecord(slice=index, what=what, attempt=attempt + 1, error=str(error)))
            if attempt == retries:
                raise


class GaveUpWaiting(DeviceError):
    """No frame for camera.give_up_after_s: the acquisition ends; positions never tried are not lost ones."""


class FrameWait:
    """How long the camera has kept the acquisition waiting for a frame: retries and lost frames in a
    row wait ``give_up_after_s`` at most, all together (the profile's camera.give_up_after_s), stepped,
    sequenced or streamed alike. The clock runs from the first try after the last frame that came."""

    def __init__(self, camera_name: str, timeout_s: float, give_up_after_s: float):
        self.camera_name = camera_name
        self.timeout_s = timeout_s
        self.give_up_after_s = give_up_after_s
        self._since_s: float | None = None   # perf_counter() when the wait began; None: a frame just came
        self._tries = 0   # tries for a frame since the last one came (each asked for its timeout here)

    def next_timeout_s(self, lost_in_a_row: int) -> float:
        """The next try's timeout: camera.timeout_s, or less where that is all that is left of the
        limit; a DeviceError (not transient: retrying would only wait longer) once it is spent.
        ``lost_in_a_row``: positions given up on since the last frame, which the error names."""
        now_s = time.perf_counter()
        if self._since_s is None:
            self._since_s = now_s
        waited_s = now_s - self._since_s
        if waited_s >= self.give_up_after_s:
            # Every try since the last frame failed (or this would not be asked again): the count the user can check.
            tries = f"{self._tries} {'try' if self._tries == 1 else 'tries'} failed"
            lost = f"{lost_in_a_row} position{'' if lost_in_a_row == 1 else 's'} lost in a row"
            raise GaveUpWaiting(self.camera_name, f"no frame for {waited_s:.1f} s ({tries}, {lost}): "
                                                  f"gave up after camera.give_up_after_s = {self.give_up_after_s:g} s")
        self._tries += 1
        return min(self.timeout_s, self.give_up_after_s - waited_s)

    def waiting_since(self, since_s: float) -> None:
        """A try failed whose wait began at ``since_s`` (perf_counter()), unless the wait was already running.

        Where it was not, a frame came during that try (a sequence's run brings several), and the try then failed
        waiting for the next: it counts as a failed try, though it asked for its timeout before that frame came."""
        if self._since_s is None:
            self._since_s = since_s
            self._tries += 1

    def frame_came(self) -> None:
        self._since_s = None
        self._tries = 0


@dataclass
class AcquiredSlice:
    """A frame for planned position ``planned_index``, focused at ``z`` (the focus drive's unit).

    ``timing``: seconds for the session's per-slice record: move_s, settle_s and exposure_s
    (for streams: the wait for this frame since the previous slice was handed over).
    """

    frame: Frame
    z: float
    planned_index: int
    timing: dict[str, float] = field(default_factory=dict)


@dataclass
class LostSlice:
    """Planned position ``planned_index`` (at ``z``) got no usable frame; ``error`` says why."""

    planned_index: int
    z: float
    error: str


Acquired = AcquiredSlice | LostSlice


@runtime_checkable
class Acquirer(Protocol):
    """Acquires a whole plan and yields its slices as they come."""

    mode: str  # "sequenced" or "stream", for session.json

    def frames(self, positions: list[float], retry_log: list[RetryRecord]) -> Generator[Acquired, None, None]:
        """Every planned position once, in order, as an AcquiredSlice or a LostSlice.

        Transient device errors that were retried go into ``retry_log``; an error that ends the
        acquisition is raised after the positions it leaves unacquired were yielded as lost.
        Closing the iterator stops the devices.
        """

    def report(self) -> dict:
        """What session.json records about this acquisition (mode, sequences, flagged frames...)."""
