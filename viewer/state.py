"""What the live view shows, updated by the session (or the batch) and read by the page.

Updates are cheap: arrays are kept by reference and only encoded when a browser asks, and
then once per version however many browsers ask (``snapshot_json``, ``png``), so that no
amount of viewing multiplies the work. Every change bumps ``version`` and wakes the page's
event streams.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import numpy as np

from viewer.images import PREVIEW_WIDTH_PX, depth_png_bytes, png_bytes


# How long the page shows a device's trouble (a failed try, a lost frame) after it happened: the next slice, come
# within the page's 0.1 s between updates, cleared it before the page ever showed it.
NOTICE_SHOWN_S = 8.0
RECENT_NOTICES = 10  # the troubles the page is sent (the latest), each with its time


class LiveViewState:
    def __init__(self, title: str, mode: str = "session"):
        self.title = title
        self.mode = mode                      # "session" or "refuse"
        self.status = "starting"              # starting, running, done, failed, interrupted
        self.message = ""                     # at the end: how it ended, and its errors (shown as errors)
        self.warnings: list[str] = []         # at the end: its warnings (shown as warnings, not errors)
        self.notice = ""                      # while running: the trouble met since the last slice (a device retried)
        self.notices: list[dict] = []         # the latest troubles, each with its time (s from the start), as said
        self.planned = 0
        self.acquired = 0
        self.unit = "um"
        self.devices: dict[str, str] = {}
        self.saved: dict[str, str] = {}
        self.stacks: list[dict] = []          # refuse mode: one row per stack
        self.version = 0
        self.image_versions = {"slice": 0, "fused": 0, "depth": 0}
        self._latest_slice: np.ndarray | None = None
        self._fused: Callable[[], np.ndarray | None] = lambda: None
        self._fused_colour: bool | None = None  # its channels colour (RGB) or separate (fluorescence); None: by count
        self._depth: Callable[[], np.ndarray | None] = lambda: None
        self._curve: Callable[[], list[tuple[float, float]]] = lambda: []
        self._changed = threading.Condition()
        self.started = time.time()
        self._snapshot_lock = threading.Lock()
        self._snapshot_cache: tuple[int, str] = (-1, "")
        self._png_lock = threading.Lock()
        self._png_cache: dict[tuple[str, bool], tuple[int, bytes]] = {}
        self.encodes = 0  # PNGs encoded so far (not served: served ones are mostly cached)

    # -- updates (from the session or the batch) --
    def _bump(self, *images: str) -> None:
        with self._changed:
            self.version += 1
            for name in images:
                self.image_versions[name] += 1
            self._changed.notify_all()

    def begin(self, planned: int, unit: str, devices: dict[str, str]) -> None:
        self.planned, self.unit, self.devices, self.status = planned, unit, dict(devices), "running"
        self._bump()

    def attach_fusion(self, fused: Callable[[], np.ndarray | None], depth: Callable[[], np.ndarray | None],
                      curve: Callable[[], list[tuple[float, float]]]) -> None:
        self._fused, self._depth, self._curve = fused, depth, curve

    def fusion_replaced(self) -> None:
        """The fused image, depth map and curve attached now replace those shown (the pages fetch them again)."""
        self._bump("fused", "depth")

    def slice_acquired(self, pixels: np.ndarray, acquired: int, devices: dict[str, str]) -> None:
        self._latest_slice = pixels
        self.acquired = acquired
        self.devices.update(devices)
        self.notice = ""  # (a slice came: the trouble before it is over; the devices' counts keep it)
        self._bump("slice", "fused", "depth")

    def device_trouble(self, notice: str, devices: dict[str, str]) -> None:
        """A device's try failed, or a frame was lost: the page says so at once (it heard nothing for seconds), and
        for ``NOTICE_SHOWN_S`` (``notices``), whatever comes next."""
        self.notice = notice
        self.notices = self.notices[-(RECENT_NOTICES - 1):] + [{"at_s": self._elapsed_s(), "said": notice}]
        self.devices.update(devices)
        self._bump()

    def stack_done(self, row: dict, fused: np.ndarray | None, depth: np.ndarray | None,
                   fused_colour: bool | None = None) -> None:
        """A finished stack's row and images; ``fused_colour``: whether the fused image's channels are colour
        samples (a photo) or separate channels (fluorescence, shown as a composite); None: by their count."""
        self.stacks.append(row)
        self.acquired = len(self.stacks)
        if fused is not None:
            self._fused, self._depth = (lambda: fused), (lambda: depth)
            self._fused_colour = fused_colour
            self._bump("fused", "depth")
        else:
            self._bump()

    def end(self, status: str, message: str = "", saved: dict[str, str] | None = None,
            devices: dict[str, str] | None = None, warnings: list[str] | None = None) -> None:
        """The run's end: its status, what to say (its errors), what was saved, (``devices``) where the devices
        ended, and its ``warnings``. The fused image and depth map are shown anew where there are any (the final
        result replaces the preview); where there are none (every stack failed), no image is announced."""
        self.status, self.message, self.saved = status, message, dict(saved or {})
        self.warnings, self.notice = list(warnings or []), ""
        self.devices.update(devices or {})
        self._bump(*(name for name in ("fused", "depth") if self._has_image(name)))

    def _has_image(self, name: str) -> bool:
        try:
            return self.image(name) is not None
        except Exception:  # (a preview that fails to be made: the page's request for it says so)  # noqa: BLE001
            return True

    # -- reads (from the server) --
    def wait_for_change(self, seen_version: int, timeout_s: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen_version, timeout=timeout_s)
            return self.version

    def image(self, name: str) -> np.ndarray | None:
        if name == "slice":
            return self._latest_slice
        return self._fused() if name == "fused" else self._depth() if name == "depth" else None

    def snapshot_json(self) -> str:
        """``snapshot()`` as JSON, computed once per version however many pages ask."""
        with self._snapshot_lock:
            version = self.version
            if self._snapshot_cache[0] != version:
                self._snapshot_cache = (version, json.dumps(self.snapshot()))
            return self._snapshot_cache[1]

    def png(self, name: str, full: bool) -> bytes | None:
        """Image ``name`` as PNG (downscaled unless ``full``), encoded once per image version."""
        with self._png_lock:  # one encoder at a time: many viewers wait for it instead of encoding again
            version = self.image_versions[name]
            cached = self._png_cache.get((name, full))
            if cached is not None and cached[0] == version:
                return cached[1]
            pixels = self.image(name)
            if pixels is None:
                return None
            width = None if full else PREVIEW_WIDTH_PX
            if name == "depth":
                low, high = _value_range(pixels) or (0.0, 1.0)
                body = depth_png_bytes(pixels, low, high, width)
            else:
                body = png_bytes(pixels, width, self._fused_colour if name == "fused" else None)
            self.encodes += 1
            self._png_cache[(name, full)] = (version, body)
            return body

    def snapshot(self) -> dict:
        depth = self._depth()
        depth_range = _value_range(depth) if depth is not None else None
        return {"title": self.title, "mode": self.mode, "status": self.status, "message": self.message,
                "warnings": self.warnings, "notice": self.notice, "notices": self.notices,
                "notice_shown_s": NOTICE_SHOWN_S,
                "planned": self.planned, "acquired": self.acquired, "unit": self.unit, "devices": self.devices,
                "saved": self.saved, "stacks": self.stacks[-200:], "version": self.version,
                "images": dict(self.image_versions), "depth_range": depth_range,
                "curve": [[float(z), float(s)] for z, s in self._curve()],
                "elapsed_s": self._elapsed_s()}

    def _elapsed_s(self) -> float:
        return round(time.time() - self.started, 1)


def _value_range(values: np.ndarray) -> list[float] | None:
    """[min, max] of the finite values (depth maps hold NaN where there is no texture); None if none."""
    if not values.size or not np.isfinite(values).any():
        return None
    return [float(np.nanmin(values)), float(np.nanmax(values))]
