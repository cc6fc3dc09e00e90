"""Errors through pycromanager's Java bridge (pyjavaz), which raises a plain Exception for every Java exception.

Micro-Manager's Java backend cannot run here, so the core is a mock (MockJavaCore); the exceptions it raises are
made by pyjavaz's own code for a reply of type "exception", as a running Micro-Manager sends one."""
from __future__ import annotations

import pytest

from devices.errors import TRANSIENT_ERRORS, DeviceDisconnectedError, DeviceErrorReply
from devices.micromanager import _CoreCaller
from devices.pycromanager_core import SnakeCaseCore


def java_exception(message: str) -> Exception:
    """The exception pyjavaz raises when the Java side answers a call with an exception."""
    from pyjavaz.bridge import _JavaObjectShadow  # type: ignore[import-untyped]

    try:
        _JavaObjectShadow._deserialize(None, {"type": "exception", "value": message})  # type: ignore[arg-type]
    except Exception as error:
        return error
    raise AssertionError("pyjavaz no longer raises for an exception reply")


class MockJavaCore:
    """Mock of pycromanager's Java Core (snake_case methods): each raises what it is told to."""

    def __init__(self, raised: BaseException):
        self.raised = raised

    def snap_image(self):
        raise self.raised


def call_snap(raised: BaseException):
    caller = _CoreCaller(SnakeCaseCore(MockJavaCore(raised)), "Micro-Manager camera Camera")
    try:
        caller("snapImage")
    finally:
        caller.close()


def test_a_java_exception_from_micro_manager_is_an_error_reply_that_is_retried():
    # It was a bare Exception: not a DeviceError, so one failed buffer read ended the session.
    with pytest.raises(DeviceErrorReply) as caught:
        call_snap(java_exception("Camera image buffer read failed."))
    assert isinstance(caught.value, TRANSIENT_ERRORS)
    assert str(caught.value) == ("Micro-Manager camera Camera: snapImage failed "
                                 "(device replied 'Camera image buffer read failed.')")


@pytest.mark.parametrize("message", ["Bridge has been closed",
                                     "Tried to send message through socket 4827, which is already closed"])
def test_a_java_bridge_that_is_gone_is_a_lost_connection(message):
    with pytest.raises(DeviceDisconnectedError, match=f"snapImage lost the core: .*{message}"):
        call_snap(Exception(message))  # pyjavaz raises these itself, as plain Exceptions


def test_a_call_that_fits_no_java_method_stays_a_programming_error():
    with pytest.raises(TypeError, match="Incorrect arguments"):
        call_snap(Exception("Incorrect arguments. \nExpected int \nGot str"))


@pytest.mark.parametrize("raised", [TypeError("snap_image() takes 1 positional argument"), KeyError("Camera")])
def test_typed_exceptions_from_the_core_pass_as_they_are(raised):
    with pytest.raises(type(raised)):
        call_snap(raised)
