"""The real stacks in shared/data fuse without error and come out sharper than each slice."""
import pytest
import tifffile

from fusion.metrics import average_gradient, spatial_frequency
from fusion.readers import open_stack
from fusion.refuse import refuse_stack

pytestmark = pytest.mark.slow

STACKS = ["keyboard-phone", "pcb", "scorpion-microscope"]


@pytest.mark.parametrize("name", STACKS)
def test_real_stack_is_sharper_fused_than_any_slice(shared_data, tmp_path, name):
    report = refuse_stack(shared_data / name, tmp_path)
    fused = tifffile.imread(report.outputs["fused"])
    with open_stack(shared_data / name) as stack:
        slice_sf, slice_ag = zip(*[(spatial_frequency(p), average_gradient(p)) for p, _ in stack])
        assert fused.shape == stack.first_slice_format()[0]
    assert report.n_slices == len(slice_sf)
    assert spatial_frequency(fused) > max(slice_sf)
    assert average_gradient(fused) > max(slice_ag)
