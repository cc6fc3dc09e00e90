"""A camera free-running in its own thread, its frames handed over through a queue with deadlines."""
from __future__ import annotations

import queue
import threading

from devices.camera import Frame
from devices.errors import DeviceErrorReply, DeviceTimeoutError

_ENDED = object()


class FrameStream:
    """``camera.sequence(max_frames)`` in a thread; ``next_frame`` waits for the next frame until a deadline.

    A camera error in the thread is raised by ``next_frame``; ``close`` stops the camera after its
    current frame. Use as a context manager.
    """

    def __init__(self, camera, max_frames: int, frame_timeout_s: float):
        self.camera = camera
        self.max_frames = max_frames
        self.frame_timeout_s = frame_timeout_s
        self.frames_delivered = 0
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame stream", daemon=True)

    def __enter__(self) -> FrameStream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        frames = self.camera.sequence(self.max_frames, timeout_s=self.frame_timeout_s)
        try:
            for frame in frames:
                self._queue.put(frame)
                if self._stop.is_set():
                    break
            self._queue.put(_ENDED)
        except BaseException as error:  # handed to the consumer, which raises it
            self._queue.put(error)
        finally:
            frames.close()

    def next_frame(self, timeout_s: float) -> Frame:
        """The next frame; DeviceTimeoutError when none comes within ``timeout_s``."""
        try:
            item = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise DeviceTimeoutError(self.camera.name, f"no frame within {timeout_s:g} s of streaming") from None
        if item is _ENDED:
            self._queue.put(_ENDED)
            raise DeviceErrorReply(self.camera.name, f"the stream ended after {self.frames_delivered} frames "
                                                     f"(at most {self.max_frames} were asked for)")
        if isinstance(item, BaseException):
            raise item
        self.frames_delivered += 1
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.frame_timeout_s + 1.0)
