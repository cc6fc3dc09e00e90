"""Errors that end a device library's own thread: kept, and said with the device they were for.

UniMMCore (pymmcore-plus) runs a Python camera's sequence acquisition in a thread of its own. An error
there ends that thread, the core sees the sequence end early, and Python hands the error to
``threading.excepthook``, which prints it under the thread's name ("Thread-1"), where nobody waiting for
the frames sees it. ``ThreadErrors`` keeps such errors while it is in effect, as
``warnings.catch_warnings(record=True)`` keeps warnings: a driver can say why its sequence ended, and a
session can record them in session.json.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadError:
    """An error that ended a thread; ``device``: the label of the device it ran for, where the thread names one
    (UniMMCore's acquisition thread does, as ``label``)."""

    thread_name: str
    device: str | None
    error: BaseException

    @classmethod
    def from_hook(cls, args: threading.ExceptHookArgs) -> ThreadError:
        thread = args.thread
        label = getattr(thread, "label", None)
        error = args.exc_value if args.exc_value is not None else args.exc_type()
        return cls(thread.name if thread is not None else "a thread", label if isinstance(label, str) else None,
                   error)

    @property
    def device_said(self) -> str | None:
        """What the device itself said: the error the library's own wraps (its cause), else that one."""
        cause = self.error.__cause__
        return str(cause or self.error) or None

    def said(self, device_names: dict[str, str] | None = None, thread_names: dict[str, str] | None = None) -> str:
        """One line for people, naming the device (``device_names``: label -> the name its errors use), else the
        thread (``thread_names``: a thread's name -> what it is to people, as "pymmcore-plus's MDA runner")."""
        if self.device is not None:
            who = (device_names or {}).get(self.device, f"device {self.device!r}")
        else:
            who = (thread_names or {}).get(self.thread_name, f"thread {self.thread_name!r}")
        return f"{who}: an error in the device library's own thread: {type(self.error).__name__}: {self.error}"


class ThreadErrors:
    """While in effect (``with``), each error that ends a thread (``threading.excepthook``) is kept in
    ``caught``; with ``device``, only those of that device's threads. ``hand_on``: every error also goes to
    the hook that was in effect before (printed, or kept by an outer ThreadErrors); without it, none is
    printed, as ``catch_warnings(record=True)`` prints no warning."""

    def __init__(self, device: str | None = None, hand_on: bool = False):
        self.device = device
        self.hand_on = hand_on
        self.caught: list[ThreadError] = []
        self._previous = threading.excepthook
        self._in_effect = False

    def __enter__(self) -> ThreadErrors:
        self._previous = threading.excepthook
        self._in_effect = True
        threading.excepthook = self._hook
        return self

    def __exit__(self, *exc) -> None:
        self._in_effect = False
        # Another took over after this one (one not left in order): it still hands on through this one, which
        # from now on only hands on; restoring the hook before this one would drop it.
        if threading.excepthook == self._hook:
            threading.excepthook = self._previous

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        error = ThreadError.from_hook(args)
        mine = self._in_effect and (self.device is None or error.device == self.device)
        if mine:
            self.caught.append(error)
        if self.hand_on or not mine:
            self._previous(args)

    def last_said_by_device(self) -> str | None:
        """What the device said in the last error kept; None: none was."""
        return self.caught[-1].device_said if self.caught else None
