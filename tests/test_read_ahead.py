"""Reading slices ahead on another thread: order, errors at the right slice, early stops."""
import threading
import time

import numpy as np
import pytest

from fusion.read_ahead import read_ahead


def test_slices_come_in_order_with_their_read_times():
    def read(index):
        time.sleep(0.001 * (5 - index))  # later slices decode faster: order must still hold
        return np.full((2, 2), index)

    got = list(read_ahead(read, 5))
    assert [index for index, _, _ in got] == [0, 1, 2, 3, 4]
    assert all(int(pixels[0, 0]) == index and seconds >= 0 for index, pixels, seconds in got)


def test_a_read_error_is_raised_at_its_slice():
    def read(index):
        if index == 2:
            raise OSError("slice 2: truncated")
        return np.zeros(1)

    seen = []
    with pytest.raises(OSError, match="slice 2: truncated"):
        for index, _, _ in read_ahead(read, 5):
            seen.append(index)
    assert seen == [0, 1]


def test_stopping_early_stops_the_reader():
    reads = []

    def read(index):
        reads.append(index)
        return np.zeros(1)

    for index, _, _ in read_ahead(read, 1000, depth=2):
        if index == 3:
            break
    assert len(reads) <= 3 + 1 + 2 + 1  # what was consumed, plus at most the queue and one in hand
    assert not any(t.name == "read-ahead" for t in threading.enumerate())
