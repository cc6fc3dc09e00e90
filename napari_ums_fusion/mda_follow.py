"""Fusing the MDAs that a core runs, from outside the call that runs them (napari-micromanager's case).

napari-micromanager starts MDAs on ``CMMCorePlus.instance()`` with its own writers; following
that core's MDA signals with a ``StreamingFusionHandler`` fuses every stack of every MDA it
runs, while a viewer polls ``handler.preview()`` to show the fused image building up.
The first MDA writes into the folder given, each later one into a subfolder of its own
(``mda-<start>-<uid>``, see ``fusion.mda``); ``handler.out_dir`` is the current one's.
A frame that cannot be stored (a full disk) cancels the core's MDA, as in a session: the frames
after it would be lost.

Following starts with the core's next sequence: an MDA already running when it starts is not
fused (it would be a stack without its first slices). Stopping mid-MDA finishes the stacks in
progress as a cancelled MDA's are (what arrived is fused, the files closed, the summary written).
"""
from __future__ import annotations

import threading
from pathlib import Path

from devices.micromanager import camera_bit_depths
from fusion.mda import StreamingFusionHandler

_SIGNALS = ("sequenceStarted", "frameReady", "sequenceFinished")


class MDAFollower:
    """Connects a StreamingFusionHandler to ``core.mda.events`` until ``stop()``."""

    def __init__(self, core, out_dir: str | Path, **settings):
        """``settings``: the handler's (``StreamingFusionHandler``); ``stop_mda`` defaults to the core's cancel,
        ``core`` to the core.
        ValueError where ``out_dir`` cannot be a folder (an existing file)."""
        self.core = core
        settings.setdefault("stop_mda", core.mda.cancel)
        settings.setdefault("core", core)  # (each stack then says its camera's exact bit depth)
        if not core.mda.is_running():  # (read by making each camera current: never while an MDA runs)
            # A Multi Camera's physical cameras, whose frames its MDAs are tagged with: the core says theirs only so.
            settings.setdefault("camera_bits", camera_bit_depths(core))
        self.handler = StreamingFusionHandler(out_dir, **settings)
        self._lock = threading.Lock()
        # An MDA already running is left alone: followed from the core's next sequence.
        self.joined_mid_mda = bool(core.mda.is_running())
        self._active = False
        self._stopped = False
        self.finishing: threading.Thread | None = None  # finishing the stacks in progress when stopped mid-MDA
        for name in _SIGNALS:
            getattr(core.mda.events, name).connect(getattr(self, f"_{name}"))

    # (Held while the handler takes a frame: stop() then finishes the sequence after a frame in flight, never
    # before it, where the frame would open a stack after the sequence's summary.)
    def _sequenceStarted(self, sequence, *args) -> None:
        with self._lock:
            if self._stopped:
                return
            self._active = True
            self.handler.sequenceStarted(sequence, *args[:1])

    def _frameReady(self, *args) -> None:
        with self._lock:
            if self._active:
                self.handler.frameReady(*args)

    def _sequenceFinished(self, sequence, *_) -> None:
        with self._lock:
            if not self._active:
                return
            self._active = False
        self.handler.sequenceFinished(sequence)

    @property
    def in_sequence(self) -> bool:
        """Whether the handler is following a sequence that has not finished."""
        return self._active

    def stop(self) -> bool:
        """Disconnect; a sequence in progress is finished as a cancelled one is, in a thread (``finishing``):
        True when there was one (``handler.finished`` is set once its outputs and summary are written)."""
        for name in _SIGNALS:
            getattr(self.core.mda.events, name).disconnect(getattr(self, f"_{name}"))
        with self._lock:
            self._stopped = True
            active, self._active = self._active, False
        if not active:
            return False
        self.finishing = threading.Thread(target=self.handler.sequenceFinished, args=(self.handler._sequence,),
                                          name="mda-follow-finish", daemon=True)
        self.finishing.start()
        return True
