"""Each slice's time in session.json: on this computer's clock, and on the camera's where it gives one (GenICam).

Real parts: the genicam wheel's GenTL producer (Viky) through harvesters, the simulated lens, a whole session. Viky's
buffers carry no timestamp, and no other producer is here: where one must, a MOCK buffer module stands for a producer
whose buffers do, named as such."""
from __future__ import annotations

import itertools
import json

import pytest
from genicam.gentl import NotAvailableException

from acquisition.profile import load_profile
from acquisition.session import run_profile
from devices.camera import CameraTimestamp
from devices.genicam import GenICamCamera, bundled_producer
from tests.conftest import REPO_ROOT
from tests.test_sessions import small

pytestmark = pytest.mark.hardware_sim

PROFILE = REPO_ROOT / "profiles" / "simulated-genicam-etl.yaml"


class MockTimestampingBuffer:
    """A MOCK GenTL buffer module of a producer whose buffers carry timestamps: ``ticks`` each, in ns where
    ``in_ns`` (BUFFER_INFO_TIMESTAMP_NS), else in the camera's ticks (BUFFER_INFO_TIMESTAMP)."""

    def __init__(self, ticks: int, in_ns: bool):
        self.ticks, self.in_ns = ticks, in_ns

    @property
    def timestamp_ns(self) -> int:
        if not self.in_ns:
            raise NotAvailableException("timestamp_ns not given by this producer")
        return self.ticks

    @property
    def timestamp(self) -> int:
        return self.ticks


def slices_said(folder) -> list[dict]:
    return json.loads((folder / "session.json").read_text())["slices"]


def test_a_camera_that_gives_no_timestamp_has_the_computers_time_and_no_camera_time(tmp_path):
    """Viky gives none: each slice has its time on this computer's clock, and no camera time (not a 0 that
    harvesters' Buffer.timestamp would say)."""
    outcome = run_profile(small(load_profile(PROFILE)), tmp_path, progress=False)
    slices = slices_said(outcome.folder)
    times_s = [s["time_s"] for s in slices]
    assert times_s[0] == 0 and times_s == sorted(times_s) and times_s[-1] > 0
    assert not any("camera_time_s" in s or "camera_time_ticks" in s for s in slices)


def test_a_genicam_buffers_timestamp_is_each_slices_camera_time_in_seconds(tmp_path, monkeypatch):
    """A producer that stamps its buffers (in ns): each slice's camera time since the first, in seconds, beside
    the computer's. The MOCK: the buffer module's timestamps, 25 ms apart; the rest is Viky's session."""
    stamps_ns = itertools.count(7 * 10**12, 25_000_000)
    real = GenICamCamera._camera_timestamp
    monkeypatch.setattr(GenICamCamera, "_camera_timestamp",
                        lambda self, module: real(self, MockTimestampingBuffer(next(stamps_ns), in_ns=True)))
    outcome = run_profile(small(load_profile(PROFILE)), tmp_path, progress=False)
    slices = slices_said(outcome.folder)
    assert [s["camera_time_s"] for s in slices] == pytest.approx([0.025 * i for i in range(len(slices))])
    assert all("time_s" in s and "camera_time_ticks" not in s for s in slices)


def test_ticks_of_a_length_the_camera_does_not_say_are_said_as_ticks():
    """A producer that stamps in its own ticks, where neither it nor the node map says how long a tick is (Viky's
    do not: real): ticks, not seconds guessed at 1 GHz as harvesters' ``timestamp_frequency`` would."""
    camera = GenICamCamera(bundled_producer(), serial_number="0")
    try:
        first = camera._camera_timestamp(MockTimestampingBuffer(1000, in_ns=False))
        later = camera._camera_timestamp(MockTimestampingBuffer(1750, in_ns=False))
    finally:
        camera.close()
    assert first == CameraTimestamp(1000, None) and later is not None
    assert later.since(first) == (None, 750)
    assert CameraTimestamp(1750, 125e6).since(CameraTimestamp(1000, 125e6)) == (pytest.approx(6e-6), None)


def test_a_timestamp_of_0_is_none_and_camera_times_count_from_the_first_slice_only(tmp_path, monkeypatch):
    """harvesters' convention, 0 for no timestamp, gave every slice a camera time of 0.0; and where the first slice
    had no stamp, camera times counted from a later slice's (a regression round). The MOCK: the first two buffers
    say 0, the rest are stamped 25 ms apart; no slice gets a camera time, none being the first slice's."""
    stamps_ns = itertools.chain([0, 0], itertools.count(7 * 10**12, 25_000_000))
    real = GenICamCamera._camera_timestamp
    monkeypatch.setattr(GenICamCamera, "_camera_timestamp",
                        lambda self, module: real(self, MockTimestampingBuffer(next(stamps_ns), in_ns=True)))
    outcome = run_profile(small(load_profile(PROFILE)), tmp_path, progress=False)
    slices = slices_said(outcome.folder)
    assert len(slices) > 3 and not any("camera_time_s" in s or "camera_time_ticks" in s for s in slices)
