"""Ctrl-C held back while a step must not be cut short (fusion.held_signals)."""
import os
import signal

import pytest

from fusion.held_signals import signals_deferred, signals_held


def test_a_ctrl_c_held_through_a_block_arrives_when_it_ends(default_sigint):
    reached_the_end_of_the_block = False
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        reached_the_end_of_the_block = True
    assert reached_the_end_of_the_block


def test_a_ctrl_c_held_through_a_block_that_fails_still_arrives(default_sigint):
    # The user asked to stop: that comes before the block's own error (a cluster that failed to
    # start because Ctrl-C reached its workers is an interruption, not an error to report).
    with pytest.raises(KeyboardInterrupt) as stopped, signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        raise OSError("the block's own failure")
    assert isinstance(stopped.value.__context__, OSError)


def test_deferred_signals_are_recorded_and_the_handler_restored(default_sigint):
    with signals_deferred() as received:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    assert received == ["SIGINT", "SIGINT"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
