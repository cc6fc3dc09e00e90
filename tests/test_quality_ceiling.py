"""The quality ceiling's oracle (benchmarks/quality_ceiling.py): it takes, per pixel, the slice focused at the
true height, and between two slices blends them by where the height falls."""
import numpy as np

from benchmarks.quality_ceiling import true_depth_fusions
from simulators.optics import RenderedStack


def _stack(height_um: np.ndarray, colour: bool) -> RenderedStack:
    shape = height_um.shape + ((3,) if colour else ())
    slices = [np.full(shape, 10 * (k + 1), np.uint8) for k in range(4)]  # slice k reads 10 (k + 1) everywhere
    return RenderedStack(slices=slices, z_um=[0.0, 2.0, 4.0, 6.0], truth=np.zeros(shape, np.uint8),
                         height_um=height_um.astype(np.float32))


def test_the_oracle_takes_the_slice_at_the_true_height_and_blends_between_slices():
    height_um = np.array([[0.0, 2.0, 3.0], [3.5, 6.0, 9.0]])  # on slices 0, 1; between 1 and 2; past the last
    for colour in (False, True):
        pick, blend = true_depth_fusions(_stack(height_um, colour))
        if colour:  # one choice for every channel of a pixel
            assert np.all(pick == pick[..., :1]) and np.all(blend == blend[..., :1])
            pick, blend = pick[..., 0], blend[..., 0]
        np.testing.assert_allclose(pick, [[10, 20, 30], [30, 40, 40]])
        np.testing.assert_allclose(blend, [[10, 20, 25], [27.5, 40, 40]])
