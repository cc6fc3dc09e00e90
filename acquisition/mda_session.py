"""A multi-dimensional session: a profile's useq MDA sequence run by pymmcore-plus, every z-stack fused.

The sequence (positions, channels, time, z) runs on the core's own MDA runner, in its own
thread, with ``fusion.mda.StreamingFusionHandler`` as its output: each stack is written and
fused as it is acquired, into ``<out>/<timestamp>/``, named by position, time and channel.
Ctrl-C cancels the run at the next event; what was acquired is saved and fused (exit 130). A frame that cannot
be stored (a full disk) cancels it too: no more frames are exposed for nothing, and the session ends naming the stack.
With the slide simulator, session.json scores every fused image against its ground truth.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
import traceback
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from warnings import catch_warnings

import tifffile

from acquisition.mda_plan import around_current_position, channel_names
from acquisition.mda_rig import MDARig, check_mda_reachable, open_mda_rig
from acquisition.profile import Profile
from acquisition.session import SessionOutcome, check_fusion_can_run, new_session_folder
from acquisition.session_report import MDASessionReport, warnings_said
from acquisition.stop_signals import INTERRUPTED, stop_said
from acquisition.session_writer import MDA_STACKS_ONLY, MDA_STARTED_ONLY, full_scale, write_early_record
from devices.errors import DeviceProtocolError
from devices.library_threads import ThreadError, ThreadErrors
from devices.micromanager import camera_bit_depths, device_name
from fusion.mda import StreamingFusionHandler
from fusion.mda_stacks import planned_stacks
from fusion.metrics import psnr
from fusion.output_names import MDA_SUMMARY, SESSION_REPORT
from fusion.held_signals import signals_deferred
from fusion.outputs import write_json
from fusion.stack_buffer import check_room_for_stack

CANCEL_TIMEOUT_S = 60.0  # after Ctrl-C: the event under way finishes, then fusion of what arrived
# The runner's thread ends just after its handler has finished (an error that ended it, just after that): waited
# for this long, so that session.json has that error.
RUNNER_END_TIMEOUT_S = 5.0
RUNNER = "pymmcore-plus's MDA runner"  # its thread, in a warning: Python calls it "Thread-2 (run)"


class _SaidBySession(logging.Filter):
    """What the session says itself, in one line ("the session ended early: terminated (SIGTERM)"), is not logged
    too: pymmcore-plus's cancel (a coloured warning holding the whole sequence's repr) and the fusion handler's
    stop on a full disk and its summary that could not be written."""

    def __init__(self, handler: StreamingFusionHandler):
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("MDA Canceled"):
            return False
        said = [text for text in (self.handler.stopped_by, self.handler.summary_error) if text]
        return not (said and any(text in record.getMessage() for text in said))


@contextlib.contextmanager
def _said_by_session(handler: StreamingFusionHandler) -> Iterator[None]:
    quiet = _SaidBySession(handler)
    loggers = [logging.getLogger("pymmcore-plus"), logging.getLogger("fusion.mda")]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def session_sequence(profile: Profile, core):
    """The profile's sequence, a relative z-plan centred where the stage is now."""
    assert profile.mda is not None  # an mda session runs an mda profile
    z_um = core.getPosition()
    if not math.isfinite(z_um):  # a plan centred on it would go to nan, and name the limits instead
        raise DeviceProtocolError(device_name("stage", core.getFocusDevice()),
                                  f"reported a position that is not a number ({z_um} um)")
    if core.getXYStageDevice():
        return around_current_position(profile.mda, core.getXPosition(), core.getYPosition(), z_um)
    return around_current_position(profile.mda, None, None, z_um)


def run_mda_profile(profile: Profile, out_root: Path, progress: bool | None = None,
                    warnings_before: list[str] | None = None) -> SessionOutcome[MDASessionReport]:
    """Check that fusion can run, open the core, run the sequence into ``out_root/<timestamp>/`` fusing every
    z-stack, close it. ``warnings_before``: warnings said before it started (options with no effect), recorded
    first in session.json."""
    check_fusion_can_run(profile)
    rig = open_mda_rig(profile)
    try:
        return _run_in_new_folder(profile, rig, Path(out_root), list(warnings_before or []))
    except BaseException as error:
        traceback.clear_frames(error.__traceback__)  # their locals hold the core, which is freed below
        raise
    finally:
        _close_and_free(rig)


def _close_and_free(rig: MDARig) -> None:
    """Unload the core's devices and free the core now, in this thread. The core sits in reference cycles (its
    signals, its MDA runner) that only the garbage collector frees, whenever it next runs; after a session that ended
    on an error (a full disk) that was at the interpreter's exit, where the core's native threads met a finalising
    interpreter and the process aborted ('FATAL: exception not rethrown', exit 134)."""
    rig.close()
    rig.core = None
    gc.collect()


def _run_in_new_folder(profile: Profile, rig: MDARig, out_root: Path,
                       warnings_before: list[str]) -> SessionOutcome[MDASessionReport]:
    folder = new_session_folder(out_root)
    try:
        # Warnings raised while it runs, from any thread (the handler's "only one slice"), are kept for
        # session.json, and printed from there: what is printed is what is recorded (as in a live session).
        # So are errors that end a thread of the device library's (UniMMCore's sequence thread, pymmcore-plus's
        # runner): Python would print them as a traceback of "Thread-2", and session.json would not say them.
        with catch_warnings(record=True) as caught, ThreadErrors() as thread_errors:
            return _run(profile, rig, folder, caught, thread_errors.caught, warnings_before)
    except BaseException:
        # Refused before the sequence started (a plan the disk has no room for): no empty folder is left behind.
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty
        raise


def _run(profile: Profile, rig: MDARig, folder: Path, caught: list, thread_errors: list[ThreadError],
         warnings_before: list[str]) -> SessionOutcome[MDASessionReport]:
    core = rig.core
    sequence = session_sequence(profile, core)
    check_mda_reachable(profile, sequence, core)  # before anything moves, as a single stack's plan is
    settings = profile.fusion_settings()
    # A frame that cannot be stored (a full disk) stops the MDA, as a single-stack session ends: the frames after it
    # would be exposed for nothing.
    # Each camera's exact bit depth, read here before the MDA: a multi-camera's cameras said their pixel format's.
    handler = StreamingFusionHandler(folder, decision_channel=profile.fusion.decision_channel,
                                     pixel_size_um=profile.camera.pixel_size_um, stop_mda=core.mda.cancel, core=core,
                                     camera_bits=camera_bit_depths(core),
                                     **{field.name: getattr(settings, field.name) for field in fields(settings)})
    handler.check(sequence)
    # A frame per event and physical camera (a Multi Camera's): each camera's frames are stacks of their own.
    cameras = core.getNumberOfCameraChannels()
    stacks = planned_stacks(sequence, cameras) or {}
    planned = sum(stack.slices for stack in stacks.values())
    # Before anything moves: the frames at the camera's present size (every stack's raw frames are kept), and each
    # stack's fused image and depth map. (A Multi Camera's buffer holds a frame of each of its cameras.)
    check_room_for_stack(folder, planned, core.getImageBufferSize() // max(cameras, 1),
                         "the mda plan", unit="frames", smaller="fewer positions, channels, time points or z steps",
                         frame_pixels=core.getImageWidth() * core.getImageHeight(), stacks=len(stacks))
    interrupted, ended_by = False, None
    started = time.perf_counter()
    record_so_far = _RecordSoFar(folder, profile, planned)
    with contextlib.ExitStack() as after_the_mda, _said_by_session(handler):
        thread = core.run_mda(sequence, output=handler)
        # Waiting on the handler, not on thread.join(): a join interrupted by Ctrl-C marks the thread
        # as ended in Python 3.11, and later joins would return at once.
        try:
            while thread.is_alive() and not handler.finished.wait(0.1):
                record_so_far.stacks_finished(handler.stacks_finished())
        except KeyboardInterrupt as interrupt:  # (SIGTERM arrives as one too, saying so: acquisition.stop_signals)
            interrupted, ended_by = True, str(interrupt) or INTERRUPTED
            # A second stop while this one winds the MDA down (a double Ctrl-C; `timeout` sends SIGTERM to the
            # program and again to its process group) is noted, not raised: raised here, it escaped as a stop
            # "before the session started; nothing was acquired", frames on disk and session.json left as it began.
            with signals_deferred("stopping the MDA: the event under way ends, then what it acquired is fused and "
                                  "saved; the program ends when it is"):
                core.mda.cancel()
                handler.finished.wait(CANCEL_TIMEOUT_S)  # (the runner logs the cancel before the handler finishes)
        # From here the MDA has ended: a stop cuts nothing short (as a live session's); it is noted, not raised, until
        # the session's record is written (a stop there escaped as one "before the session started").
        stops_after_the_end = after_the_mda.enter_context(signals_deferred())
        thread.join(RUNNER_END_TIMEOUT_S)
        return _recorded(profile, rig, folder, caught, thread_errors, warnings_before, sequence, handler, thread,
                         planned, started, interrupted, ended_by, stops_after_the_end)


def _recorded(profile: Profile, rig: MDARig, folder: Path, caught: list, thread_errors: list[ThreadError],
              warnings_before: list[str], sequence, handler: StreamingFusionHandler, thread, planned: int,
              started: float, interrupted: bool, ended_by: str | None,
              stops_after_the_end: list[str]) -> SessionOutcome[MDASessionReport]:
    """The MDA's session.json, written, and its outcome."""
    core = rig.core
    total_s = time.perf_counter() - started
    if handler.stopped_by is not None and ended_by is None:  # a frame could not be stored: the handler stopped it
        ended_by = handler.stopped_by
    devices, threads = _device_names(core), {thread.name: RUNNER}
    # An error that ended the runner's thread ended the MDA: it stopped at the event under way.
    runner_error = next((error for error in thread_errors if error.thread_name == thread.name), None)
    if runner_error is not None and ended_by is None:
        ended_by = runner_error.said(devices, threads)
    summary = handler.summary or {"stacks": [], "failed": [], "missing_slices": {}, "frames": 0,
                                  "error": "the MDA ended before its handler summed it up"}
    if summary.get("error") and ended_by is None:
        ended_by = summary["error"]
    summary_written = handler.summary is not None and handler.summary_error is None
    report = MDASessionReport(
        profile=profile.model_dump(mode="json"), folder=str(folder), planned_slices=planned,
        acquired_slices=summary["frames"], ended_by=ended_by,
        errors=[*(r["error"] for r in summary["stacks"] if r.get("error")),
                *([handler.summary_error] if handler.summary_error else [])],
        missing_slices=summary["missing_slices"], seconds={"total": round(total_s, 4)},
        throughput_slices_per_s=round(summary["frames"] / total_s, 3) if total_s else None,
        stacks=summary["stacks"], outputs={"summary": str(folder / MDA_SUMMARY)} if summary_written else {},
        stacks_not_started=list(summary.get("stacks_not_started", [])))
    report.count_cameras()
    _score(report, profile, rig, sequence)
    # (The handler's warnings that say an error the report's errors or ended_by hold are not said twice; nor is the
    # error that ended the runner's thread, which is ended_by, as a single-stack session's device error is.)
    said = [text for text in warnings_said(caught) if text not in handler.errors_said]
    report.warnings = [warning for warning in dict.fromkeys([  # each once
        *warnings_before, *said, *(error.said(devices, threads) for error in thread_errors),
        *(f"{stop_said(name)} after the MDA had ended: it cut nothing short" for name in stops_after_the_end)])
        if warning != ended_by]
    try:
        write_json(folder / SESSION_REPORT, report.to_json())
    except OSError as error:  # (a full disk) the summary printed still says what was saved where; this says why
        report.errors.append(str(error))  # there is no session.json
    completed = ended_by is None and not report.errors and summary["frames"] == planned
    return SessionOutcome(folder, report, completed=completed, interrupted=interrupted)


class _RecordSoFar:
    """session.json while the MDA runs, written as it starts and again as each z-stack is finished: a session killed
    (kill -9, a power cut) leaves it, saying that it did not end there, what it set out to do and the z-stacks
    finished; the whole record replaces it at the end (as a single-stack session's, ``acquisition.session_writer``)."""

    def __init__(self, folder: Path, profile: Profile, planned_slices: int):
        self.path = folder / SESSION_REPORT
        self.record = {"kind": "mda", "folder": str(folder), "profile": profile.model_dump(mode="json"),
                       "planned_slices": planned_slices, "outputs": {"summary": str(folder / MDA_SUMMARY)}}
        self.stacks_written = 0
        write_early_record(self.path, {**self.record, "ended_by": MDA_STARTED_ONLY, "stacks": []})

    def stacks_finished(self, stacks: list[dict]) -> None:
        """Written again where more z-stacks are finished than it names."""
        if len(stacks) > self.stacks_written:
            self.stacks_written = len(stacks)
            write_early_record(self.path, {**self.record, "ended_by": MDA_STACKS_ONLY, "stacks": stacks})


def _device_names(core) -> dict[str, str]:
    """The core's camera and stages by label, named as the single-stack session's devices are in its errors."""
    devices = ((core.getCameraDevice(), "camera"), (core.getFocusDevice(), "stage"),
               (core.getXYStageDevice(), "XY stage"))
    return {label: device_name(kind, label) for label, kind in devices if label}


def _score(report: MDASessionReport, profile: Profile, rig: MDARig, sequence) -> None:
    """With the slide simulator: each fused image's PSNR against its truth, beside its best slice's."""
    ground_truth = rig.ground_truth
    if ground_truth is None:
        return
    scale = full_scale(profile)
    positions = list(sequence.stage_positions) or [None]
    channels = channel_names(sequence)
    for record in report.stacks:
        if "fused" not in record.get("outputs", {}):
            continue
        position = positions[record["indices"].get("p", 0)]
        truth = ground_truth(position and position.x, position and position.y,
                                 channels.index(record["channel"]) if record["channel"] in channels else 0)
        fused = tifffile.imread(record["outputs"]["fused"])
        with tifffile.TiffFile(record["outputs"]["stack"]) as stack:
            best = max(psnr(page.asarray(), truth, scale) for page in stack.pages)
        record["psnr_db"] = round(psnr(fused, truth, scale), 3)
        record["best_slice_psnr_db"] = round(best, 3)
