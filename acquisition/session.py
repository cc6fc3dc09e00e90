"""The live session: move, settle, snap, buffer, fuse -- for every planned position.

Acquisition runs in the calling thread and never waits for fusion (see ``fusion_worker``).
Whatever ends the session (the last position, a device that stops answering, Ctrl-C, a
bug), the slices acquired so far are in the stack buffer, are fused, and the focus drive
goes back to where it started. The session runs the loop only: it announces what happens
(``acquisition.session_events``) and its listeners write the outputs and show the live view.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import sys
import time
from dataclasses import dataclass
from warnings import catch_warnings
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from tqdm import tqdm

from acquisition.acquirer import MAX_LOST_IN_A_ROW, Acquirer, FrameWait, LostSlice, with_retries
from acquisition.acquisition_mode import acquirer_for
from acquisition.acquisition_report import acquisition_report
from acquisition.pre_sweep import RangeFound, find_z_range
from fusion.fusion_worker import FusionWorker, slices_in_memory_for
from fusion.held_signals import signals_deferred, signals_held
from fusion.kernel_warmup import warm_kernels
from acquisition.plans import planned_positions, step_warning
from acquisition.profile import Profile, ProfileError
from acquisition.rig import Rig, open_rig
from acquisition.session_events import AnnouncedRetries, SessionEvents, SessionListener
from acquisition.session_report import (DroppedFrame, MDASessionReport, RetryRecord, SessionReport, SliceRecord,
                                        warnings_said)
from acquisition.session_writer import SessionOutputWriter
from acquisition.stop_signals import INTERRUPTED, stop_said
from fusion.stack_buffer import StackBuffer, StackWriteError, check_room_for_stack
from devices.camera import CameraTimestamp
from devices.errors import TRANSIENT_ERRORS, DeviceError
from devices.library_threads import ThreadError, ThreadErrors
from fusion.engine import FusionResult, StreamingFusion, check_measure_can_run
from fusion.errors import FusionError
from fusion.output_names import SESSION_REPORT, session_outputs
from fusion.outputs import make_folder, plausible_pixel_size_um


Report = TypeVar("Report", SessionReport, MDASessionReport)


@dataclass
class SessionOutcome(Generic[Report]):
    """How a session ended and its report (a SessionReport, or an MDASessionReport for an mda plan)."""

    folder: Path
    report: Report
    completed: bool          # every planned position was visited
    interrupted: bool        # Ctrl-C

    @property
    def ended_by(self) -> str | None:
        return self.report.ended_by


def new_session_folder(root: Path) -> Path:
    """A new folder in ``root`` named by the time (``20260101-120000``, then ``-2``, ``-3``... within one second).
    Two sessions starting in the same second each get their own: the one that makes a name second takes the next."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    make_folder(root, "the output folder")
    for n in itertools.count(1):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError:
            make_folder(folder, "the session folder", exist_ok=False)  # (raises, saying why in one line)
        return folder
    raise AssertionError("unreachable")


# How long the end of a session waits for fusion to catch up with the last slices (a thread that hangs ends it)...
FUSION_CATCH_UP_S = 120.0
# ...and more per slice where the stack is fused again from disk after a write failed (``_fuse_stored_slices_again``)
REFUSED_SLICE_S = 30.0


class Session:
    """One stack-and-fuse run of ``profile`` on an opened ``rig``, writing into ``folder``.

    ``listeners`` follow it (``SessionListener``); the output writer always comes first, so the
    report they are given at the end already names the outputs. ``warnings_before``: warnings said before
    it started (options or profile keys that have no effect), which session.json records with its own.
    """

    def __init__(self, profile: Profile, rig: Rig, folder: Path, listeners: list[SessionListener] | None = None,
                 warnings_before: list[str] | None = None):
        if profile.plan is None:
            raise ValueError("a single-stack session needs a plan (z or sweep); an mda plan runs in mda_session")
        self.profile = profile
        self.plan = profile.plan
        self.rig = rig
        self.folder = folder
        self.outputs = session_outputs(folder)
        self.writer = SessionOutputWriter()
        self.events = SessionEvents([self.writer, *(listeners or [])])
        self.buffer: StackBuffer | None = None
        self.engine: StreamingFusion | None = None
        self.worker: FusionWorker | None = None
        self._fused_unstored = False   # a slice was handed to fusion, and its write to the buffer failed
        # Of the fusion that followed the acquisition, where the stack was then fused again from disk (its engine,
        # and so its count of slices read back, replaced): how many it had read back.
        self._read_back_while_acquiring: int | None = None
        self.slices: list[SliceRecord] = []
        self.dropped: list[DroppedFrame] = []
        self.retries: list[RetryRecord] = AnnouncedRetries(
            announce=lambda retry: self.events.device_try_failed(self, retry))
        self.errors: list[str] = []
        self.ended_by: str | None = None
        self.interrupted = False
        self.t_last_slice: float | None = None
        self.first_frame_time_s: float | None = None  # on the camera clock (epoch s): planes count time from it
        self.first_camera_timestamp: CameraTimestamp | None = None  # the camera's own clock, where it gives one
        self.t_acquisition_started: float | None = None
        self.t_acquisition_ended: float | None = None  # the last slice, or the last try for a frame that never came
        self.acquirer: Acquirer | None = None
        self.mode_warnings: list[str] = []  # why the acquisition mode is not the one the user may expect
        self.plan_warnings: list[str] = []  # positions the drive cannot tell apart
        # A Ctrl-C or SIGTERM that came once the acquisition was over (every slice acquired, or a device had ended
        # it): it cuts nothing short, and is a warning, not the session's end.
        self.late_interrupt: str | None = None
        self._stops_while_saving = 0
        self.range_found: RangeFound | None = None
        self.t_result_ready: float | None = None
        self.focus_returned_to: float | None = None  # where the drive went back to at the end; None: not (yet)
        self.focus_return_error: str | None = None   # why it could not
        self.return_warning: str | None = None   # what session.json says of it, where the session had not failed
        self._returning_to: float | None = None  # where the drive is being sent back to, once it is
        self.total_s = 0.0
        self.caught_warnings: list = []  # warnings.WarningMessage, while run() runs (see there)
        self.thread_errors: list[ThreadError] = []  # errors that ended a device library's thread, while run() runs
        self.warnings_before = list(warnings_before or [])

    def run(self, progress: bool | None = None) -> SessionOutcome[SessionReport]:
        # Python warnings raised while the session runs, from any thread (fusion's "only one slice", alignment's,
        # a device library's) are kept, not printed as they come: session.json records them with the
        # session's own, and the summary prints them from there, so what is printed is what is recorded.
        # So are errors that end a device library's own thread (a camera's sequence thread): the driver tells the
        # session what they cost (a sequence ended early, retried); the warning names the device, not "Thread-1".
        with catch_warnings(record=True) as caught, ThreadErrors() as thread_errors:
            self.caught_warnings = caught
            self.thread_errors = thread_errors.caught
            return self._run(progress)

    def warnings_raised(self) -> list[str]:
        """The Python warnings raised while the session ran, as session.json says them (``warnings_said``), then
        the errors that ended a device library's thread, each naming its device; each once."""
        labels = {getattr(device, "label", None): device.name for device in (self.rig.camera, self.rig.focus)}
        devices = {label: name for label, name in labels.items() if isinstance(label, str)}  # (Micro-Manager's)
        said = warnings_said(self.caught_warnings) + [error.said(devices) for error in self.thread_errors]
        return list(dict.fromkeys(said))

    def _run(self, progress: bool | None) -> SessionOutcome[SessionReport]:
        focus = self.rig.focus
        start = focus.position()
        self.acquirer = acquirer_for(self.profile, self.rig, self.mode_warnings)  # None: the stepped loop below
        started = time.perf_counter()
        positions = self._positions(start)
        self.planned = len(positions)
        first_look = self._look_before_the_stack(start)
        self.events.session_started(self, len(positions))
        try:
            if self.acquirer is not None:
                # A sequence or stream will not wait for a first-use compile: fusion's kernels load first.
                warm_kernels(first_look.pixels, self.profile.fusion_settings())
            self.t_acquisition_started = time.perf_counter()
            if self.acquirer is None:
                self._acquire(positions, progress)
            else:
                self._acquire_streamed(self.acquirer, positions)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (acquisition.stop_signals)
            said = str(interrupt) or INTERRUPTED
            if self._every_position_done():  # after the last slice: the stack is whole, and nothing was cut short
                self.late_interrupt = said
            else:
                self.interrupted = True
                self.ended_by = said
                if progress or (progress is None and sys.stderr.isatty()):  # fusion may take a while to catch up
                    print(f"\n{self.ended_by}: saving the {len(self.slices)} slices acquired and fusing them "
                          f"({self._slices_behind()} still to fuse)...", file=sys.stderr, flush=True)
        except (DeviceError, StackWriteError) as error:  # (a full disk: the message says what is safe)
            self.ended_by = str(error)
        except Exception as error:  # a bug: still save and fuse what was acquired, then report it
            self.ended_by = f"unexpected {type(error).__name__}: {error}"
        finally:
            if self.t_acquisition_started is not None:
                self.t_acquisition_ended = time.perf_counter()
            # Ctrl-C or SIGTERM while the slices are saved, fused and written, session.json included
            # (a second one, or a first once the acquisition was over), must not cut that short; it is told so.
            # A first one there ends nothing (the acquisition had ended): it is recorded as a warning, and the
            # exit status is the session's own (README: 0 for a whole stack).
            with signals_deferred(on_signal=self._stop_asked_while_saving):
                report = self._save_and_report(positions, start, started)
                self._record_late_stop(report)
        return SessionOutcome(self.folder, report, completed=self.ended_by is None and not self.errors,
                              interrupted=self.interrupted)

    def _stop_asked_while_saving(self, signal_name: str) -> None:
        """A SIGINT or SIGTERM while the session saves: the first after the acquisition's end is the late stop that
        session.json names; each is told, once, that the saving goes on."""
        said = stop_said(signal_name)
        if not self.interrupted and self.late_interrupt is None:
            self.late_interrupt = said
        self._stops_while_saving += 1
        if self._stops_while_saving == 1:  # a second Ctrl-C is not met by silence, nor a third by a repeat
            doing = (f"sending the focus back to {self._returning_to:g} {self.profile.focus.unit} (the slices are "
                     f"saved and fused, the images written; {SESSION_REPORT} is written once it is there)"
                     if self._returning_to is not None else "still saving and fusing the slices acquired")
            print(f"\n{said}: {doing}; the session ends by itself when they are safe", file=sys.stderr, flush=True)

    def _record_late_stop(self, report: SessionReport) -> None:
        """A late stop that came after session.json was written (while the live view was told): added to it."""
        said = self.late_stop_warning()
        if said is None or report.warnings is None or said in report.warnings:
            return
        report.warnings.append(said)
        try:
            self.writer.write_report(self, report)
        except OSError as error:
            self.errors.append(str(error))

    def late_stop_warning(self) -> str | None:
        """What session.json says of a Ctrl-C or SIGTERM that came once the acquisition was over; None: none came."""
        if self.late_interrupt is None:
            return None
        if self.ended_by is None:
            return (f"{self.late_interrupt} after the last slice was acquired: it cut nothing short, so the session "
                    "saved, fused and ended as planned")
        return (f"{self.late_interrupt} after the session had ended ({self.ended_by}): it cut nothing short; what was "
                "acquired was saved as it would have been")

    def _save_and_report(self, positions: list[float], start: float, started: float) -> SessionReport:
        """Fuse what is left, finish the stack, write the images, send the drive back, write session.json."""
        result = None
        try:
            result = self._finish_fusion()
        except Exception as error:
            self.errors.append(f"fusion failed: {type(error).__name__}: {error}")
        if self.buffer is not None:  # before the return move: a drive that hangs there costs nothing saved
            try:
                self.buffer.finalize(self.profile.model_dump(mode="json"), self.profile.focus.unit)
            except OSError as error:  # the report still says what happened, where it can
                self.errors.append(str(error))
            if self.buffer.n_slices == 0:  # the first slice was not stored: a header of 8 bytes, no stack
                with contextlib.suppress(OSError):
                    self.buffer.path.unlink()
                self.buffer = None
        try:  # the images before the return move: a session killed on the way back keeps them
            self.events.result_ready(self, result)
        except OSError as error:
            self.errors.append(str(error))
        self._return_to(start)
        self.total_s = time.perf_counter() - started
        report = self._report(positions)
        try:
            self.events.session_ended(self, report, result)
        except OSError as error:  # session.json itself cannot be written (a full disk): the summary still says
            self.errors.append(str(error))  # what was saved where, and what was not (report.errors is this list)
        return report

    # -- acquisition --
    def _positions(self, start: float) -> list[float]:
        """The plan's z-positions (found by a pre-sweep for auto_range), all within the drive's limits."""
        focus = self.rig.focus
        if self.plan.auto_range is not None:
            self.range_found = find_z_range(self.profile, self.rig)
            positions = self.range_found.positions_um
        else:
            positions = planned_positions(self.plan, start)
        focus.check_reachable(positions, "the plan")  # (an auto range's too: the rig checked the planned one)
        said = step_warning(positions, focus)
        self.plan_warnings = [said] if said else []
        return positions

    def _look_before_the_stack(self, start: float):
        """One frame where the drive is, before the stack's first move: its size and the planned slices tell the
        room the stack needs, and a disk without it ends the session before it starts (a StackWontFitError), the
        drive back where it was (an auto range's pre-sweep moved it). Returns the frame."""
        try:
            frame = with_retries(lambda: self.rig.camera.snap(timeout_s=self.profile.camera.timeout_s), "snap",
                                 self.plan.retries, [], 0)
            pixels = frame.pixels.shape[0] * frame.pixels.shape[1]
            if self.range_found is None:
                check_room_for_stack(self.folder, self.planned, frame.pixels.nbytes, frame_pixels=pixels)
            else:  # known only now: the pre-sweep found the range, which the step cuts into slices
                check_room_for_stack(self.folder, self.planned, frame.pixels.nbytes,
                                     "the plan (the range its auto-range pre-sweep found)",
                                     smaller="a larger plan.auto_range.step_um", frame_pixels=pixels)
        except BaseException:
            if self.range_found is not None:
                with contextlib.suppress(DeviceError):  # the refusal, or the camera's error, says more
                    self._move_to(start)
            raise
        return frame

    def _acquire(self, positions: list[float], progress: bool | None) -> None:
        self._dropped_in_a_row = 0
        self._frame_wait = FrameWait(self.rig.camera.name, self.profile.camera.timeout_s,
                                     self.profile.camera.give_up_after_s)
        bar = tqdm(positions, desc="slices", unit="slice", disable=None if progress is None else not progress)
        for index, z in enumerate(bar):
            self.acquire_slice(index, z)

    def acquire_slice(self, index: int, z: float) -> None:
        """Move to ``z``, settle, snap, store and hand the slice to fusion; a frame still lost after
        the retries is recorded as dropped (with its z), and too many lost ones end the session."""
        self.rig.arm_faults(index)  # a profile's faults: section (simulators only)
        retries = self.plan.retries
        t0 = time.perf_counter()
        with_retries(lambda: self._move_to(z), "move", retries, self.retries, index)
        t1 = time.perf_counter()
        time.sleep(self.profile.focus.settle_ms / 1000)
        t2 = time.perf_counter()
        try:
            frame = with_retries(self._snap, "snap", retries, self.retries, index)
        except TRANSIENT_ERRORS as error:
            # An explicit gap: recorded with its z, never a silent shift of the stack.
            self._record_dropped(DroppedFrame(planned_index=index, z=z, error=str(error)))
            self._dropped_in_a_row += 1
            if self._dropped_in_a_row >= MAX_LOST_IN_A_ROW:
                raise
            return
        self._dropped_in_a_row = 0
        self._frame_wait.frame_came()
        t3 = time.perf_counter()
        self._keep(frame, z, index, t3, move_s=round(t1 - t0, 5), settle_s=round(t2 - t1, 5),
                   exposure_s=round(t3 - t2, 5))

    def _record_dropped(self, dropped: DroppedFrame) -> None:
        self.dropped.append(dropped)
        self.events.frame_dropped(self, dropped)

    def _move_to(self, z: float) -> None:
        self.rig.focus.move_to(z)
        self.rig.focus.wait_until_settled(self.profile.focus.settle_timeout_s)

    def _snap(self):
        return self.rig.camera.snap(timeout_s=self._frame_wait.next_timeout_s(self._dropped_in_a_row))

    def _acquire_streamed(self, acquirer: Acquirer, positions: list[float]) -> None:
        """Store and fuse each slice a sequenced or streaming acquirer delivers, as it comes."""
        # A sequence's camera runs ahead of the store: the sequence arms the faults itself as each of
        # its runs starts (acquisition_mode.acquirer_for). A stream's are armed here, slice by slice.
        arms_here = acquirer.mode != "sequenced"
        if arms_here:
            self.rig.arm_faults(0)
        frames = acquirer.frames(positions, self.retries)
        with contextlib.closing(frames):  # stops the devices whatever ends the loop
            for item in frames:
                if isinstance(item, LostSlice):  # an explicit gap, recorded with its z
                    self._record_dropped(DroppedFrame(planned_index=item.planned_index, z=item.z, error=item.error))
                else:
                    self._keep(item.frame, item.z, item.planned_index, time.perf_counter(), **item.timing)
                if arms_here and item.planned_index + 1 < len(positions):  # as stepped: before a slice, never
                    self.rig.arm_faults(item.planned_index + 1)           # after the last (it would spoil the return)

    def _keep(self, frame, z: float, planned_index: int, started: float, **timing: float) -> None:
        """Store the slice and record it (``timing``: its move, settle and exposure seconds) together:
        a Ctrl-C or SIGTERM between the two would leave a plane on disk that session.json does not count."""
        with signals_held():
            self._store(frame, z)
            stored = time.perf_counter()
            camera_stamp = frame.camera_timestamp
            if not self.slices:  # (the first slice's only: a later one's made camera times count from another)
                self.first_camera_timestamp = camera_stamp
            camera_s, camera_ticks = (None, None) if camera_stamp is None or self.first_camera_timestamp is None \
                else camera_stamp.since(self.first_camera_timestamp)
            assert self.first_frame_time_s is not None  # (set as the first slice was stored)
            self.slices.append(SliceRecord(index=len(self.slices), planned_index=planned_index, z=z, **timing,
                                           store_s=round(stored - started, 5),
                                           time_s=round(frame.timestamp_s - self.first_frame_time_s, 6),
                                           camera_time_s=camera_s, camera_time_ticks=camera_ticks))
            self.t_last_slice = stored

    def _store(self, frame, z: float) -> None:
        pixels = frame.pixels
        if self.buffer is None:
            self.buffer = StackBuffer(self.outputs["stack"], expected_bytes=pixels.nbytes * self.planned,
                                      pixel_size_um=self.pixel_size_um(), planned_slices=self.planned,
                                      significant_bits=frame.bit_depth)
        if self.first_frame_time_s is None:
            self.first_frame_time_s = frame.timestamp_s
        # Fusion starts on a slice while it is written (the first's is made once it is on disk): a 5 MP slice's write
        # took 0.07-0.27 s on a busy machine, and the fused image waited for it after the last slice. Where the write
        # fails the slice has been fused all the same: the end fuses the slices on disk again
        # (``_fuse_stored_slices_again``).
        index = self.buffer.n_slices
        in_memory = self.worker is not None and self.worker.submit_in_memory(index, pixels, z)
        try:
            # Time since the first plane, in every page as in OME's DeltaT (README): the epoch time was there before.
            self.buffer.append(pixels, z, frame.timestamp_s - self.first_frame_time_s, frame.exposure_ms,
                               unit=self.profile.focus.unit)
        except BaseException:
            self._fused_unstored = self._fused_unstored or in_memory
            raise
        if self.engine is None:
            self._start_fusion(pixels.shape, pixels.dtype, slices_in_memory_for(pixels.nbytes))
        assert self.worker is not None  # made with the engine, for the first slice
        if not in_memory:  # (fusion is behind: it reads the slice back from the buffer, or keeps it if it may now)
            self.worker.submit(index, pixels, z)
        self.events.slice_acquired(self, index, pixels, z, dict(frame.metadata or {}))

    def _start_fusion(self, shape: tuple[int, ...], dtype: np.dtype, max_slices_in_memory: int) -> None:
        """The engine and its thread, fed from (and reading back from) the stack buffer."""
        assert self.buffer is not None
        self.engine = StreamingFusion(shape, dtype, self.profile.fusion_settings(), source=self.buffer,
                                      name=str(self.buffer.path), z_unit=self.profile.focus.unit,
                                      channels_last=True)  # (a camera's frame is (H, W, C), as an MDA's)
        self.worker = FusionWorker(self.engine, self.buffer, max_slices_in_memory,
                                   on_fused=lambda fused, seconds: self.events.slice_fused(self, fused, seconds))

    def _fuse_stored_slices_again(self) -> None:
        """A slice was fused as it was written, and its write failed: the fused image and the report must be those of
        the slices on disk, so they are fused again from there (none: no engine)."""
        assert self.worker is not None
        with contextlib.suppress(Exception):  # (what the first engine raised is no longer the session's)
            self.worker.finish()
        self._read_back_while_acquiring = len(self.worker.read_back)
        self.engine, self.worker = None, None
        if self.buffer is not None and self.buffer.n_slices > 0:
            first = self.buffer.read_slice(0)
            self._start_fusion(first.shape, first.dtype, 0)
            assert self.worker is not None
            for index, record in enumerate(self.slices[:self.buffer.n_slices]):
                self.worker.submit(index, None, record.z)
        self.events.fusion_restarted(self)  # (the live view showed the dropped fusion, the unstored slice in it)

    def _every_position_done(self) -> bool:
        """Whether each planned position has its slice, or was recorded lost: the acquisition ran to its end."""
        return self.planned > 0 and len(self.slices) + len(self.dropped) >= self.planned

    def _slices_behind(self) -> int:
        """Slices acquired that fusion has not folded in yet."""
        return len(self.slices) - (len(self.worker.fusion_s) if self.worker is not None else 0)

    def acquisition_warnings(self) -> list[str]:
        """What the user should know about how the stack was taken: the pre-sweep's (the search range
        cut the specimen), why it was stepped where it could have been sequenced, faults that did not
        fire, and a settle wait that a hardware sequence cannot honour; positions the drive cannot tell apart."""
        warnings = list(self.range_found.warnings) if self.range_found is not None else []
        warnings += self.plan_warnings + self.mode_warnings
        if self.return_warning is not None:
            warnings.append(self.return_warning)
        late = self.late_stop_warning()
        if late:
            warnings.append(late)
        # A rehearsal that rehearsed nothing must not pass for one.
        for role, fault in self.rig.faults_never_due():
            warnings.append(f"faults.{role} did not fire: its slice ({fault.after_slices}) never came: the session "
                            f"acquired {len(self.slices)} of the {self.planned} planned, so nothing was rehearsed")
        for role, fault in self.rig.faults_unused():
            warnings.append(f"faults.{role} did not fire: it was switched on at its slice ({fault.after_slices}), "
                            f"but the {role} was not used again, so nothing was rehearsed")
        settle_ms = self.profile.focus.settle_ms
        exposure_ms = self.profile.camera.exposure_ms or 0.0
        if self.acquirer is not None and self.acquirer.mode == "sequenced" and settle_ms > exposure_ms:
            warnings.append(f"focus.settle_ms ({settle_ms:g} ms) is not waited in a hardware sequence: the stage "
                            "steps on the camera's trigger between frames, about every exposure "
                            f"({exposure_ms:g} ms); a stage that needs longer to settle needs a longer frame "
                            "interval, or plan.hardware_sequencing: off")
        return warnings

    def pixel_size_um(self) -> float | None:
        """On the specimen: the profile's, else what the camera knows (a Micro-Manager pixel size), else None."""
        if self.profile.camera.pixel_size_um is not None:
            return self.profile.camera.pixel_size_um
        said = getattr(self.rig.camera, "pixel_size_um", None)
        return plausible_pixel_size_um(said, self.rig.camera.name, "pixel size the camera gives")

    def _finish_fusion(self) -> FusionResult | None:
        wait_s = FUSION_CATCH_UP_S
        if self.worker is not None and self._fused_unstored:
            self._fuse_stored_slices_again()
            # (the whole stack is fused again: hundreds of 5 MP slices, or the deep measure, take minutes)
            wait_s += REFUSED_SLICE_S * (self.buffer.n_slices if self.buffer is not None else 0)
        if self.worker is None or self.engine is None:
            return None  # nothing was acquired
        self.worker.finish(wait_s)
        result = self.engine.finish()
        self.t_result_ready = time.perf_counter()
        return result.with_depth()  # (its depth map, made beside the image, may have failed: fusion failed)

    def _return_to(self, start: float) -> None:
        self._returning_to = start  # (what a Ctrl-C meanwhile is told: _stop_asked_while_saving)
        try:
            self._move_back(start)
        finally:
            self._returning_to = None

    def _move_back(self, start: float) -> None:
        try:
            self.rig.focus.move_to(start)
            self.rig.focus.wait_until_settled(self.profile.focus.settle_timeout_s)
            self.focus_returned_to = start
        except Exception as error:  # recorded; the session's own outcome matters more
            self.focus_return_error = str(error)
            said = f"could not return the focus to {start:g} {self.profile.focus.unit}: {error}"
            if self.ended_by is not None:  # one more failure of a session that failed already
                self.errors.append(said)
            else:  # every slice was acquired, saved and fused: a drive that did not come back fails none of that
                self.return_warning = f"{said}; every slice was acquired, saved and fused"

    def result_after_last_slice_s(self) -> float:
        """Seconds from the end of the acquisition to the final result: from the last slice on disk, or from the
        last try for a frame that never came (that wait is the devices', not fusion's)."""
        assert self.t_result_ready is not None and self.t_acquisition_ended is not None  # a result was made
        return max(0.0, self.t_result_ready - self.t_acquisition_ended)

    def acquisition_s(self) -> float | None:
        """Seconds from the first move to the end of the acquisition (None: it never started)."""
        if self.t_acquisition_started is None or self.t_acquisition_ended is None:
            return None
        return self.t_acquisition_ended - self.t_acquisition_started

    def seconds_on_slices_not_acquired(self) -> float:
        """Seconds the devices spent on planned slices that gave none: lost after the retries, or the try that
        ended the session (a frame waited for until camera.give_up_after_s). The slices kept account for the rest
        of the acquisition's time (move, settle, exposure and store each); 0 where every planned slice was kept."""
        acquisition_s = self.acquisition_s()
        if acquisition_s is None or (not self.dropped and len(self.slices) >= self.planned):
            return 0.0
        kept_s = sum(s.move_s + s.settle_s + s.exposure_s + s.store_s for s in self.slices)
        return max(0.0, acquisition_s - kept_s)

    def slices_read_back(self) -> int:
        """How many slices fusion caught up on from the stack on disk while the stack was acquired (it fell behind);
        not those read to fuse the stored stack again after a write failed (``slices_fused_again_from_disk``)."""
        if self._read_back_while_acquiring is not None:
            return self._read_back_while_acquiring
        return 0 if self.worker is None else len(self.worker.read_back)

    def slices_fused_again_from_disk(self) -> int:
        """How many stored slices were fused again from the stack on disk because a slice fused as it was written
        failed to be stored (0: the fused image is the live fusion's)."""
        if self._read_back_while_acquiring is None or self.worker is None:
            return 0
        return len(self.worker.read_back)

    def _report(self, positions: list[float]) -> SessionReport:
        """What the loop knows; the listeners add the outputs and scores."""
        report = SessionReport(profile=self.profile.model_dump(mode="json"), folder=str(self.folder),
                               planned_slices=len(positions), acquired_slices=len(self.slices),
                               focus_unit=self.profile.focus.unit, dropped_frames=self.dropped, retries=self.retries,
                               ended_by=self.ended_by, errors=self.errors, faults_injected=self.rig.faults_injected,
                               slices=self.slices)
        if self.buffer is not None:
            report.outputs["stack"] = str(self.outputs["stack"])
        # replace(): a field name acquisition_report got wrong is an error, not a stray attribute
        return dataclasses.replace(report, **acquisition_report(self, positions))


def check_fusion_can_run(profile: Profile) -> None:
    """Before any device opens or moves: the profile's focus measure can run here (the "ums" measure's
    torch device and weights), else a ProfileError with the measure's own message; found at the end, it
    cost a whole stack acquired and not fused."""
    try:
        check_measure_can_run(profile.fusion_settings())
    except FusionError as error:
        raise ProfileError(str(error)) from None


def run_profile(profile: Profile, out_root: Path, progress: bool | None = None, view=None,
                warnings_before: list[str] | None = None) -> SessionOutcome[SessionReport]:
    """Check that fusion can run, open the rig, run one session into ``out_root/<timestamp>/``, close the rig.

    ``view``: a ``viewer.state.LiveViewState`` that follows the session, or None; ``warnings_before``: as Session's.
    """
    from acquisition.live_view_listener import LiveViewListener

    check_fusion_can_run(profile)
    rig = open_rig(profile)
    folder = None
    outcome = None
    try:
        folder = new_session_folder(Path(out_root))
        listeners: list[SessionListener] = [LiveViewListener(view)] if view is not None else []
        outcome = Session(profile, rig, folder, listeners, warnings_before).run(progress)
        return outcome
    except BaseException:
        # Ended before the session started (a pre-sweep that failed or was interrupted, a plan
        # outside the limits): nothing was written, so no empty timestamped folder is left behind.
        if folder is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
    finally:
        try:
            rig.close()
        except KeyboardInterrupt:  # a stop while the devices let go (slow to): the session's outputs are saved
            if outcome is None:
                raise
            print("stopped while closing the devices; the session's outputs are saved", file=sys.stderr)
            outcome.interrupted = True
