"""The live view follows a session: progress and device status as slices arrive, the fused image
and depth map so far, and at the end the final result or what went wrong."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from acquisition.session_events import SessionListener

if TYPE_CHECKING:
    from acquisition.session import Session
    from acquisition.session_report import DroppedFrame, RetryRecord, SessionReport
    from fusion.engine import FusionResult
    from viewer.state import LiveViewState


def _unit(session: Session) -> str:
    return {"um": "µm"}.get(session.profile.focus.unit, session.profile.focus.unit)


def device_status(session: Session, z: float | None = None) -> dict[str, str]:
    """What the page shows per device: the frame being taken and where the focus is."""
    unit = _unit(session)
    where = f"at {z:g} {unit}" if z is not None else "ready"
    frame = f"frame {len(session.slices) + 1}" if z is not None else "ready"
    return {"camera": f"{session.rig.camera.name}: {frame}", "focus": f"{session.rig.focus.name}: {where}",
            "dropped frames": str(len(session.dropped)), "retries": str(len(session.retries))}


def device_status_at_end(session: Session) -> dict[str, str]:
    """Where the devices ended, as far as the session knows without asking them (a stage that vanished would not
    answer): the focus back where it started, or the last position it was sent to, said as such."""
    unit = _unit(session)
    focus = session.rig.focus.name
    if session.focus_returned_to is not None:
        where = f"back at {session.focus_returned_to:g} {unit}"
    else:
        last = f"; last at {session.slices[-1].z:g} {unit}, as of the last slice" if session.slices else ""
        where = f"could not be sent back ({session.focus_return_error or 'the session ended first'}){last}"
    acquired = len(session.slices)
    return {"camera": f"{session.rig.camera.name}: stopped after {acquired} slice{'' if acquired == 1 else 's'}",
            "focus": f"{focus}: {where}", "dropped frames": str(len(session.dropped)),
            "retries": str(len(session.retries))}


class LiveViewListener(SessionListener):
    def __init__(self, view: LiveViewState):
        self.view = view

    def session_started(self, session: Session, planned_slices: int) -> None:
        self.view.begin(planned_slices, session.profile.focus.unit, device_status(session))

    def slice_acquired(self, session: Session, index: int, pixels: np.ndarray, z: float,
                       frame_metadata: dict[str, Any]) -> None:
        if index == 0:
            self._attach_previews(session)
        self.view.slice_acquired(pixels, index + 1, device_status(session, z))

    def device_try_failed(self, session: Session, retry: RetryRecord) -> None:
        # (a camera timing out keeps the session seconds without a slice: the page said nothing meanwhile)
        tries = session.plan.retries + 1
        role, device = ("focus", session.rig.focus) if retry.what == "move" else ("camera", session.rig.camera)
        then = "trying again" if retry.attempt < tries else "no tries left"
        said = f"slice {retry.slice + 1}: {retry.what} failed (try {retry.attempt} of {tries}: {retry.error}); {then}"
        self.view.device_trouble(said, {role: f"{device.name}: {said}", "retries": str(len(session.retries))})

    def frame_dropped(self, session: Session, dropped: DroppedFrame) -> None:
        said = (f"slice {dropped.planned_index + 1} (at {dropped.z:g} {_unit(session)}) lost after its tries: "
                f"{dropped.error}; going on without it")
        self.view.device_trouble(said, {"dropped frames": str(len(session.dropped))})

    def fusion_restarted(self, session: Session) -> None:
        # The fusion shown so far holds a slice that was not stored: the page follows the stored slices' from now on.
        self._attach_previews(session)
        self.view.fusion_replaced()

    def _attach_previews(self, session: Session) -> None:
        engine, worker = session.engine, session.worker
        if engine is None or worker is None:  # (fused again from disk, where no slice was stored)
            self.view.attach_fusion(lambda: None, lambda: None, lambda: [])
            return
        fusing = worker.lock
        cache: dict = {}

        def preview(part: int):
            # Under the fusion thread's lock: halfway through a slice the engine's maps and its z
            # list disagree. One preview per fused slice count, shared by the fused and depth images.
            with fusing:
                key = engine.n_slices
                if cache.get("key") != key:
                    cache.update(key=key, value=engine.preview())
                value = cache["value"]
            return None if value is None else value[part]

        def curve():
            with fusing:
                return list(zip(engine.z_positions_so_far(), engine.focus_scores))

        self.view.attach_fusion(lambda: preview(0), lambda: preview(1), curve)

    def session_ended(self, session: Session, report: SessionReport, result: FusionResult | None) -> None:
        outputs = report.outputs
        if result is not None:  # the final, cleaned result replaces the running preview
            curve = list(zip([s.z for s in report.slices], result.focus_scores))
            self.view.attach_fusion(lambda: result.fused, lambda: result.depth, lambda: curve)
        # The page ends as the terminal does (run_session's summary and exit status): failed wherever the
        # exit status is 1 (a lost slice, an error), with the same errors and warnings.
        fused = " and fused" if "fused" in outputs else "; no fused image was written"
        if session.interrupted:
            status = "interrupted"
            ended_by = session.ended_by or ""  # (its first letter up: capitalize() made 'Interrupted (ctrl-c)')
            message = f"{ended_by[:1].upper()}{ended_by[1:]}. {report.acquired_slices} slices saved{fused}."
        elif session.ended_by:
            status, message = "failed", (f"The session ended early: {session.ended_by}\n"
                                         f"Saved: the {report.acquired_slices} slices acquired"
                                         + (f" in {outputs['stack']}{fused}." if "stack" in outputs
                                            else "; nothing to save."))
        else:
            status = "failed" if report.dropped_frames or report.errors else "done"
            message = ""
        lost = report.lost_slices_said()
        errors = [*([f"error: {lost}"] if lost else []), *(f"error: {problem}" for problem in report.errors)]
        message = "\n".join(([message] if message else []) + errors)
        self.view.end(status, message, outputs, device_status_at_end(session),
                      warnings=[f"warning: {warning}" for warning in report.warnings or []])
