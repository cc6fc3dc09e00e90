"""Separate channels keep the names, colours and display ranges that their stack gave them (ImageJ hyperstacks,
OME-TIFF), from the stack to the fused image: Fiji showed a DAPI channel in red, whatever the stack said."""
from __future__ import annotations

import numpy as np
import tifffile

from fusion.channel_look import ChannelLook, lut_towards
from fusion.outputs import write_image_tiff
from fusion.readers import open_stack

RNG = np.random.default_rng(0)
ZCYX = RNG.integers(0, 4096, (4, 3, 24, 32)).astype(np.uint16)
NAMES = ("DAPI", "FITC", "Cy5")
LUTS = (lut_towards(0, 0, 255), lut_towards(0, 255, 0), lut_towards(255, 0, 255))


def test_an_imagej_hyperstack_gives_its_channels_names_colours_and_ranges(tmp_path):
    path = tmp_path / "cells.tif"
    labels = [NAMES[c] for z in range(4) for c in range(3)]  # ImageJ labels every page; channels vary fastest
    tifffile.imwrite(path, ZCYX, imagej=True, metadata={"axes": "ZCYX", "Labels": labels, "LUTs": list(LUTS),
                                                        "Ranges": (0, 4000, 10, 3000, 0, 2000)})
    with open_stack(path) as stack:
        look = stack.channel_look()
    assert look.names == NAMES
    assert [tuple(lut[:, -1]) for lut in look.luts] == [(0, 0, 255), (0, 255, 0), (255, 0, 255)]
    assert look.ranges == ((0, 4000), (10, 3000), (0, 2000))


def test_labels_that_do_not_name_each_channel_once_are_not_taken_for_names(tmp_path):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, ZCYX, imagej=True, metadata={"axes": "ZCYX", "Labels": ["z0"] * 12, "LUTs": list(LUTS)})
    with open_stack(path) as stack:
        look = stack.channel_look()
    assert look.names is None and len(look.luts) == 3


def test_ome_channels_give_their_names_and_colours(tmp_path):
    path = tmp_path / "cells.ome.tif"
    colours = [0x0000FFFF, 0x00FF00FF, -16711681]  # OME's signed RGBA: blue, green, magenta (0xFF00FFFF)
    tifffile.imwrite(path, ZCYX, ome=True, metadata={"axes": "ZCYX", "Channel": {"Name": list(NAMES),
                                                                                 "Color": colours}})
    with open_stack(path) as stack:
        look = stack.channel_look()
    assert look.names == NAMES
    assert look.to_json()["colours"] == ["#0000ff", "#00ff00", "#ff00ff"]


def test_a_plain_stack_and_a_colour_picture_have_no_channel_look(tmp_path):
    tifffile.imwrite(tmp_path / "grey.tif", ZCYX[:, 0], photometric="minisblack", metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "rgb.tif", RNG.integers(0, 255, (4, 24, 32, 3)).astype(np.uint8), photometric="rgb")
    for name in ("grey.tif", "rgb.tif"):
        with open_stack(tmp_path / name) as stack:
            assert stack.channel_look() is None


def test_the_fused_image_keeps_the_look_for_fiji(tmp_path):
    look = ChannelLook(NAMES, LUTS, ((0, 4000), (10, 3000), (0, 2000)))
    write_image_tiff(tmp_path / "cells.fused.tif", ZCYX[0].transpose(1, 2, 0), colour=False, channel_look=look)
    with tifffile.TiffFile(tmp_path / "cells.fused.tif") as tiff:
        metadata = tiff.imagej_metadata
        assert tiff.series[0].axes == "CYX" and metadata["mode"] == "composite"
    assert metadata["Labels"] == list(NAMES) and metadata["Ranges"] == (0, 4000, 10, 3000, 0, 2000)
    assert [tuple(lut[:, -1]) for lut in metadata["LUTs"]] == [(0, 0, 255), (0, 255, 0), (255, 0, 255)]
    with open_stack(tmp_path / "cells.fused.tif") as fused:  # refused again, it keeps the look
        assert fused.channel_look().names == NAMES


def test_a_refused_hyperstack_keeps_its_channels_look_and_the_report_names_them(tmp_path):
    from fusion.refuse import refuse_stack

    path = tmp_path / "cells.tif"
    labels = [NAMES[c] for z in range(4) for c in range(3)]
    tifffile.imwrite(path, ZCYX, imagej=True, metadata={"axes": "ZCYX", "Labels": labels, "LUTs": list(LUTS)})
    report = refuse_stack(path, tmp_path / "out", progress=False)
    assert report.channels == {"names": list(NAMES), "colours": ["#0000ff", "#00ff00", "#ff00ff"]}
    with tifffile.TiffFile(report.outputs["fused"]) as tiff:
        assert tiff.imagej_metadata["Labels"] == list(NAMES)
        assert [tuple(lut[:, -1]) for lut in tiff.imagej_metadata["LUTs"]] == [(0, 0, 255), (0, 255, 0), (255, 0, 255)]
