"""A live session's outputs: fused image, depth map, focus curve and session.json, written when it ends.

A ``SessionListener``: it notes how long fusion took per slice and the first frame's metadata (the
ground truth is framed as that frame was: a breathing lens magnifies it), and when the session
ends it writes the outputs, completes the report (outputs, scores, seconds, PSNR against the
rig's ground truth when it has one) and writes it as session.json.
"""
from __future__ import annotations

import contextlib
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


def full_scale(profile: Profile) -> float:
    """The camera's largest pixel value (1.0 for float images), for PSNR."""
    bits = profile.camera.noise.bit_depth
    return 1.0 if bits == 0 else float(2 ** bits - 1)


class SessionOutputWriter(SessionListener):
    def __init__(self) -> None:
        self.fusion_s: dict[int, float] = {}            # by stack index; written by the fusion thread
        self.first_frame_metadata: dict[str, Any] | None = None

    def session_started(self, session: Session, planned_slices: int) -> None:
        """A first session.json, as the session starts: a session killed (kill -9, a power cut), or one whose disk
        filled before its end could write the last, leaves this record of what it set out to do where the whole
        one would be (the stack's pages hold each slice's z)."""
        with contextlib.suppress(OSError):  # (the end tries again, and says so where it cannot)
            write_json(session.outputs["report"], {
                "folder": str(session.folder), "profile": session.profile.model_dump(mode="json"),
                "planned_slices": planned_slices, "focus_unit": session.profile.focus.unit,
                "ended_by": STARTED_ONLY, "outputs": {"stack": str(session.outputs["stack"])}})

    def slice_acquired(self, session: Session, index: int, pixels: np.ndarray, z: float,
                       frame_metadata: dict[str, Any]) -> None:
        if self.first_frame_metadata is None:
            self.first_frame_metadata = dict(frame_metadata)

    def slice_fused(self, session: Session, index: int, fusion_s: float) -> None:
        self.fusion_s[index] = fusion_s

    def session_ended(self, session: Session, report: SessionReport, result: FusionResult | None) -> None:
        # What was said as it started (options with no effect) and what acquisition noticed (a search range
        # that cuts the specimen, a settle time not waited) stand whether or not fusion made anything.
        report.warnings = [*session.warnings_before, *session.acquisition_warnings()]
        if result is not None:  # said before the images are written: it stands when the disk is full
            said = focus_warning(result.focus_scores, result.depth, str(session.folder))
            report.warnings = ([said] if said else []) + report.warnings
        try:
            if result is not None:
                self._write_result(session, report, result)
        except OSError as error:  # (a full disk) session.json, small, still says what was saved and what was lost
            report.errors.append(str(error))
        # Last, so that those raised while writing count too; the summary prints report.warnings, all of them.
        report.warnings += [said for said in session.warnings_raised() if said not in report.warnings]
        self.write_report(session, report)

    def write_report(self, session: Session, report: SessionReport) -> None:
        """``report`` as session.json (again, where something was added to it after the end)."""
        write_json(session.outputs["report"], report.to_json())

    def _write_result(self, session: Session, report: SessionReport, result: FusionResult) -> None:
        # What fusion made and how long it all took are known before any image is written: a full disk that
        # stops the images must not take them out of session.json too.
        self._record_fusion(session, report, result)
        unit, paths, pixel_size_um = session.profile.focus.unit, session.outputs, session.pixel_size_um()
        # Each output named once it is written: the summary claims a fused image only where one is on disk.
        write_image_tiff(paths["fused"], result.fused, pixel_size_um=pixel_size_um)
        report.outputs["fused"] = str(paths["fused"])
        write_depth_tiff(paths["depth"], result.depth, unit if result.depth_unit == "um" else "slice index",
                         pixel_size_um=pixel_size_um)
        report.outputs["depth"] = str(paths["depth"])
        plot_focus_curve(paths["focus_curve"], [s.z for s in report.slices], result.focus_scores, unit,
                         result.chosen_fraction())
        report.outputs["focus_curve"] = str(paths["focus_curve"])
        self._score(session, report, result)

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
            slices_read_back_by_fusion=session.slices_read_back(), slices_not_acquired=round(not_acquired_s, 4))
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
