"""A session's stack that was never finalized (kill -9, power cut) keeps every slice's z."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.stack_buffer import StackBuffer
from fusion.readers import open_stack


def unfinalized_stack(path, n_slices: int) -> StackBuffer:
    buffer = StackBuffer(path)
    for index in range(n_slices):
        buffer.append(np.full((32, 48), index * 5, np.uint8), z=index * 1.5, time_s=index, exposure_ms=10.0)
    buffer._file.close()  # as if the process died: never finalized
    return buffer


@pytest.mark.parametrize("n_slices", [3, 7, 8, 12, 40])
def test_every_slice_of_an_unfinalized_stack_keeps_its_z(tmp_path, n_slices):
    # tifffile hands back pages without their description from the 8th page of a series on.
    buffer = unfinalized_stack(tmp_path / "stack.ome.tif", n_slices)
    with open_stack(buffer.path) as stack:
        assert stack.n_slices == n_slices
        assert stack.z_positions_um == [index * 1.5 for index in range(n_slices)]
        assert int(stack.read_slice(n_slices - 1)[0, 0]) == (n_slices - 1) * 5


def test_finalized_stack_keeps_every_z_too(tmp_path):
    buffer = StackBuffer(tmp_path / "stack.ome.tif")
    for index in range(12):
        buffer.append(np.full((32, 48), index, np.uint8), z=index * 2.0, time_s=index, exposure_ms=10.0)
    buffer.finalize({"name": "test"}, "um")
    with open_stack(buffer.path) as stack:
        assert stack.z_positions_um == [index * 2.0 for index in range(12)]
