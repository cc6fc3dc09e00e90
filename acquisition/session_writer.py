"""A live session's outputs: fused image, depth map and focus curve as its result is ready, session.json at its end.

A ``SessionListener``: it notes how long fusion took per slice and the first frame's metadata (the
ground truth is framed as that frame was: a breathing lens magnifies it). Once the stack is fused it
writes the images, before the drive goes back (a slow stage takes seconds, and a session killed on the
way keeps them); when the session ends it completes the report (outputs, scores, seconds, PSNR against
the rig's ground truth when it has one) and writes it as session.json.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from acquisition.profile import Profile
from acquisition.report import plot_focus_curve
from acquisition.session_events import SessionListener
from acquisition.session_report import SessionReport, SessionSeconds
from fusion.focus_checks import focus_warning
from fusion.metrics import psnr
from fusion.outputs import write_depth_tiff, write_image_tiff, write_json

if TYPE_CHECKING:
    from acquisition.session import Session
    from fusion.engine import FusionResult


# What the session.json written as a session starts says until the session's end replaces it.
STARTED_ONLY = ("the session did not end here: this record was written as it started (it was killed, or its disk "
                "filled before its end could write the whole record); its stack holds each slice it stored")
# ... and once its images are written, before the drive goes back.
IMAGES_ONLY = ("the session did not end here: this record was written with its fused image, before the focus went "
               "back to where it started (it was killed on the way, or its disk filled before its end could write "
               "the whole record); its stack holds each slice it stored")
# An MDA session's, as it starts and as each of its z-stacks is finished (``acquisition.mda_session``).
MDA_STARTED_ONLY = ("the session did not end here: this record was written as its MDA started (it was killed, or its "
                    "disk filled before its end could write the whole record); its z-stacks hold each frame they "
                    "stored")
MDA_STACKS_ONLY = ("the session did not end here: this record was written as its MDA ran, with the z-stacks finished "
                   "so far (it was killed, or its disk filled before its end could write the whole record); its "
                   "z-stacks hold each frame they stored")


def write_early_record(path: Path, record: dict[str, Any]) -> None:
    """``record`` as the session.json of a session under way (its ``ended_by`` says it did not end there): one killed
    (kill -9, a power cut), or whose disk filled before its end could write the whole record, leaves it where the
    whole one would be. A disk that cannot take it is no error here: the end tries again, and says so where it
    cannot."""
    with contextlib.suppress(OSError):
        write_json(path, record)


def full_scale(profile: Profile) -> float:
    """The camera's largest pixel value (1.0 for float images), for PSNR."""
    bits = profile.camera.noise.bit_depth
    return 1.0 if bits == 0 else float(2 ** bits - 1)


class SessionOutputWriter(SessionListener):
    def __init__(self) -> None:
        self.fusion_s: dict[int, float] = {}            # by stack index; written by the fusion thread
        self.first_frame_metadata: dict[str, Any] | None = None
        self.planned_slices = 0
        self.images_written: dict[str, str] = {}        # output name -> path, as ``result_ready`` wrote them
        self.write_error: str | None = None             # why it could not write them all (a full disk)

    def session_started(self, session: Session, planned_slices: int) -> None:
        """A first session.json, as the session starts: a session killed (kill -9, a power cut), or one whose disk
        filled before its end could write the last, leaves this record of what it set out to do where the whole
        one would be (the stack's pages hold each slice's z)."""
        self.planned_slices = planned_slices
        self._write_early_record(session, STARTED_ONLY)

    def _write_early_record(self, session: Session, ended_by: str) -> None:
        write_early_record(session.outputs["report"], {
            "folder": str(session.folder), "profile": session.profile.model_dump(mode="json"),
            "planned_slices": self.planned_slices, "focus_unit": session.profile.focus.unit,
            "ended_by": ended_by, "outputs": {"stack": str(session.outputs["stack"]), **self.images_written}})

    def slice_acquired(self, session: Session, index: int, pixels: np.ndarray, z: float,
                       frame_metadata: dict[str, Any]) -> None:
        if self.first_frame_metadata is None:
            self.first_frame_metadata = dict(frame_metadata)

    def slice_fused(self, session: Session, index: int, fusion_s: float) -> None:
        self.fusion_s[index] = fusion_s

    def result_ready(self, session: Session, result: FusionResult | None) -> None:
        """The images, before the drive goes back; the session.json written as the session started then names them."""
        if result is None:
            return
        try:
            self._write_images(session, result)
        except OSError as error:  # (a full disk) session.json, small, still says what was saved and what was lost
            self.write_error = str(error)
        except Exception as error:  # the decision map, made beside the image, failed: what was written stands
            self.write_error = f"the focus curve could not be made: {type(error).__name__}: {error}"
        if self.images_written:
            self._write_early_record(session, IMAGES_ONLY)

    def session_ended(self, session: Session, report: SessionReport, result: FusionResult | None) -> None:
        # What was said as it started (options with no effect) and what acquisition noticed (a search range
        # that cuts the specimen, a settle time not waited) stand whether or not fusion made anything.
        report.warnings = [*session.warnings_before, *session.acquisition_warnings()]
        if result is not None:  # said whether or not the images could be written (a full disk)
            said = focus_warning(result.focus_scores, result.depth, str(session.folder))
            report.warnings = ([said] if said else []) + report.warnings
            self._record_fusion(session, report, result)
        # Each output named only where it is on disk: the summary claims a fused image only where one is.
        report.outputs.update(self.images_written)
        if self.write_error is not None:
            report.errors.append(self.write_error)
        try:
            if result is not None and "fused" in self.images_written:
                self._score(session, report, result)
        except OSError as error:
            report.errors.append(str(error))
        # Last, so that those raised while writing count too; the summary prints report.warnings, all of them.
        report.warnings += [said for said in session.warnings_raised() if said not in report.warnings]
        self.write_report(session, report)

    def write_report(self, session: Session, report: SessionReport) -> None:
        """``report`` as session.json (again, where something was added to it after the end)."""
        write_json(session.outputs["report"], report.to_json())

    def _write_images(self, session: Session, result: FusionResult) -> None:
        """Fused image, depth map and focus curve, each named in ``images_written`` once it is on disk."""
        unit, paths, pixel_size_um = session.profile.focus.unit, session.outputs, session.pixel_size_um()
        write_image_tiff(paths["fused"], result.fused, pixel_size_um=pixel_size_um)
        self.images_written["fused"] = str(paths["fused"])
        write_depth_tiff(paths["depth"], result.depth, result.depth_unit,
                         pixel_size_um=pixel_size_um)
        self.images_written["depth"] = str(paths["depth"])
        plot_focus_curve(paths["focus_curve"], [s.z for s in session.slices], result.focus_scores, unit,
                         result.chosen_fraction())
        self.images_written["focus_curve"] = str(paths["focus_curve"])

    def _record_fusion(self, session: Session, report: SessionReport, result: FusionResult) -> None:
        """Each slice's fusion time, the focus scores, where the session's time went, alignment and device."""
        slices = report.slices
        for record in slices:
            record.fusion_s = round(self.fusion_s.get(record.index, float("nan")), 5)
        total_s = session.total_s
        not_acquired_s = session.seconds_on_slices_not_acquired()  # failed tries' waits are the devices' time too
        device_s = sum(s.move_s + s.settle_s + s.exposure_s for s in slices) + not_acquired_s
        report.focus_scores = result.focus_scores
        report.seconds = SessionSeconds(
            total=round(total_s, 4), devices=round(device_s, 4),
            overhead_fraction=round(max(0.0, 1 - device_s / total_s), 4),
            result_after_last_slice=round(session.result_after_last_slice_s(), 4),
            slices_read_back_by_fusion=session.slices_read_back(), slices_not_acquired=round(not_acquired_s, 4),
            slices_fused_again_from_disk=session.slices_fused_again_from_disk())
        report.alignment = result.alignment
        report.device_used = result.measure_device

    def _score(self, session: Session, report: SessionReport, result: FusionResult) -> None:
        """PSNR of the fused image and of the best slice against the rig's ground truth, when it has one."""
        truth = session.rig.truth_for(self.first_frame_metadata or {})
        if truth is None or session.buffer is None:
            return
        scale = full_scale(session.profile)
        report.psnr_db = round(psnr(result.fused, truth, scale), 3)
        # Read here, not through the buffer: it is finalized, and its reader, opened again, stayed open (an unclosed
        # file that Python warned of at some later point, inside whatever ran then).
        with tifffile.TiffFile(session.buffer.path) as stack:
            report.best_slice_psnr_db = round(max(psnr(stack.pages[i].asarray(), truth, scale)
                                                  for i in range(len(report.slices))), 3)
