"""Hardware-sequenced z-stacks on Micro-Manager: the stage steps on the camera's trigger.

The z-positions are loaded into the stage (MMCore ``loadStageSequence``, ``startStageSequence``),
the camera runs a sequence acquisition of as many frames, and each frame popped from the
circular buffer is the next position's: frame k is stamped with position k. Nothing waits
for a settle between slices: the stack comes at the camera's frame rate. Plans longer than the
stage's sequence memory run as several sequences.

A sequence the camera ends early (a lost frame, a timeout) is retried from the first position
that has no frame, ``retries`` times in a row; after that, as in a stepped stack, that position
is reported lost (with its z) and the next sequence starts from the one after it. A run whose stage
fails to arm (the move to its first position, the settle, the sequence loaded and started) is
retried and lost alike, recorded as a ``move``: the error is the stage's, and its waits are not the
camera's (they do not count towards ``give_up_after_s``: no frame was asked for). Only
MAX_LOST_IN_A_ROW lost positions in a row end the session, and so does waiting ``give_up_after_s``
in all for a frame (``acquisition.acquirer.FrameWait``); positions never tried are not reported
lost (the frames already acquired are stored and fused by then).
Assumes the camera delivers every frame it exposes: one that exposed a frame and lost it
silently would shift the stamps of those after it (MMCore's circular buffer cannot tell).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator

from acquisition.session_report import RetryRecord
from acquisition.acquirer import MAX_LOST_IN_A_ROW, Acquired, AcquiredSlice, FrameWait, LostSlice
from devices.errors import TRANSIENT_ERRORS, DeviceError



class HardwareSequencedAcquirer:
    """A Micro-Manager camera and sequenceable focus stage (``devices.micromanager``)."""

    mode = "sequenced"

    def __init__(self, camera, focus, frame_timeout_s: float = 5.0, settle_timeout_s: float = 5.0, retries: int = 2,
                 give_up_after_s: float = 20.0, before_sequence: Callable[[int], None] = lambda first_index: None):
        self.camera = camera
        self.focus = focus
        self.frame_wait = FrameWait(camera.name, frame_timeout_s, give_up_after_s)
        self.settle_timeout_s = settle_timeout_s
        self.retries = retries
        self.before_sequence = before_sequence  # told each run's first planned index (the rig arms its faults)
        self.max_length = focus.sequence_max_length()
        self.sequences: list[dict] = []   # per sequence run: first planned index, frames asked, frames got
        self.cleanup_errors: list[str] = []

    def frames(self, positions: list[float], retry_log: list[RetryRecord]) -> Generator[Acquired, None, None]:
        done, failures_in_a_row, lost_in_a_row = 0, 0, 0
        while done < len(positions):
            chunk = positions[done:done + self.max_length]
            record = {"first_index": done, "frames_asked": len(chunk), "frames_got": 0}
            self.sequences.append(record)
            self.before_sequence(done)
            stage_ready = False
            try:
                self._arm_stage(chunk)
                stage_ready = True
                previous_s = time.perf_counter()
                sequence = self._sequence(len(chunk), lost_in_a_row)
                with contextlib.closing(sequence):  # closing stops the camera and the stage at once
                    for offset, frame in enumerate(sequence):
                        now_s = time.perf_counter()
                        failures_in_a_row = lost_in_a_row = 0  # a frame arrived: what failed before was not in a row
                        self.frame_wait.frame_came()
                        record["frames_got"] += 1
                        yield AcquiredSlice(frame, chunk[offset], done, {"move_s": 0.0, "settle_s": 0.0,
                                                                         "exposure_s": round(now_s - previous_s, 5)})
                        done += 1
                        previous_s = time.perf_counter()
            except TRANSIENT_ERRORS as error:
                # A stage that failed asked the camera for nothing: its waits are not the camera's (give_up_after_s).
                if stage_ready:
                    self.frame_wait.waiting_since(previous_s)  # the failed frame was awaited since the last one came
                failures_in_a_row += 1
                retry_log.append(RetryRecord(slice=done, what="sequence" if stage_ready else "move",
                                             attempt=failures_in_a_row, error=str(error)))
                if failures_in_a_row > self.retries:
                    yield LostSlice(done, positions[done], str(error))   # an explicit gap; go on past it
                    done, failures_in_a_row, lost_in_a_row = done + 1, 0, lost_in_a_row + 1
                    if lost_in_a_row >= MAX_LOST_IN_A_ROW:
                        raise

    def _arm_stage(self, chunk: list[float]) -> None:
        """Move to the first position, settle, and arm the stage with ``chunk`` (it steps on each trigger)."""
        self.focus.move_to(chunk[0])
        self.focus.wait_until_settled(self.settle_timeout_s)
        self.focus.load_sequence(chunk)
        self.focus.start_sequence()

    def _sequence(self, n_frames: int, lost_in_a_row: int) -> Generator:
        """Stream ``n_frames`` from the camera on the armed stage; stop the stage's sequence however it ends."""
        try:
            # Every frame of the run may wait this long; a shorter one only while the limit runs out.
            frame_timeout_s = self.frame_wait.next_timeout_s(lost_in_a_row)
            yield from self.camera.sequence(n_frames, timeout_s=frame_timeout_s)
        finally:
            try:
                self.focus.stop_sequence()
            except DeviceError as error:  # the acquisition's own error (if any) says more; keep this one too
                self.cleanup_errors.append(str(error))

    def report(self) -> dict:
        return {"mode": self.mode, "sequence_max_length": self.max_length, "sequences": self.sequences,
                "cleanup_errors": self.cleanup_errors}
