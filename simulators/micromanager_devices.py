"""Python devices for pymmcore-plus's UniMMCore: a Z stage that takes time to move, and a camera
that renders the virtual specimen at that stage's position (with faults on demand).

Hardware sequencing as a rig wires it: the camera's exposure-out line (``trigger_out``) fires
at the end of each exposure, and a stage with a loaded, started z-sequence steps to its next
position on that trigger. Each frame is rendered where the stage physically is in the middle
of its exposure, so a stage that has not arrived in time gives a frame at the wrong z. The
render is the camera's readout: it overlaps the next exposure, so frames come every
max(exposure, render), as a real camera's come every max(exposure, readout).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from pymmcore_plus.experimental.unicore import CameraDevice, StageDevice

from simulators.faults import Faults
from simulators.optics import CameraNoise, DefocusRenderer


class SimulatedZStage(StageDevice):
    """A focus stage in micrometres: travels at ``speed_um_per_s``, reports busy ``settle_s`` longer.

    ``sequence_max_length`` > 0 makes it sequenceable (MMCore's loadStageSequence and
    startStageSequence); ``trigger()`` then steps it through the loaded positions, wrapping
    around at the end as sequenced stages do.
    """

    def __init__(self, speed_um_per_s: float = 2000.0, settle_s: float = 0.005, sequence_max_length: int = 0):
        super().__init__()
        self.faults = Faults()  # silent: the stage never reports that it stopped; error_reply: moves fail
        self.speed_um_per_s = speed_um_per_s
        self.settle_s = settle_s
        self.sequence_max_length = sequence_max_length
        self._motion_lock = threading.Lock()  # the camera's acquisition thread triggers moves
        self._from_um = self._target_um = 0.0
        self._started = self._arrives = 0.0
        self._origin_um = 0.0
        self._sequence: tuple[float, ...] = ()
        self._next_in_sequence: int | None = None  # None: no sequence running
        self.triggers = 0

    def _go_to(self, target_um: float, at_s: float | None = None) -> None:
        """Start travelling to ``target_um`` (absolute) at ``at_s`` (monotonic; default now) from where it is then."""
        with self._motion_lock:
            now = time.monotonic() if at_s is None else at_s
            self._from_um = self._physical_um(now)
            self._target_um = target_um
            self._started = now
            self._arrives = now + abs(target_um - self._from_um) / self.speed_um_per_s

    def _physical_um(self, now: float) -> float:
        if now >= self._arrives or self._arrives <= self._started:
            return self._target_um
        if now <= self._started:  # asked about a moment before this move began: it had not left yet
            return self._from_um
        fraction = (now - self._started) / (self._arrives - self._started)
        return self._from_um + (self._target_um - self._from_um) * fraction

    def set_position_um(self, val: float) -> None:
        self.faults.raise_error_reply("stage")
        self._go_to(val + self._origin_um)

    def get_position_um(self) -> float:
        return self._target_um - self._origin_um

    def focus_um(self, at_s: float | None = None) -> float:
        """Where the focal plane is on the specimen at ``at_s`` (monotonic; default now), absolute."""
        with self._motion_lock:
            return self._physical_um(time.monotonic() if at_s is None else at_s)

    def busy(self) -> bool:
        if self.faults.silent:  # never reports that it stopped
            self.faults.fired = True
            return True
        return time.monotonic() < self._arrives + self.settle_s

    def home(self) -> None:
        self.set_position_um(-self._origin_um)

    def stop(self) -> None:
        with self._motion_lock:
            now = time.monotonic()
            self._target_um = self._physical_um(now)
            self._arrives = now

    def set_origin(self) -> None:
        self._origin_um = self._target_um

    # -- hardware sequencing --
    def get_sequence_max_length(self) -> int:
        return self.sequence_max_length

    def send_sequence(self, sequence: tuple[float, ...]) -> None:
        if not sequence:
            raise ValueError("an empty z-sequence")
        self._sequence = tuple(float(z) for z in sequence)

    def start_sequence(self) -> None:
        if not self._sequence:
            raise RuntimeError("no z-sequence loaded: loadStageSequence first")
        self._go_to(self._sequence[0] + self._origin_um)
        self._next_in_sequence = 1

    def stop_sequence(self) -> None:
        self._next_in_sequence = None

    def trigger(self, at_s: float | None = None) -> None:
        """A trigger pulse on the stage's input at ``at_s`` (monotonic; default now): step to the next
        position of a running sequence. The pulse's time is the hardware's, however late the caller."""
        index = self._next_in_sequence
        if index is None:
            return  # not sequencing: triggers are ignored, as on a stage in normal mode
        self.triggers += 1
        self._go_to(self._sequence[index % len(self._sequence)] + self._origin_um, at_s)
        self._next_in_sequence = index + 1


class SpecimenCamera(CameraDevice):
    """Renders the specimen at ``focus_um()`` with camera noise; honours ``faults``.

    Sequences run exposures back to back: a frame's readout (its render) overlaps the next
    exposure, which cannot end before that readout is done, so frames come every
    max(exposure, render). Each frame is rendered at the focus in the middle of its exposure,
    and ``trigger_out`` fires at each exposure's end. ``focus_um(at_s)`` and
    ``trigger_out(at_s)`` take monotonic times.
    ``rendered_at_um`` and ``exposures_s`` keep where each frame was rendered and when it was
    exposed (for tests).

    faults.delay_s makes frames late; faults.drop_frames loses that many frames (snap raises,
    as a camera whose frame never arrives makes MMCore do; a sequence, even of one frame, stops
    delivering and ends quietly); faults.error_reply raises too.
    """

    def __init__(self, renderer: DefocusRenderer, focus_um: Callable[..., float],
                 camera: CameraNoise = CameraNoise(), seed: int = 0,
                 trigger_out: Callable[[float], None] | None = None):
        super().__init__()
        self.renderer = renderer
        self.focus_um = focus_um
        self.camera_noise = camera
        self.trigger_out = trigger_out
        self.faults = Faults()
        self.rendered_at_um: list[float] = []
        self.exposures_s: list[tuple[float, float]] = []  # each frame's (start, end), monotonic
        self._exposure_ms = 10.0
        self._rng = np.random.default_rng(seed)
        # Load (or, with a cold numba cache, compile) the kernels while the rig opens, as
        # simulators.optics_camera does: a hardware sequence's first frame would time out.
        renderer.exposed(camera, 0.0, np.random.default_rng(0))

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self._exposure_ms = float(exposure)

    def shape(self) -> tuple[int, int] | tuple[int, int, int]:
        shape = self.renderer.specimen.texture.shape
        return (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[1], shape[2])

    def dtype(self):
        return self.camera_noise.dtype

    def start_sequence(self, n, get_buffer):
        # UniMMCore snaps by running this generator for one frame in the calling thread, and runs a
        # sequence by handing it to its acquisition thread: where it runs says which of the two it is.
        return self._exposures(n, get_buffer, started_in=threading.get_ident())

    def _exposures(self, n, get_buffer, started_in: int):
        count = 0
        exposure_s = self._exposure_ms / 1000
        starts_at = time.monotonic()
        while n is None or count < n:
            self.faults.frame_starting()
            self.faults.raise_error_reply("camera")
            if self.faults.drop_frame():
                if threading.get_ident() == started_in:  # a snap: MMCore's snapImage fails
                    raise RuntimeError("frame lost: the camera delivered no image")
                # A sequence (of any length, one frame too) whose frames stop coming: the core sees it
                # end early, as a C++ adapter's thread ends, with no error raised in that thread.
                return
            # The sensor holds one frame: this exposure began when the last one ended, but it
            # cannot end before the last frame's readout (the render below) was done.
            delay_s = self.faults.delay_s
            if delay_s:
                self.faults.spend_one()  # a transient delay (faults.times) clears itself
            starts_at = max(starts_at, time.monotonic() - exposure_s) + delay_s
            ends_at = starts_at + exposure_s
            # On the camera's own timeline (this thread may wake late; the hardware's pulses are not):
            _sleep_until(ends_at)
            # Asked after the exposure, for its middle: the stage last moved on the previous frame's
            # trigger, at or before this exposure began, so its model gives what it would have then.
            focus_um = self.focus_um(starts_at + exposure_s / 2)
            if self.trigger_out is not None:
                self.trigger_out(ends_at)  # exposure ended: a sequencing stage steps, during readout
            image = get_buffer(self.shape(), self.dtype())
            image[:] = self.renderer.exposed(self.camera_noise, focus_um, self._rng)  # the readout
            self.rendered_at_um.append(focus_um)
            self.exposures_s.append((starts_at, ends_at))
            count += 1
            starts_at = ends_at  # the next exposure began as this one ended: readout overlaps it
            yield {"focus_um": focus_um}


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
