"""`--composition pick` takes a slice's windowed measure and its energy from one response: a deep measure's network
sees each slice once, not twice."""
import numpy as np
import pytest

from fusion import FusionSettings, StreamingFusion
from fusion.focus_measures import make_measure
from simulators.motion import moving_sweep


@pytest.mark.parametrize("name", ["sf", "laplacian", "ums"])
def test_measure_and_energy_are_the_measure_and_the_energy(name):
    gray = moving_sweep("coffee", "dome", (96, 128), 3, 0.02, 8.0, moving=False).slices[1].mean(axis=2)
    measure = make_measure(name, 15, device="cpu")
    windowed, energy = measure.measure_and_energy(np.ascontiguousarray(gray, np.float32))
    assert np.array_equal(windowed, measure(np.ascontiguousarray(gray, np.float32)))
    assert np.array_equal(energy, measure.energy(np.ascontiguousarray(gray, np.float32)))


def test_pick_with_the_deep_measure_runs_the_network_once_per_slice():
    stack = moving_sweep("coffee", "dome", (96, 128), 4, 0.02, 8.0, moving=False)
    engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype,
                             FusionSettings(composition="pick", measure="ums", device="cpu", align="off"))
    engine._measure.load()
    passes = []
    engine._measure._encoder.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0].shape[0]))
    for pixels, z in zip(stack.slices, stack.z_um):
        engine.push(pixels, z)
    engine.finish()
    # Each slice once, and once the flat patch of noise that calibrates the floors (at the first slice).
    assert sum(passes) == len(stack.slices) + 1
