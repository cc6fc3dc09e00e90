"""The hook between the session and an acquisition that streams: frames in, each with its z.

The stepped loop (move, settle, snap) lives in the session itself. A hardware-sequenced stack
(``acquisition.sequenced``) or a free-running lens sweep (``acquisition.lens_stream``) instead
hands the session an iterator of ``AcquiredSlice`` and ``LostSlice``, in plan order; the session
stores, fuses and records each one as it comes, exactly as it does a stepped slice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from collections.abc import Generator

from acquisition.session_report import RetryRecord
from devices.camera import Frame
from devices.errors import TRANSIENT_ERRORS

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
