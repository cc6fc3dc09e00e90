"""SIGTERM and SIGHUP end a session as Ctrl-C does, and none of them can cut the saving of a session short.

``timeout``, systemd and cluster schedulers stop a program with SIGTERM; a terminal that closes, or an
ssh session that drops, sends SIGHUP. The default of both is to die on the spot: no session.json, no
fused image, an unfinalized stack, the focus left where it was, a batch's cluster left to leak.
``stop_on_signals`` turns each into ``Terminated`` (a KeyboardInterrupt), so the session's or the
batch's own Ctrl-C handling saves, fuses and returns the focus; ``fusion.held_signals`` keeps a second
signal from breaking into that saving. Once the run is over (its outputs written, its exit status decided),
``stops_said_after_the_end`` and ``ignore_stop_signals`` keep a signal from killing the program on its way out.

This module imports nothing heavy: the entry point uses it while Python is still importing numpy, SciPy and numba,
and a Ctrl-C there must not make it import them again (half loaded, they fail: a RecursionError in numpy).
"""
from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable

INTERRUPTED = "interrupted (Ctrl-C)"
TERMINATED = "terminated (SIGTERM)"
HUNG_UP = "hung up (SIGHUP)"

# What each stop signal is called in messages and reports, and the exit status the shell gives a process it
# ended (128 + the signal's number): a script that waits for the program sees the same either way.
_SAID = {"SIGINT": INTERRUPTED, "SIGTERM": TERMINATED, "SIGHUP": HUNG_UP}
_EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
# The stop signals this platform has (Windows has no SIGHUP): fusion.held_signals.STOP_SIGNALS, named here too so
# that a program's start and end need not import the fusion package (numba, OpenCV, SciPy) to name them.
STOP_SIGNALS = tuple(getattr(signal, name) for name in _EXIT_STATUS if hasattr(signal, name))

_first_stop: list[str] = []  # the first of SIGTERM and SIGHUP that came (Ctrl-C needs no record: 130)
_on_hang_up: list[Callable[[], None]] = []  # fusion.held_signals.quiet_a_hung_up_terminal, once installed


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM or SIGHUP once ``stop_on_signals`` is installed; says which."""

    def __init__(self, signal_name: str = "SIGTERM"):
        super().__init__(signal_name)
        self.signal_name = signal_name

    def __str__(self) -> str:
        return stop_said(self.signal_name)


def _raise_terminated(signum, frame):
    name = signal.Signals(signum).name
    if not _first_stop:  # (no lock: handlers run in the main thread, and one may run inside another)
        _first_stop.append(name)
    if name == "SIGHUP" and _on_hang_up:
        _on_hang_up[0]()
    raise Terminated(name)


def stop_on_signals() -> None:
    """From now on SIGTERM and SIGHUP raise Terminated in the main thread (call it from the main thread). A SIGHUP
    ignored already stays ignored: ``nohup`` asked for the program to outlive its terminal."""
    # Here, not at the top: importing the fusion package loads numba, OpenCV and SciPy (a second), and importing
    # run_session.py must stay light (``--help``, tests/test_warm_start.py).
    from fusion.held_signals import quiet_a_hung_up_terminal

    _on_hang_up[:] = [quiet_a_hung_up_terminal]
    for number in STOP_SIGNALS:
        if number == signal.SIGINT:  # (Python's own handler raises KeyboardInterrupt)
            continue
        if number == getattr(signal, "SIGHUP", None) and signal.getsignal(number) is signal.SIG_IGN:
            continue
        signal.signal(number, _raise_terminated)


def exit_status_after_stop() -> int:
    """The shell's exit status for a program ended by a signal: 130 after Ctrl-C, 143 after SIGTERM, 129 after
    SIGHUP (the first of them, where both came)."""
    return _EXIT_STATUS[_first_stop[0]] if _first_stop else _EXIT_STATUS["SIGINT"]


def stop_said(signal_name: str) -> str:
    """What a stop signal is called in messages and reports: "SIGINT" is Ctrl-C, "SIGTERM" a termination, "SIGHUP"
    a terminal that hung up."""
    return _SAID.get(signal_name, INTERRUPTED)


def stops_said_after_the_end() -> None:
    """From now on (the run's outputs written, its exit status decided) a stop signal cuts nothing short: the first
    is said in one warning line on stderr, and it and every later one are ignored; the exit status stays the run's.
    A signal ignored already (SIGHUP under ``nohup``) stays ignored.

    Python's own end needs ``ignore_stop_signals`` too, as the last of the exit hooks: after them the interpreter
    puts each handler of its own back to the default, death, for the half second it takes to tear down numba and
    the rest (a Ctrl-C there ended a whole session with -2, 130 to a shell, and SIGTERM in an exit hook printed a
    traceback)."""
    for number in STOP_SIGNALS:
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _said_after_the_end)


def _said_after_the_end(signum, frame) -> None:
    ignore_stop_signals()  # (first: a second signal while this one is said is not said again)
    name = signal.Signals(signum).name
    if name == "SIGHUP" and _on_hang_up:
        _on_hang_up[0]()
    with contextlib.suppress(OSError, ValueError):  # (stderr closed, or a pipe no one reads: nothing is lost)
        print(f"warning: {stop_said(name)} as the program was ending: it cut nothing short", file=sys.stderr,
              flush=True)


def ignore_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP ignored by the system from now on, for a program whose exit status is decided: an
    ignored signal is the one kind that stays harmless to the end of the interpreter's shutdown (see
    ``stops_said_after_the_end``)."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
