"""A streamed frame whose camera stamps no exposure start (GenICam through harvesters: the Viky producer and many
cameras give no buffer timestamp) is timed by its arrival, which comes after readout and transfer. Such a frame is
kept as a step's still slice only if the lens held still from the arrival latency margin plus the exposure before
its arrival, so a frame exposed while the lens rang and delivered late is flagged, not stored."""
from __future__ import annotations

import numpy as np
import pytest

from acquisition.lens_settling import LensTrajectory
from acquisition.lens_stream import ARRIVAL_LATENCY_S, LensStreamAcquirer, exposure_window_s
from devices.camera import Frame

EXPOSURE_MS, SETTLE_S, SENT_S = 8.0, 0.015, 1000.0  # genicam-etl.yaml: 8 ms exposure, 15 ms settle


def frame_arriving(arrival_s: float, exposure_start_s: float | None = None) -> Frame:
    return Frame(pixels=np.zeros((4, 4), np.uint8), exposure_ms=EXPOSURE_MS, pixel_type="Mono8", bit_depth=8,
                 timestamp_s=arrival_s, exposure_start_s=exposure_start_s)


def lens_sent_to_step_1() -> LensTrajectory:
    trajectory = LensTrajectory(SETTLE_S)
    trajectory.command(SENT_S - 1.0, 0.0, SENT_S - 1.0)  # step 0, long settled
    trajectory.command(SENT_S, 2.0, SENT_S)
    return trajectory


def test_a_frame_exposed_while_the_lens_rang_and_delivered_late_is_not_taken_as_still():
    # Exposed 4..12 ms after the command (the lens rings until 15 ms), delivered 20 ms later: counted back from its
    # arrival by its exposure alone it looked exposed at 24..32 ms, still, and was stored as step 1's slice.
    focus = lens_sent_to_step_1().frame_focus(*exposure_window_s(frame_arriving(SENT_S + 0.032)))
    assert not focus.still


def test_a_frame_arriving_after_the_settle_exposure_and_latency_margin_is_still():
    arrival_s = SENT_S + SETTLE_S + EXPOSURE_MS / 1000 + ARRIVAL_LATENCY_S + 0.005
    focus = lens_sent_to_step_1().frame_focus(*exposure_window_s(frame_arriving(arrival_s)))
    assert focus.still and focus.command == 1


def test_a_frame_with_its_exposure_start_is_timed_by_it_not_by_its_arrival():
    frame = frame_arriving(SENT_S + 0.040, exposure_start_s=SENT_S + 0.020)
    assert exposure_window_s(frame) == (SENT_S + 0.020, pytest.approx(SENT_S + 0.028))
    assert lens_sent_to_step_1().frame_focus(*exposure_window_s(frame)).still


def test_a_negative_arrival_latency_is_refused():
    with pytest.raises(ValueError, match="arrival_latency_s must be 0 or more, got -0.01"):
        LensStreamAcquirer(camera=None, lens=None, settle_s=SETTLE_S, arrival_latency_s=-0.01)
