"""Fusing the MDAs that a core runs, from outside the call that runs them (napari-micromanager's case).

napari-micromanager starts MDAs on ``CMMCorePlus.instance()`` with its own writers; following
that core's MDA signals with a ``StreamingFusionHandler`` fuses every stack of every MDA it
runs, while a viewer polls ``handler.preview()`` to show the fused image building up.
The first MDA writes into the folder given, each later one into a subfolder of its own
(``mda-<start>-<uid>``, see ``fusion.mda``); ``handler.out_dir`` is the current one's.
A frame that cannot be stored (a full disk) cancels the core's MDA, as in a session: the frames
after it would be lost.
"""
from __future__ import annotations

from pathlib import Path

from fusion.mda import StreamingFusionHandler

_SIGNALS = ("sequenceStarted", "frameReady", "sequenceFinished")


class MDAFollower:
    """Connects a StreamingFusionHandler to ``core.mda.events`` until ``stop()``."""

    def __init__(self, core, out_dir: str | Path, **settings):
        """``settings``: the handler's (``StreamingFusionHandler``); ``stop_mda`` defaults to the core's cancel."""
        self.core = core
        settings.setdefault("stop_mda", core.mda.cancel)
        self.handler = StreamingFusionHandler(out_dir, **settings)
        for name in _SIGNALS:
            getattr(core.mda.events, name).connect(getattr(self.handler, name))

    def stop(self) -> None:
        for name in _SIGNALS:
            getattr(self.core.mda.events, name).disconnect(getattr(self.handler, name))
