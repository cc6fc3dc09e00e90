"""The napari reader on what a real disk holds: 16-bit stacks off z 0, stacks cut short, other programs' files."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari", reason="the napari extra is not installed (pip install .[napari])")

from fusion.outputs import write_depth_tiff, write_image_tiff  # noqa: E402
from fusion.stack_buffer import StackBuffer  # noqa: E402
from napari_ums_fusion.reader import get_reader  # noqa: E402
from tests.test_napari_plugin import viewer_model  # noqa: E402


def opened(path) -> tuple[dict, list[str]]:
    """The viewer's layers by name after opening ``path`` with the plugin, and the warnings said."""
    viewer = viewer_model()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        viewer.open(str(path), plugin="ums-fusion")
    return {layer.name: layer for layer in viewer.layers}, [str(w.message) for w in said]


def sixteen_bit_stack(path, n_slices: int = 6, finalize: bool = True, z0: float = 10.0) -> StackBuffer:
    buffer = StackBuffer(path, pixel_size_um=0.5)
    rng = np.random.default_rng(0)
    for k in range(n_slices):
        buffer.append((rng.random((64, 80)) * 3000 + 200).astype(np.uint16), z=z0 + 2 * k, time_s=k,
                      exposure_ms=10.0)
    if finalize:
        buffer.finalize({}, "um")
    else:
        buffer._file.close()  # as if the session was killed: never finalized
    return buffer


@pytest.mark.parametrize("finalize", [True, False])
def test_a_16_bit_stack_off_z_0_opens_with_the_contrast_of_its_pixels(tmp_path, finalize):
    """Every real stage's stack (z 10-20 µm) opened with contrast limits [0, 1]: a white image."""
    sixteen_bit_stack(tmp_path / "stack.ome.tif", finalize=finalize)
    layers, _ = opened(tmp_path)
    stack = layers[f"{tmp_path.name} stack"]
    assert tuple(stack.translate)[0] == 10.0
    low, high = stack.contrast_limits
    assert 200 <= low < 400 and 2800 < high <= 3199


def test_a_two_channel_stack_opens_with_each_channels_contrast(tmp_path):
    planes = np.zeros((5, 2, 32, 40), np.uint16)
    planes[:, 0] = np.arange(32 * 40).reshape(32, 40) % 1000 + 100
    planes[:, 1] = np.arange(32 * 40).reshape(32, 40) % 50 + 30000
    tifffile.imwrite(tmp_path / "cells.stack.ome.tif", planes, imagej=True, metadata={"axes": "ZCYX"})
    layers, _ = opened(tmp_path / "cells.stack.ome.tif")
    assert [tuple(layers[f"cells stack c{k}"].contrast_limits) for k in range(2)] == [(100, 1099), (30000, 30049)]


def outputs_folder(folder, cut_at: int) -> None:
    """An MDA-like folder: a.stack.ome.tif (cut to ``cut_at`` bytes), a.fused.tif, a.depth.tif."""
    sixteen_bit_stack(folder / "a.stack.ome.tif")
    os.truncate(folder / "a.stack.ome.tif", cut_at)
    write_image_tiff(folder / "a.fused.tif", np.full((64, 80), 500, np.uint16), pixel_size_um=0.5)
    write_depth_tiff(folder / "a.depth.tif", np.full((64, 80), 12.0, np.float32), "um", pixel_size_um=0.5)


def test_a_stack_cut_inside_its_first_slice_is_skipped_naming_it_and_the_folder_opens(tmp_path):
    """It failed the whole open later, when napari first read it (ValueError: failed to read 40960 bytes, got
    19616), naming no file; the folder's fused image and depth map were never added."""
    outputs_folder(tmp_path, cut_at=5000)
    layers, said = opened(tmp_path)
    assert set(layers) == {"a fused", "a depth (µm)"}
    assert any(str(tmp_path / "a.stack.ome.tif") in message and "no slice is whole" in message for message in said)


def test_a_killed_sessions_stack_cut_inside_its_last_slice_opens_its_whole_slices(tmp_path):
    """It opened with 4 slices but 3 focus positions, and every read of the 4th raised."""
    buffer = sixteen_bit_stack(tmp_path / "stack.ome.tif", n_slices=4, finalize=False)
    os.truncate(buffer.path, os.path.getsize(buffer.path) - 3000)
    layers, said = opened(tmp_path)
    stack = layers[f"{tmp_path.name} stack"]
    assert stack.data.shape == (3, 64, 80)
    assert stack.metadata["focus_positions"] == [10.0, 12.0, 14.0]
    assert np.asarray(stack.data).min() >= 200  # every slice shown reads
    assert any(str(buffer.path) in message and "1 of its 4 slices left out" in message for message in said)


def test_a_finalized_stack_cut_in_half_says_that_its_z_is_lost(tmp_path):
    """Its OME description (written last) is cut off, and with it the first slice's z: the stack opened in
    pixels, silently."""
    buffer = sixteen_bit_stack(tmp_path / "stack.ome.tif")
    os.truncate(buffer.path, os.path.getsize(buffer.path) // 2)
    layers, said = opened(tmp_path)
    stack = layers[f"{tmp_path.name} stack"]
    assert [str(unit) for unit in stack.units][0] == "pixel"
    whole = stack.data.shape[0]
    assert 0 < whole < 6 and np.asarray(stack.data).min() >= 200  # its whole slices, each read
    assert any(str(buffer.path) in message and "shown in slices (its z in pixels)" in message for message in said)


def test_another_programs_hyperstack_named_fused_is_left_to_other_readers(tmp_path):
    """An ImageJ ZCYX hyperstack named x.fused.tif failed in napari: units=(pixel, pixel) must have length ndim=3."""
    tifffile.imwrite(tmp_path / "hyper.fused.tif", np.zeros((5, 2, 32, 32), np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})
    assert get_reader(str(tmp_path / "hyper.fused.tif")) is None
    write_depth_tiff(tmp_path / "hyper.depth.tif", np.full((32, 32), 3.0, np.float32), "um")
    layers, said = opened(tmp_path)
    assert set(layers) == {"hyper depth (µm)"}
    assert any(str(tmp_path / "hyper.fused.tif") in message and "not a fused image" in message for message in said)


def test_our_fused_images_are_still_ours(tmp_path):
    write_image_tiff(tmp_path / "grey.fused.tif", np.zeros((32, 40), np.uint16))
    write_image_tiff(tmp_path / "rgb.fused.tif", np.zeros((32, 40, 3), np.uint8))
    write_image_tiff(tmp_path / "two.fused.tif", np.zeros((32, 40, 2), np.uint16), colour=False)
    for name in ("grey", "rgb", "two"):
        assert get_reader(str(tmp_path / f"{name}.fused.tif")) is not None, name


def test_a_stack_whose_page_headers_were_cut_off_says_that_slices_are_lost(tmp_path):
    """tifffile writes an OME-TIFF's description last: cut inside its last slice, the file's chain of page headers
    points past its end, tifffile finds one page, and the stack of 5 opened as one 2-D image, silently."""
    path = tmp_path / "b.stack.ome.tif"
    tifffile.imwrite(path, np.full((5, 32, 40), 700, np.uint16), ome=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tiff:
        last = tiff.pages[4]
        cut = last.dataoffsets[0] + last.databytecounts[0] // 2
    os.truncate(path, cut)
    layers, said = opened(path)
    assert int(np.asarray(layers["b stack"].data).min()) == 700
    assert any(str(path) in message and "page headers point past its end" in message for message in said)
