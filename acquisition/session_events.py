"""What a live session announces while it runs, to the parts that follow it.

The session runs the loop and announces; listeners do the rest: the output writer
(``acquisition.session_writer``) writes the fused image and the depth map as the result is ready, and
session.json at the end, the
live view (``acquisition.live_view_listener``) shows progress. pymmcore-plus splits its MDA
runner from its sinks the same way. Events come in the session's thread, one listener after
the other in the order they subscribed, except ``slice_fused``, which comes from the fusion thread.
A device's failed try and a lost frame are announced as they happen (``device_try_failed``, ``frame_dropped``):
a camera that times out three times keeps the session seconds without a slice, and a live page without news.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from acquisition.session import Session
    from acquisition.session_report import DroppedFrame, RetryRecord, SessionReport
    from fusion.engine import FusionResult


class SessionListener:
    """Follows one session. Override the events you need; each does nothing here."""

    def session_started(self, session: Session, planned_slices: int) -> None:
        """Before the first move: the plan has ``planned_slices`` positions, all within the drive's limits."""

    def slice_acquired(self, session: Session, index: int, pixels: np.ndarray, z: float,
                       frame_metadata: dict[str, Any]) -> None:
        """Slice ``index`` of the stack is on disk and handed to fusion (``session.engine`` exists from now on)."""

    def slice_fused(self, session: Session, index: int, fusion_s: float) -> None:
        """The engine folded slice ``index`` in, in ``fusion_s`` seconds (called from the fusion thread)."""

    def device_try_failed(self, session: Session, retry: RetryRecord) -> None:
        """A move or a frame failed with a transient device error: tried again while ``plan.retries`` allow, else
        the slice is lost (``frame_dropped``) or the session ends."""

    def frame_dropped(self, session: Session, dropped: DroppedFrame) -> None:
        """A planned slice gave no frame after its retries: an explicit gap at ``dropped.z``; the session goes on."""

    def fusion_restarted(self, session: Session) -> None:
        """A slice fused as it was written could not be stored: the fusion so far is dropped, and the slices on disk
        are fused again by a new ``session.engine`` (None: none is on disk)."""

    def result_ready(self, session: Session, result: FusionResult | None) -> None:
        """The stack is saved and fused (``result`` None when nothing was acquired, or fusion failed); the drive
        has not gone back yet (a slow stage takes seconds, and a session killed meanwhile keeps what is written)."""

    def session_ended(self, session: Session, report: SessionReport, result: FusionResult | None) -> None:
        """The stack is saved and fused (``result`` None when nothing was acquired, or fusion failed) and the
        drive is back; ``report`` holds what the loop knows, and listeners before this one may have added to it."""


class SessionEvents(SessionListener):
    """The listeners of one session: each event goes to each of them, in the order they subscribed."""

    def __init__(self, listeners: list[SessionListener] | None = None):
        self.listeners: list[SessionListener] = list(listeners or [])

    def subscribe(self, listener: SessionListener) -> None:
        self.listeners.append(listener)

    def session_started(self, session: Session, planned_slices: int) -> None:
        for listener in self.listeners:
            listener.session_started(session, planned_slices)

    def slice_acquired(self, session: Session, index: int, pixels: np.ndarray, z: float,
                       frame_metadata: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener.slice_acquired(session, index, pixels, z, frame_metadata)

    def slice_fused(self, session: Session, index: int, fusion_s: float) -> None:
        for listener in self.listeners:
            listener.slice_fused(session, index, fusion_s)

    def device_try_failed(self, session: Session, retry: RetryRecord) -> None:
        for listener in self.listeners:
            listener.device_try_failed(session, retry)

    def frame_dropped(self, session: Session, dropped: DroppedFrame) -> None:
        for listener in self.listeners:
            listener.frame_dropped(session, dropped)

    def fusion_restarted(self, session: Session) -> None:
        for listener in self.listeners:
            listener.fusion_restarted(session)

    def result_ready(self, session: Session, result: FusionResult | None) -> None:
        for listener in self.listeners:
            listener.result_ready(session, result)

    def session_ended(self, session: Session, report: SessionReport, result: FusionResult | None) -> None:
        for listener in self.listeners:
            listener.session_ended(session, report, result)


class AnnouncedRetries(list["RetryRecord"]):
    """A session's log of failed tries (``RetryRecord``), each announced as it is logged: the acquirers log into
    it as into a plain list (``append``), in the session's thread. Made as a list is (``dataclasses.asdict`` copies
    it so, for session.json: the copy announces nothing)."""

    def __init__(self, records: Iterable[RetryRecord] = (), announce: Callable[[RetryRecord], None] | None = None):
        super().__init__(records)
        self._announce = announce

    def append(self, retry: RetryRecord) -> None:
        super().append(retry)
        if self._announce is not None:
            self._announce(retry)
