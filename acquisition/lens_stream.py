"""A tunable-lens sweep with the camera free-running: every frame's focus is known from its time.

The camera streams without pause (``acquisition.frame_stream``) while the lens is stepped
through the sweep. Each command is logged with the time it was sent and the time the lens had
surely taken it (its position read back after it: ``acquisition.lens_settling``); each
frame's exposure window then says which power it saw and whether the lens held still for all
of it. The first still frame at a step becomes that step's slice and the lens is sent on at
once; frames exposed while it moved are flagged and dropped (not stored, not fused: a frame
focused between two planes would blur the fusion), and extra still frames are counted as
spares. session.json lists the flagged frames.

A frame the camera drops costs only time: the lens holds still until a frame of its step comes.
A step whose wait fails with a transient error (no still frame within the timeout; a camera error,
after which the stream is started again) is retried ``retries`` times and then recorded as lost,
as in a stepped stack, and the sweep goes on; MAX_LOST_IN_A_ROW lost in a row end it, and so does
waiting ``give_up_after_s`` in all for a still frame (``acquisition.acquirer.FrameWait``).

The stream is bounded by the frames each position can take (``frames_per_step``: the settle's frames at one an
exposure, and those the stream keeps while the session stores a slice), so a long settle or a short exposure
runs out of none; a settle of more than SETTLE_FRAMES_AT_MOST exposures is refused (``acquisition_mode``).
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Generator

from acquisition.session_report import RetryRecord
from acquisition.acquirer import MAX_LOST_IN_A_ROW, Acquired, AcquiredSlice, FrameWait, GaveUpWaiting, LostSlice, \
    with_retries
from acquisition.frame_stream import QUEUED_FRAMES_AT_MOST, FrameStream
from acquisition.lens_settling import LensTrajectory
from devices.camera import Frame, exposure_text, frame_wait_s
from devices.errors import TRANSIENT_ERRORS, DeviceError, DeviceTimeoutError, seconds_text

# A frame whose camera stamps no exposure start (GenICam through harvesters, Micro-Manager) is timed by when it
# arrived, after its readout and transfer (USB3 or GigE: a few ms, tens at full frame): its exposure is taken to
# lie anywhere from this long plus the exposure before its arrival up to the arrival, and it is kept as still only
# if the lens held still all that time.
ARRIVAL_LATENCY_S = 0.05

# A stream that would take more frames than this at each position while the lens settles is refused: it
# would discard them all, and a stepped sweep (plan.stream: false) waits out the same settle without them.
SETTLE_FRAMES_AT_MOST = 1000


def settle_frames(settle_s: float, exposure_ms: float) -> int:
    """The frames a free-running camera can expose while the lens settles: one an exposure at most (no
    camera streams faster than its exposure; a camera's frame period may be longer, never shorter)."""
    return math.ceil(settle_s * 1000 / exposure_ms)


def frames_per_step(settle_s: float, exposure_ms: float) -> int:
    """The frames one position can take from the stream, at most: those kept waiting while the session stored
    the last slice and the lens was sent on (FrameStream keeps QUEUED_FRAMES_AT_MOST), the one under way as the
    lens was sent, those exposed while it settled, and the still frame."""
    return QUEUED_FRAMES_AT_MOST + 1 + settle_frames(settle_s, exposure_ms) + 1


def stream_bound(positions: int, settle_s: float, exposure_ms: float) -> tuple[int, str]:
    """The stream's bound for ``positions`` positions, and a note on it for the error once it is spent."""
    per_step = frames_per_step(settle_s, exposure_ms)
    return positions * per_step, (f"{per_step} a position for {positions}: focus.settle_ms {settle_s * 1000:g} "
                                  f"over camera.exposure_ms {exposure_ms:g}, and {QUEUED_FRAMES_AT_MOST + 2} more")


def exposure_window_s(frame: Frame, arrival_latency_s: float = ARRIVAL_LATENCY_S) -> tuple[float, float]:
    """(start, end), time.time() seconds, of a span the frame's exposure lies within: its exposure itself where
    the camera gives its start; else from ``arrival_latency_s`` plus the exposure before its arrival up to its
    arrival (a frame arrives after its readout and transfer, so its exposure ended an unknown while before)."""
    exposure_s = (frame.exposure_ms or 0.0) / 1000
    if frame.exposure_start_s is not None:
        return frame.exposure_start_s, frame.exposure_start_s + exposure_s
    return frame.timestamp_s - exposure_s - arrival_latency_s, frame.timestamp_s


class LensStreamAcquirer:
    """A streaming camera and a tunable lens (any FocusDrive that takes commands without waiting)."""

    mode = "stream"

    def __init__(self, camera, lens, settle_s: float, frame_timeout_s: float = 5.0, retries: int = 2,
                 give_up_after_s: float = 20.0, guard_s: float = 0.001, arrival_latency_s: float = ARRIVAL_LATENCY_S):
        if not arrival_latency_s >= 0:
            raise ValueError(f"arrival_latency_s must be 0 or more, got {arrival_latency_s!r}")
        self.arrival_latency_s = arrival_latency_s  # (for frames without their exposure's start: ARRIVAL_LATENCY_S)
        self.camera = camera
        self.lens = lens
        self.settle_s = settle_s
        self.frame_timeout_s = frame_timeout_s
        self.retries = retries
        self.frame_wait = FrameWait(camera.name, frame_timeout_s, give_up_after_s)
        self.guard_s = guard_s
        self.flagged: list[dict] = []   # frames exposed while the lens moved
        self.spares = 0                 # still frames beyond each step's first
        self.frames_seen = 0
        self._t0_s: float | None = None
        self._stream: FrameStream | None = None

    def frames(self, positions: list[float], retry_log: list[RetryRecord]) -> Generator[Acquired, None, None]:
        trajectory = LensTrajectory(self.settle_s, self.guard_s)
        lost_in_a_row = 0
        # Bounded by the frames each position can take (the settle's over the exposure), so that none runs out of them.
        # (A frame timed by its arrival is still only that much later: the bound counts it as settle.)
        max_frames, bound = stream_bound(len(positions), self.settle_s + self.arrival_latency_s,
                                         self.camera.exposure_ms)
        with FrameStream(self.camera, max_frames, self.frame_timeout_s, bound) as stream:
            self._stream = stream
            for index, power in enumerate(positions):
                t0 = time.perf_counter()
                sent_s = time.time()  # (before a retry's first try: the lens may have taken that one)
                with_retries(functools.partial(self._send_lens_to, power), "move", self.retries, retry_log, index)
                command = trajectory.command(sent_s, power, taken_by_s=time.time())
                self._t0_s = self._t0_s if self._t0_s is not None else trajectory.times_s[0]
                t1 = time.perf_counter()
                # The lens holds this power until the next command, so a retry (on a stream started
                # again after a camera error) still finds a frame of this step.
                wait = functools.partial(self._still_frame, stream, trajectory, command, lost_in_a_row)
                try:
                    frame = with_retries(wait, "frame", self.retries, retry_log, index)
                except TRANSIENT_ERRORS as error:  # an explicit gap at this position; the stream goes on
                    lost_in_a_row += 1
                    yield LostSlice(index, power, str(error))
                    if lost_in_a_row >= MAX_LOST_IN_A_ROW:
                        yield from (LostSlice(k, positions[k], str(error)) for k in range(index + 1, len(positions)))
                        raise
                    continue
                except GaveUpWaiting:  # as in stepped and sequenced stacks: the session ends here, none is "lost"
                    raise
                except DeviceError as error:  # the camera vanished: what is left is lost
                    yield from (LostSlice(k, positions[k], str(error)) for k in range(index, len(positions)))
                    raise
                lost_in_a_row = 0
                self.frame_wait.frame_came()
                yield AcquiredSlice(frame, power, index, {"move_s": round(t1 - t0, 5), "settle_s": 0.0,
                                                          "exposure_s": round(time.perf_counter() - t1, 5)})

    def _send_lens_to(self, power: float) -> None:
        """Command the lens, then read its position: the answer comes once the driver has taken the command
        (a serial device takes them in order), so the settle counts from a time the lens had surely begun,
        and a lens that answers with an error or falls silent is met at its step, not at the return move."""
        self.lens.move_to(power)
        self.lens.position()

    def _still_frame(self, stream: FrameStream, trajectory: LensTrajectory, command: int, lost_in_a_row: int) -> Frame:
        """The first frame exposed wholly while the lens held ``command``'s power."""
        timeout_s = self.frame_wait.next_timeout_s(lost_in_a_row)
        exposure_ms = self.camera.exposure_ms
        # The drivers' rule (devices.camera.frame_wait_s) for the frame wanted, which may begin only as the
        # one exposing while the lens moved ends, after the settle: one exposure and the settle more.
        wait_s = self.settle_s + self.arrival_latency_s + frame_wait_s(timeout_s, 2 * (exposure_ms or 0.0))
        deadline = time.monotonic() + wait_s
        while True:
            frame = stream.next_frame(deadline - time.monotonic())
            if frame is None:
                exposure = f"two {exposure_text(exposure_ms)} exposures, " if exposure_ms else ""
                raise DeviceTimeoutError(self.camera.name, f"no frame exposed with the lens still at step {command} "
                                                           f"within {seconds_text(wait_s)} ({exposure}the settle and "
                                                           f"the {seconds_text(timeout_s)} timeout)")
            self.frames_seen += 1
            start_s, end_s = exposure_window_s(frame, self.arrival_latency_s)
            seen = trajectory.frame_focus(start_s, end_s)
            if seen.still and seen.command == command:
                return frame
            if seen.still:
                self.spares += 1  # a still frame of an earlier step, which already has its slice
                continue
            moving_to = trajectory.latest_command_before(end_s)
            t0_s = self._t0_s if self._t0_s is not None else start_s
            self.flagged.append({"frame": self.frames_seen - 1, "start_ms": round((start_s - t0_s) * 1000, 2),
                                 "end_ms": round((end_s - t0_s) * 1000, 2),
                                 "lens_moving_to": None if moving_to is None else trajectory.powers[moving_to]})

    def report(self) -> dict:
        return {"mode": self.mode, "settle_ms": self.settle_s * 1000, "frames_streamed": self.frames_seen,
                "flagged_frames": len(self.flagged), "spare_frames": self.spares,
                "stream_restarts": 0 if self._stream is None else self._stream.restarts,
                "frames_discarded": 0 if self._stream is None else self._stream.discarded,
                "flagged": self.flagged[:200]}
