"""The simulated sequencing camera's timeline: a frame's readout (its render) overlaps the next
exposure, as on a real camera, and each frame still shows where the stage was in the middle of
its own exposure. Checked on the camera's own recorded exposure windows, not on wall-clock rates."""
from __future__ import annotations

import time

import numpy as np
import pytest

from simulators.micromanager_devices import SimulatedZStage, SpecimenCamera
from simulators.optics import CameraNoise

pytestmark = pytest.mark.hardware_sim

EXPOSURE_MS = 80.0
SHAPE = (8, 10)


class SlowRenderer:
    """Takes ``render_s`` per frame (a camera's readout), and records when each render ended."""

    def __init__(self, render_s: float):
        self.render_s = render_s
        self.specimen = type("Specimen", (), {"texture": np.zeros(SHAPE, np.float32)})()
        self.done_s: list[float] = []

    def exposed(self, camera: CameraNoise, focus_um: float, rng, magnification: float = 1.0) -> np.ndarray:
        time.sleep(self.render_s)
        self.done_s.append(time.monotonic())
        return camera.expose(np.full(SHAPE, 0.5, np.float32), rng)


def run_sequence(positions_um: list[float], render_s: float, speed_um_per_s: float = 2000.0):
    """The camera's exposure-out wired to a sequencing stage, as simulators.rigs wires them."""
    stage = SimulatedZStage(speed_um_per_s=speed_um_per_s, sequence_max_length=len(positions_um))
    renderer = SlowRenderer(render_s)
    camera = SpecimenCamera(renderer, stage.focus_um, CameraNoise(), trigger_out=stage.trigger)  # type: ignore[arg-type]
    renderer.done_s.clear()  # the render the camera made to load its kernels when opened
    camera.set_exposure(EXPOSURE_MS)
    stage.set_position_um(positions_um[0])
    time.sleep(0.01)
    stage.send_sequence(tuple(positions_um))
    stage.start_sequence()
    frames = [np.empty(0)]

    def get_buffer(shape, dtype):
        frames.append(np.empty(shape, dtype))
        return frames[-1]

    for _ in camera.start_sequence(len(positions_um), get_buffer):
        pass
    return camera, renderer


def test_the_next_exposure_runs_during_the_readout_so_frames_come_at_the_exposure_period():
    camera, renderer = run_sequence([0.0, 1.0, 2.0, 3.0, 4.0], render_s=EXPOSURE_MS / 2000)  # half an exposure
    windows = camera.exposures_s
    assert len(windows) == 5
    for (start, end), (next_start, _) in zip(windows[:-1], windows[1:], strict=True):
        assert end - start == pytest.approx(EXPOSURE_MS / 1000)
        assert next_start >= end  # one exposure at a time
    # The render took half an exposure, so the next exposure began as the last one ended: back to
    # back (frame period = exposure), not exposure + render. (One late wake-up of a busy machine is forgiven.)
    back_to_back = sum(next_start == end for (_, end), (next_start, _) in zip(windows[:-1], windows[1:], strict=True))
    assert back_to_back >= 3


def test_a_readout_longer_than_the_exposure_holds_the_next_exposure_back():
    camera, renderer = run_sequence([0.0, 1.0, 2.0, 3.0], render_s=1.5 * EXPOSURE_MS / 1000)
    windows = camera.exposures_s
    # The sensor holds one frame: exposure k+1 cannot end before frame k's readout is done.
    for (_, next_end), readout_done in zip(windows[1:], renderer.done_s, strict=False):
        assert next_end >= readout_done - 1e-6
    assert camera.rendered_at_um == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-9)  # the stage had arrived


def test_each_frame_shows_where_the_stage_was_in_the_middle_of_its_own_exposure():
    # A stage slow enough that it is still moving at the middle of each exposure: 10 µm steps at
    # 150 µm/s take 67 ms, the middle comes 40 ms after the trigger (the previous exposure's end).
    positions = [0.0, 10.0, 20.0, 30.0]
    camera, _ = run_sequence(positions, render_s=0.005, speed_um_per_s=150.0)
    windows = camera.exposures_s
    assert camera.rendered_at_um[0] == pytest.approx(0.0)
    for k in range(1, len(positions)):
        trigger_s = windows[k - 1][1]
        middle_s = (windows[k][0] + windows[k][1]) / 2
        travelled_um = min(10.0, (middle_s - trigger_s) * 150.0)
        assert camera.rendered_at_um[k] == pytest.approx(positions[k - 1] + travelled_um, abs=1e-6)
        assert camera.rendered_at_um[k] < positions[k]  # still on its way: the frame shows it
