"""SIGTERM ends a session as Ctrl-C does, and neither can cut the saving of a session short.

``timeout``, systemd and cluster schedulers stop a program with SIGTERM, whose default is to
die on the spot: no session.json, no fused image, an unfinalized stack, the focus left where
it was. ``stop_on_sigterm`` turns SIGTERM into ``Terminated`` (a KeyboardInterrupt), so the
session's own Ctrl-C handling saves, fuses and returns the focus; ``signals_deferred`` keeps
a second signal from breaking into that saving.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

_terminated = threading.Event()


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM once ``stop_on_sigterm`` is installed."""

    def __str__(self) -> str:
        return "terminated (SIGTERM)"


def _raise_terminated(signum, frame):
    _terminated.set()
    raise Terminated()


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (call it from the main thread)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def was_terminated() -> bool:
    """True once a SIGTERM has arrived (exit status 143, as the shell reports a process it ended)."""
    return _terminated.is_set()


@contextlib.contextmanager
def signals_deferred(notice: str | None = None):
    """While the block runs, SIGINT and SIGTERM are recorded instead of raised; yields their names.
    ``notice``: printed on stderr at the first of them, so that a second Ctrl-C is not met by silence.

    Outside the main thread (where signal handlers cannot be set) it defers nothing.
    """
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in watched}

    def record(signum, frame):
        received.append(signal.Signals(signum).name)
        if notice and len(received) == 1:
            print(f"\n{notice}", file=sys.stderr, flush=True)

    for number in watched:
        signal.signal(number, record)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def signals_held():
    """While the block runs, SIGINT and SIGTERM wait; they are delivered, as usual, when it ends.
    A slice is written to the stack and recorded in the report together, or not at all (a stop
    between the two left a plane on disk that session.json did not count)."""
    with signals_deferred() as received:
        yield
    for name in dict.fromkeys(received):
        signal.raise_signal(signal.Signals[name])
