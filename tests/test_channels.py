"""Separate channels (a fluorescence hyperstack) are fused into separate channels, and colour stays colour:
read back as Fiji opens the fused image (``tests.fiji``), as tifffile and as the napari plugin's reader does."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fusion.readers import open_stack
from fusion.outputs import COLOUR_SAMPLES_KEY
from fusion.readers.tiff import fused_tiff_is_colour, read_image_tiff
from fusion.refuse import refuse_stack
from napari_ums_fusion.layers import file_layers
from tests.conftest import rendered
from tests.fiji import ImageJCannotOpen, imagej_calibration, imagej_image_kind

SHAPE = (64, 80)


def fluorescence(dtype) -> np.ndarray:
    """(Z, C, Y, X): three channels that differ in brightness, so that a mix-up of channels shows."""
    sweep = np.stack(rendered(color=False, bit_depth=8 * np.dtype(dtype).itemsize, shape=SHAPE).slices)
    top = np.iinfo(dtype).max
    return np.stack([sweep, sweep // 4, top - sweep], axis=1).astype(dtype)


def write_imagej_hyperstack(path, data):
    """As Fiji saves a 3-channel z-stack (Image > Hyperstacks, File > Save As > Tiff)."""
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "mode": "composite", "spacing": 3.0, "unit": "um"})


def write_ome_planes(path, data):
    """OME-TIFF with SizeC=3, one plane per channel (Micro-Manager, Bio-Formats' exporter)."""
    tifffile.imwrite(path, data, ome=True, photometric="minisblack",
                     metadata={"axes": "ZCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 3.0})


@pytest.mark.parametrize("write", [write_imagej_hyperstack, write_ome_planes], ids=["imagej", "ome"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_three_fluorescence_channels_are_fused_into_three_channels_not_an_rgb_picture(tmp_path, write, dtype):
    data = fluorescence(dtype)
    write(tmp_path / "cells.tif", data)
    report = refuse_stack(tmp_path / "cells.tif", tmp_path / "out", progress=False)
    fused_path = Path(report.outputs["fused"])
    assert imagej_image_kind(fused_path) == ("composite", 3)  # Fiji: a composite of 3 channels
    with tifffile.TiffFile(fused_path) as tiff:
        assert tiff.series[0].axes == "CYX" and tiff.pages.first.photometric == tifffile.PHOTOMETRIC.MINISBLACK
        fused = tiff.asarray()
    assert fused.shape == (3, *SHAPE) and fused.dtype == dtype
    for channel in range(3):  # each channel from its own: the brightness order of the source
        assert fused[channel].mean() == pytest.approx(data[:, channel].mean(), rel=0.1)
    assert np.array_equal(read_image_tiff(fused_path), np.moveaxis(fused, 0, -1))  # numpy order, as the live view
    layers = file_layers(fused_path)  # the napari plugin: one layer per channel, at the pixel size
    assert len(layers) == 1
    image, attributes, _ = layers[0]
    assert not attributes.get("rgb") and attributes["name"] == ["cells fused c0", "cells fused c1", "cells fused c2"]
    assert image.shape[attributes["channel_axis"]] == 3 and attributes["scale"] == pytest.approx((0.5, 0.5))
    with open_stack(tmp_path / "cells.tif") as stack:
        assert not stack.channels_are_colour


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_an_rgb_stack_stays_one_rgb_picture(tmp_path, dtype):
    sweep = rendered(color=True, bit_depth=8 * np.dtype(dtype).itemsize, shape=SHAPE)
    tifffile.imwrite(tmp_path / "photo.tif", np.stack(sweep.slices), photometric="rgb", metadata={"axes": "ZYXS"})
    report = refuse_stack(tmp_path / "photo.tif", tmp_path / "out", progress=False)
    with tifffile.TiffFile(report.outputs["fused"]) as tiff:
        assert tiff.series[0].axes == "YXS" and tiff.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
    # Fiji: 8-bit RGB is one picture; 16-bit RGB it always opens as a composite of its channels (RGB48).
    assert imagej_image_kind(report.outputs["fused"]) == (("RGB", 1) if dtype == np.uint8 else ("composite", 3))
    (image, attributes, _), = file_layers(Path(report.outputs["fused"]))
    assert attributes["rgb"] and "channel_axis" not in attributes and image.shape == (*SHAPE, 3)
    with open_stack(tmp_path / "photo.tif") as stack:
        assert stack.channels_are_colour


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_interleaved_samples_that_are_not_rgb_are_channels(tmp_path, dtype):
    """Three samples per pixel, photometric minisblack (tifffile's YXC): channels, 8-bit ones too."""
    data = np.moveaxis(fluorescence(dtype), 1, -1)  # (Z, Y, X, C)
    tifffile.imwrite(tmp_path / "samples.tif", data, photometric="minisblack", planarconfig="contig",
                     metadata={"axes": "ZYXC"})
    with open_stack(tmp_path / "samples.tif") as stack:
        assert stack.read_slice(0).shape == (*SHAPE, 3) and not stack.channels_are_colour


def without_photometric_tag(path: Path) -> None:
    """As some writers leave a TIFF: no PhotometricInterpretation (its entries renamed to Threshholding, unused)."""
    with tifffile.TiffFile(path) as tiff:
        offsets = [page.tags[262].offset for page in tiff.pages]
    with open(path, "r+b") as file:
        for offset in offsets:
            file.seek(offset)
            file.write(struct.pack("<H", 263))


@pytest.mark.parametrize("channels", [3, 4])
def test_8_bit_samples_a_page_calls_minisblack_are_fused_as_channels_not_an_rgba_picture(tmp_path, channels):
    """4 fluorescence channels as 8-bit samples of one page (tifffile's ZYXC, photometric minisblack) were taken for
    RGBA: the fused image was an RGB TIFF (napari: the 4th channel as transparency; Fiji: ARGB)."""
    data = np.concatenate([fluorescence(np.uint8)] * 2, axis=1)[:, :channels]  # (Z, C, Y, X)
    tifffile.imwrite(tmp_path / "cells.tif", np.moveaxis(data, 1, -1), photometric="minisblack",
                     planarconfig="contig")
    with open_stack(tmp_path / "cells.tif") as stack:
        assert stack.read_slice(0).shape == (*SHAPE, channels) and not stack.channels_are_colour
    report = refuse_stack(tmp_path / "cells.tif", tmp_path / "out", progress=False)
    assert imagej_image_kind(report.outputs["fused"]) == ("composite", channels)
    (image, attributes, _), = file_layers(Path(report.outputs["fused"]))
    assert not attributes.get("rgb") and image.shape[attributes["channel_axis"]] == channels


def test_8_bit_samples_of_a_page_that_does_not_say_what_they_are_are_colour(tmp_path):
    """Without a PhotometricInterpretation tag, 3 8-bit samples are taken for RGB, as Fiji takes them."""
    sweep = rendered(color=True, shape=SHAPE)
    tifffile.imwrite(tmp_path / "photo.tif", np.stack(sweep.slices), photometric="rgb")
    without_photometric_tag(tmp_path / "photo.tif")
    with open_stack(tmp_path / "photo.tif") as stack:
        assert stack.read_slice(0).shape == (*SHAPE, 3) and stack.channels_are_colour


def test_napari_opens_a_stack_of_channel_samples_as_channels_as_the_fusion_reads_it(tmp_path):
    """The napari plugin judged colour by the count of samples, the reader by the page: 16-bit minisblack samples
    were fused as 3 channels and shown as one RGB picture."""
    data = np.moveaxis(fluorescence(np.uint16), 1, -1)  # (Z, Y, X, C)
    tifffile.imwrite(tmp_path / "cells.stack.ome.tif", data, photometric="minisblack", planarconfig="contig",
                     metadata={"axes": "ZYXC"})  # (OME-TIFF, as its name says: axes ZYXS)
    (image, attributes, _), = file_layers(tmp_path / "cells.stack.ome.tif")
    assert not attributes.get("rgb") and image.shape[attributes["channel_axis"]] == 3
    assert attributes["name"] == ["cells stack c0", "cells stack c1", "cells stack c2"]


def test_float_colour_is_fused_into_a_composite_that_fiji_opens(tmp_path):
    """A float32 RGB stack was fused into a 32-bit RGB TIFF, which Fiji refuses: a composite of its 3 channels."""
    data = np.stack(rendered(color=True, shape=SHAPE).slices).astype(np.float32) / 255
    tifffile.imwrite(tmp_path / "photo.tif", data, photometric="rgb", metadata={"axes": "ZYXS"})
    with pytest.raises(ImageJCannotOpen, match=r"ImageJ can only open 8 and 16 bit/channel images \(32\)"):
        imagej_image_kind(tmp_path / "photo.tif")  # (as Fiji's File > Open says of it)
    with open_stack(tmp_path / "photo.tif") as stack:
        assert stack.channels_are_colour
    report = refuse_stack(tmp_path / "photo.tif", tmp_path / "out", progress=False)
    fused_path = Path(report.outputs["fused"])
    assert imagej_image_kind(fused_path) == ("composite", 3) and imagej_calibration(fused_path) == (1.0, "pixel")
    fused = read_image_tiff(fused_path)
    assert fused.dtype == np.float32 and fused.shape == (*SHAPE, 3)
    assert fused.mean(axis=(0, 1)) == pytest.approx(data.mean(axis=(0, 1, 2)), rel=0.1)  # R, G, B in order


def float_colour_stack(path: Path) -> np.ndarray:
    """A float32 RGB z-stack (Z, Y, X, 3) in [0, 1], as a camera's frames or a processed photo series hold it."""
    data = np.stack(rendered(color=True, shape=SHAPE).slices).astype(np.float32) / 255
    tifffile.imwrite(path, data, photometric="rgb", metadata={"axes": "ZYXS"})
    return data


def test_a_float_colour_fused_image_is_read_back_as_colour(tmp_path):
    """Float colour is written as a composite of its channels (Fiji opens no 32-bit RGB TIFF), which was read back
    as 3 separate channels: refused again, each weighted evenly instead of by luminance; napari showed 3 layers."""
    float_colour_stack(tmp_path / "photo.tif")
    fused_path = Path(refuse_stack(tmp_path / "photo.tif", tmp_path / "out", progress=False).outputs["fused"])
    assert imagej_image_kind(fused_path) == ("composite", 3)  # still what Fiji opens
    assert fused_tiff_is_colour(fused_path)  # (the live view of --refuse --view)
    with open_stack(fused_path) as stack:
        assert stack.channels_are_colour
    again = refuse_stack(fused_path, tmp_path / "again", progress=False)
    assert again.channel_weights is None  # fused as colour: by luminance
    assert fused_tiff_is_colour(Path(again.outputs["fused"]))
    (image, attributes, _), = file_layers(fused_path)  # the napari plugin: one RGB picture
    assert attributes["rgb"] and "channel_axis" not in attributes and image.shape == (*SHAPE, 3)


def test_a_stack_of_float_colour_composites_is_fused_as_colour(tmp_path):
    """Slices as the fused image keeps float colour (channels in pages of their own, described as colour samples)."""
    data = np.moveaxis(float_colour_stack(tmp_path / "photo.tif"), -1, 1)  # (Z, C, Y, X)
    tifffile.imwrite(tmp_path / "slices.tif", data, imagej=True,
                     metadata={"axes": "ZCYX", "mode": "composite", COLOUR_SAMPLES_KEY: "RGB"})
    with open_stack(tmp_path / "slices.tif") as stack:
        assert stack.read_slice(0).shape == (*SHAPE, 3) and stack.channels_are_colour
    report = refuse_stack(tmp_path / "slices.tif", tmp_path / "out", progress=False)
    assert report.channel_weights is None and fused_tiff_is_colour(Path(report.outputs["fused"]))


def test_float_fluorescence_channels_stay_separate_channels(tmp_path):
    """A composite that does not say its channels are colour (Fiji's, and ours of separate channels) is channels."""
    write_imagej_hyperstack(tmp_path / "cells.tif", fluorescence(np.uint16).astype(np.float32) / 65535)
    with open_stack(tmp_path / "cells.tif") as stack:
        assert not stack.channels_are_colour
    report = refuse_stack(tmp_path / "cells.tif", tmp_path / "out", progress=False)
    fused_path = Path(report.outputs["fused"])
    assert report.channel_weights is not None and not fused_tiff_is_colour(fused_path)
    with open_stack(fused_path) as stack:
        assert not stack.channels_are_colour
    (_, attributes, _), = file_layers(fused_path)
    assert not attributes.get("rgb") and attributes["channel_axis"] == 0
