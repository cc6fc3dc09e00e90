"""SIGTERM ends a session as Ctrl-C does, and neither can cut the saving of a session short.

``timeout``, systemd and cluster schedulers stop a program with SIGTERM, whose default is to
die on the spot: no session.json, no fused image, an unfinalized stack, the focus left where
it was. ``stop_on_sigterm`` turns SIGTERM into ``Terminated`` (a KeyboardInterrupt), so the
session's own Ctrl-C handling saves, fuses and returns the focus; ``fusion.held_signals`` keeps
a second signal from breaking into that saving.
"""
from __future__ import annotations

import signal
import threading

_terminated = threading.Event()

INTERRUPTED = "interrupted (Ctrl-C)"
TERMINATED = "terminated (SIGTERM)"


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM once ``stop_on_sigterm`` is installed."""

    def __str__(self) -> str:
        return TERMINATED


def _raise_terminated(signum, frame):
    _terminated.set()
    raise Terminated()


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (call it from the main thread)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def was_terminated() -> bool:
    """True once a SIGTERM has arrived (exit status 143, as the shell reports a process it ended)."""
    return _terminated.is_set()


def stop_said(signal_name: str) -> str:
    """What a stop signal is called in messages and reports: "SIGINT" is Ctrl-C, "SIGTERM" a termination."""
    return TERMINATED if signal_name == "SIGTERM" else INTERRUPTED
