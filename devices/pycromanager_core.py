"""Micro-Manager through pycromanager: a running Micro-Manager, or its headless Python backend.

pycromanager's ``Core()`` speaks MMCore's API in snake_case (``snap_image``); the camera
and focus drive of ``devices.micromanager`` speak camelCase. ``SnakeCaseCore`` translates.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from devices.errors import DeviceDisconnectedError, DeviceNotFoundError
from devices.library_threads import ThreadErrors
from devices.micromanager import MicroManagerCamera, MicroManagerFocusDrive

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


# pyjavaz raises a plain Exception for everything: these of its messages say the bridge itself is gone ...
BRIDGE_GONE_MESSAGES = ("Bridge has been closed", "which is already closed", "Socket timed out after")
# ... and these that our call did not fit the Java method (a bug of ours, not a device's answer).
BRIDGE_CALLER_MESSAGES = ("Incorrect arguments", "Unknown argumetn type")  # (pyjavaz's own spelling)


class JavaCoreError(RuntimeError):
    """Raised when Micro-Manager's Java core threw (an MMCoreJ exception that pyjavaz hands on as a plain
    Exception). A RuntimeError, as pymmcore's CMMError is: the camera and focus drive read both as an error reply."""


def _typed_bridge_error(error: Exception) -> Exception:
    """What a plain Exception out of a pyjavaz call means, as a typed exception."""
    said = str(error)
    if any(message in said for message in BRIDGE_GONE_MESSAGES):
        return ConnectionError(f"pycromanager's Java bridge: {said}")
    if said.startswith(BRIDGE_CALLER_MESSAGES):
        return TypeError(said)
    return JavaCoreError(said)


class SnakeCaseCore:
    """Presents a snake_case MMCore (pycromanager) with MMCore's camelCase method names; the plain Exceptions
    its Java bridge raises come out typed (``_typed_bridge_error``), other exceptions as they are."""

    def __init__(self, core):
        self._core = core

    def __getattr__(self, name: str):
        attribute = getattr(self._core, _CAMEL.sub("_", name).lower())
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                return attribute(*args, **kwargs)
            except Exception as error:
                if type(error) is not Exception:  # already typed: pymmcore's RuntimeError, a TypeError, ...
                    raise
                raise _typed_bridge_error(error) from error

        call.__name__ = name
        return call


def connect(headless_adapters: str | Path | None = None, config_path: str | Path | None = None,
            port: int | None = None):
    """pycromanager's core: a running Micro-Manager (default), or a headless Python backend.

    With ``headless_adapters`` (a folder of device adapters, e.g. the mm-test-adapters
    wheel's) and ``config_path``, starts the headless Python backend in this process.
    """
    from pycromanager import Core, start_headless

    if headless_adapters is not None:
        if config_path is None or not Path(config_path).is_file():
            raise DeviceNotFoundError("pycromanager", f"no Micro-Manager configuration file at {config_path}")
        start_headless(str(headless_adapters), str(config_path), python_backend=True)
    try:
        # A failed connection also ends pyjavaz's socket thread with "cannot join current thread": a second
        # line, before the one that says what is wrong, about the library's insides (kept from the hook).
        with ThreadErrors() as connecting:
            core = Core(port=port) if port is not None else Core()
    except Exception as error:  # pyjavaz raises plain Exceptions when nothing listens
        raise DeviceDisconnectedError("pycromanager", "cannot reach Micro-Manager: start it with the "
                                      "pycromanager server enabled, or use headless mode", str(error)) from error
    for caught in connecting.caught:  # connected: an error in its thread is news
        warnings.warn(caught.said(), RuntimeWarning, stacklevel=2)
    return SnakeCaseCore(core)


def stop_headless() -> None:
    from pycromanager import stop_headless as stop

    stop()


class PycroManagerCamera(MicroManagerCamera):
    """A Micro-Manager camera seen through pycromanager."""


class PycroManagerFocusDrive(MicroManagerFocusDrive):
    """A Micro-Manager focus stage seen through pycromanager."""
