"""What an MDA's outputs say of where and in which channel they were taken: each stack's OME planes carry the
stage's x/y (not only its z), and each channel's fused image carries the channel's name."""
from __future__ import annotations

import json

import ome_types
import pytest
import tifffile
import useq

from fusion.mda import SUMMARY_NAME, StreamingFusionHandler
from fusion.readers.tiff import pixel_size_um_of
from tests.test_mda_handler import slide_core

CHANNELS = ["DAPI", "FITC"]
POSITIONS = [{"x": 0.0, "y": 0.0, "z": 10.0, "name": "A1"}, {"x": 1000.0, "y": 500.0, "z": 10.0, "name": "A2"}]


@pytest.fixture(scope="module")
def mda_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mda")
    sequence = useq.MDASequence(stage_positions=POSITIONS, channels=CHANNELS, z_plan={"range": 4, "step": 2},
                                axis_order="tpcz")
    with slide_core(CHANNELS) as (core, _):
        core.mda.run(sequence, output=StreamingFusionHandler(folder, pixel_size_um=0.5))
    return folder


def test_mda_stack_planes_say_where_the_stage_was_in_x_and_y(mda_folder):
    """The planes recorded only PositionZ, though mda_fusion.json had each position's x and y: viewers that place
    planes by their stage position (Bio-Formats, napari readers of OME) put every position on top of the others."""
    summary = json.loads((mda_folder / SUMMARY_NAME).read_text())
    planned = {p["name"]: (p["x"], p["y"]) for p in summary["sequence"]["stage_positions"]}
    assert len(summary["stacks"]) == len(POSITIONS) * len(CHANNELS)
    for record in summary["stacks"]:
        with tifffile.TiffFile(record["outputs"]["stack"]) as tiff:
            pixels = ome_types.from_xml(tiff.ome_metadata, validate=True).images[0].pixels  # still valid OME
        x_um, y_um = planned[record["position"]]
        assert [(p.position_x, p.position_y) for p in pixels.planes] == [(x_um, y_um)] * 3, record["name"]
        assert {p.position_x_unit.value for p in pixels.planes} == {p.position_y_unit.value for p in pixels.planes} \
            == {"µm"}  # (OME's default unit is "reference frame")
        assert [p.position_z for p in pixels.planes] == record["z_um"]


def test_mda_fused_image_of_a_channel_is_labelled_with_its_name(mda_folder):
    """A channel's fused image was a grey ImageJ file with no label: Fiji showed p1-A2_c1-FITC.fused.tif as an
    image of nothing in particular, though its stack's OME names the channel. It carries the name as ImageJ's
    Label (what a refused stack's channels carry), and stays one grey image at its pixel size."""
    for position, channel in ((p["name"], c) for p in POSITIONS for c in CHANNELS):
        path = mda_folder / f"p{[p['name'] for p in POSITIONS].index(position)}-{position}_" \
                            f"c{CHANNELS.index(channel)}-{channel}.fused.tif"
        with tifffile.TiffFile(path) as tiff:
            labels = tiff.imagej_metadata.get("Labels")
            assert (labels if isinstance(labels, list) else [labels]) == [channel], path.name
            assert tiff.series[0].axes == "YX" and pixel_size_um_of(tiff.pages.first) == pytest.approx(0.5)
        with tifffile.TiffFile(path.with_name(path.name.replace(".fused.", ".stack.ome."))) as tiff:
            stack = tiff.asarray()
        assert tifffile.imread(path).shape == stack.shape[1:]
