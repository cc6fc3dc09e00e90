"""Ctrl-C, SIGTERM and SIGHUP held back while a block must not be cut short.

Some steps leave a mess when a signal breaks into them: a slice written to the stack but not
recorded in the report, a session's outputs half written, a dask cluster half started or half
closed (its workers then outlive the program, or hold its exit for seconds). These helpers let
such a step finish first.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable

# The signals that stop a run as Ctrl-C does (acquisition.stop_signals; Windows has no SIGHUP).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def quiet_a_hung_up_terminal() -> None:
    """stdout and stderr sent to /dev/null where they are a terminal that hung up (SIGHUP: it closed, or the ssh
    session dropped): every write there fails (EIO), and a failed print must not cut a saving short, nor a failed
    flush at exit turn the exit status into 120. A SIGHUP sent by hand (``kill -HUP``) to a program whose terminal
    is still there, or whose output goes to a pipe or a file, leaves them as they are."""
    for fd in (1, 2):
        try:
            os.write(fd, b"")  # (a hung-up terminal refuses even an empty write; a live one, a pipe or a file take it)
        except OSError as error:
            if error.errno == errno.EIO:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)


@contextlib.contextmanager
def signals_deferred(notice: str | None = None, on_signal: Callable[[str], None] | None = None):
    """While the block runs, SIGINT, SIGTERM and SIGHUP are recorded instead of raised; yields their names.
    ``notice``: printed on stderr at the first of them, so that a second Ctrl-C is not met by silence.
    ``on_signal``: called with each one's name ("SIGINT", "SIGTERM", "SIGHUP") as it arrives, in the main thread.

    Outside the main thread (where signal handlers cannot be set) it defers nothing.
    """
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    watched = STOP_SIGNALS
    previous = {number: signal.getsignal(number) for number in watched}

    def record(signum, frame):
        received.append(signal.Signals(signum).name)
        if received[-1] == "SIGHUP":
            quiet_a_hung_up_terminal()
        if on_signal is not None:
            on_signal(received[-1])
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
def signals_held(notice: str | None = None):
    """While the block runs, SIGINT, SIGTERM and SIGHUP wait; they are delivered, as usual, when it ends,
    also when it ends with an error (the stop the user asked for comes first). ``notice``: as
    ``signals_deferred``'s, said at the first of them.
    A slice is written to the stack and recorded in the report together, or not at all (a stop
    between the two left a plane on disk that session.json did not count)."""
    try:
        with signals_deferred(notice) as received:
            yield
    finally:
        for name in dict.fromkeys(received):
            signal.raise_signal(signal.Signals[name])
