"""The pymmcore-plus MDA handler: on the real MMCore with the demo adapters, and on UniMMCore
with a slide that renders ground truth."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import tifffile
import useq

from fusion.mda import SUMMARY_NAME, StreamingFusionHandler
from fusion.metrics import psnr
from tests.devices_fixtures import small_demo_core

CHANNELS = ["DAPI", "FITC", "Cy5"]


@pytest.fixture(scope="module")
def demo():
    return small_demo_core()


@contextlib.contextmanager
def slide_core(channels=CHANNELS, shape=(96, 128), depth_um=20.0):
    """UniMMCore with the slide simulator: Z and XY stages, a channel wheel, a camera with ground truth."""
    from devices.micromanager import open_mmcore
    from simulators.micromanager_devices import SimulatedZStage
    from simulators.micromanager_slide import FilterWheel, SimulatedXYStage, SlideCamera

    z, xy, wheel = SimulatedZStage(), SimulatedXYStage(), FilterWheel(channels)
    camera = SlideCamera(shape, depth_um, z.focus_um, xy.get_position_um, wheel.get_state)
    core = open_mmcore(python_devices={"SimZ": z, "SimXY": xy, "Wheel": wheel, "SimCamera": camera})
    core.setFocusDevice("SimZ")
    core.setXYStageDevice("SimXY")
    core.setCameraDevice("SimCamera")
    for channel in channels:
        core.defineConfig("Channel", channel, "Wheel", "Label", channel)
    core.setChannelGroup("Channel")
    core.setAutoShutter(False)  # no shutter on this rig
    camera.set_exposure(1.0)
    yield core, camera


def demo_sequence(axis_order="tpcz"):
    return useq.MDASequence(stage_positions=[(0, 0, 10), (100, 100, 12)], channels=["DAPI", "FITC"],
                            z_plan={"range": 4, "step": 1}, axis_order=axis_order)


@pytest.mark.parametrize("axis_order", ["tpcz", "tpzc", "tzpc"])
def test_demo_mda_gives_one_fused_image_per_position_and_channel(demo, tmp_path, axis_order):
    handler = StreamingFusionHandler(tmp_path)
    demo.mda.run(demo_sequence(axis_order), output=handler)
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert summary["failed"] == [] and summary["missing_slices"] == {} and summary["frames"] == 20
    names = sorted(r["name"] for r in summary["stacks"])
    assert names == ["p0_c0-DAPI", "p0_c1-FITC", "p1_c0-DAPI", "p1_c1-FITC"]
    for record in summary["stacks"]:
        fused = tifffile.imread(tmp_path / f"{record['name']}.fused.tif")
        depth = tifffile.imread(tmp_path / f"{record['name']}.depth.tif")
        assert fused.shape == (96, 128) and fused.dtype == np.uint16
        # Depth in µm from the events' z: the position's z plus the plan's offsets.
        centre = 10 if record["indices"]["p"] == 0 else 12
        assert record["z_um"] == [centre - 2.0, centre - 1.0, centre, centre + 1.0, centre + 2.0]
        # Where the frame has texture to tell depth by (NaN elsewhere), within the stack's z range.
        known = depth[np.isfinite(depth)]
        assert record["depth_unit"] == "um"
        assert known.size == 0 or (known.min() >= min(record["z_um"]) and known.max() <= max(record["z_um"]))
        with tifffile.TiffFile(tmp_path / f"{record['name']}.stack.ome.tif") as tiff:
            assert tiff.series[0].shape == (5, 96, 128)


def test_beside_pymmcore_plus_own_writer(demo, tmp_path):
    handler = StreamingFusionHandler(tmp_path / "fused", keep_stacks=False)
    demo.mda.run(demo_sequence(), output=[tmp_path / "raw.ome.tiff", handler])
    assert list((tmp_path / "raw.ome.tiff").parent.glob("raw*"))  # pymmcore-plus wrote its file(s)
    assert len(list((tmp_path / "fused").glob("*.fused.tif"))) == 4
    assert not list((tmp_path / "fused").glob("*.stack.ome.tif"))  # fused, so deleted as asked


def test_fusion_reading_every_slice_back_from_disk_gives_the_same_result(demo, tmp_path):
    """max_slices_in_memory=0: the engine never holds a frame it was handed; memory stays O(H x W)."""
    sequence = useq.MDASequence(channels=["DAPI"], z_plan={"absolute": [0, 1, 2, 3, 4, 5]})
    from_disk = StreamingFusionHandler(tmp_path / "b", max_slices_in_memory=0)
    demo.mda.run(sequence, output=from_disk)
    assert from_disk.summary["stacks"][0]["slices_read_back_by_fusion"] == 6
    name = from_disk.summary["stacks"][0]["name"]
    # The demo camera's image changes from run to run: compare with a refusion of the stack it wrote.
    from fusion.refuse import refuse_stack

    refused = refuse_stack(tmp_path / "b" / f"{name}.stack.ome.tif", tmp_path / "refused", progress=False)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b" / f"{name}.fused.tif"),
                                  tifffile.imread(refused.outputs["fused"]))


def test_fused_beats_every_slice_on_the_slide(tmp_path):
    sequence = useq.MDASequence(stage_positions=[(0, 0, 0), (1000, 0, 0)], channels=CHANNELS[:2],
                                z_plan={"bottom": -2, "top": 22, "step": 2})
    with slide_core(CHANNELS[:2]) as (core, camera):
        handler = StreamingFusionHandler(tmp_path)
        core.mda.run(sequence, output=handler)
    assert len(handler.summary["stacks"]) == 4 and handler.summary["failed"] == []
    for record in handler.summary["stacks"]:
        truth = camera.truth((record["indices"]["p"], 0), record["indices"]["c"])
        fused = tifffile.imread(record["outputs"]["fused"])
        slices = tifffile.imread(record["outputs"]["stack"])
        best_slice_db = max(psnr(s, truth, 255) for s in slices)
        assert psnr(fused, truth, 255) > best_slice_db + 3, record["name"]


def test_fused_beats_every_slice_with_the_specimen_camera(tmp_path):
    """The simulators' single-specimen UniMMCore rig (SimZ + SpecimenCamera), z only."""
    from tests.devices_fixtures import unicore_rig

    with unicore_rig(shape=(96, 128)) as (core, _, _, _, camera):
        core.setAutoShutter(False)
        handler = StreamingFusionHandler(tmp_path)
        core.mda.run(useq.MDASequence(z_plan={"bottom": -2, "top": 22, "step": 2}), output=handler)
    record, = handler.summary["stacks"]
    assert record["name"] == "stack" and record["slices"] == 13
    truth = camera.camera_noise.ideal(camera.renderer.specimen.texture)
    slices = tifffile.imread(record["outputs"]["stack"])
    fused = tifffile.imread(record["outputs"]["fused"])
    assert psnr(fused, truth, 255) > max(psnr(s, truth, 255) for s in slices) + 3


def test_a_frame_that_does_not_fit_its_stack_is_recorded(tmp_path):
    handler = StreamingFusionHandler(tmp_path)
    sequence = useq.MDASequence(z_plan={"absolute": [0, 1, 2]})
    handler.sequenceStarted(sequence, {})
    events = list(sequence)
    handler.frameReady(np.zeros((8, 8), np.uint16), events[0], {})
    handler.frameReady(np.zeros((8, 9), np.uint16), events[1], {})
    handler.frameReady(np.ones((8, 8), np.uint16), events[2], {})
    handler.sequenceFinished(sequence)
    lost, = handler.summary["frames_not_stored"]
    assert lost["z_um"] == 1.0
    assert "slice 1 (counting from 0) is (8, 9) uint16, the stack is (8, 8) uint16" in lost["error"]
    assert handler.summary["stacks"][0]["slices"] == 2 and handler.summary["failed"] == []


def test_channels_follow_the_decision_channel(tmp_path):
    sequence = useq.MDASequence(channels=CHANNELS, z_plan={"bottom": -2, "top": 22, "step": 3}, axis_order="tpzc")
    with slide_core() as (core, camera):
        handler = StreamingFusionHandler(tmp_path, decision_channel="FITC")
        core.mda.run(sequence, output=handler)
    records = {r["channel"]: r for r in handler.summary["stacks"]}
    assert records["FITC"]["decision_from"] is None
    assert records["DAPI"]["decision_from"] == records["Cy5"]["decision_from"] == records["FITC"]["name"]
    depths = [tifffile.imread(records[c]["outputs"]["depth"]) for c in CHANNELS]
    np.testing.assert_array_equal(depths[0], depths[1])
    np.testing.assert_array_equal(depths[0], depths[2])
    for channel in CHANNELS:  # the followers are in focus too
        truth = camera.truth((0, 0), CHANNELS.index(channel))
        slices = tifffile.imread(records[channel]["outputs"]["stack"])
        fused = tifffile.imread(records[channel]["outputs"]["fused"])
        assert psnr(fused, truth, 255) > max(psnr(s, truth, 255) for s in slices), channel


def test_cancelled_mda_fuses_what_arrived_and_records_the_missing_slices(demo, tmp_path):
    handler = StreamingFusionHandler(tmp_path)
    frames = []

    def cancel_after_seven(image, event, meta):
        frames.append(event)
        if len(frames) == 7:
            demo.mda.cancel()

    demo.mda.events.frameReady.connect(cancel_after_seven)
    try:
        demo.mda.run(demo_sequence(), output=handler)
    finally:
        demo.mda.events.frameReady.disconnect(cancel_after_seven)
    summary = handler.summary
    assert summary["frames"] == 7
    assert summary["missing_slices"] == {"p0_c1-FITC": 3}
    partial = {r["name"]: r for r in summary["stacks"]}["p0_c1-FITC"]
    assert partial["slices"] == 2 and "fused" in partial["outputs"]


def test_unknown_setting_and_decision_channel_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown fusion setting 'windw_px'; known: .*window_px"):
        StreamingFusionHandler(tmp_path, windw_px=31)
    with pytest.raises(ValueError, match="unknown focus measure 'sharp'"):
        StreamingFusionHandler(tmp_path, method="sharp")
    handler = StreamingFusionHandler(tmp_path, decision_channel="GFP")
    with pytest.raises(ValueError, match=r"decision_channel 'GFP' is not among the sequence's channels \(DAPI, FITC\)"):
        handler.check(demo_sequence())


def test_unknown_decision_channel_during_a_run_fuses_each_stack_on_its_own(demo, tmp_path):
    handler = StreamingFusionHandler(tmp_path, decision_channel="GFP")
    with pytest.warns(UserWarning, match="decision_channel 'GFP'"):
        demo.mda.run(demo_sequence(), output=handler)
    assert "fused on its own" in handler.summary["error"]
    assert len(list(tmp_path.glob("*.fused.tif"))) == 4


@pytest.mark.parametrize("method", ["ums", "sf"])
def test_a_stack_that_follows_another_channels_decision_records_that_ones_device(demo, tmp_path, method):
    """A follower's record said device_used null while the channel whose decision it took said "cpu"."""
    handler = StreamingFusionHandler(tmp_path, decision_channel="FITC", method=method, device="cpu")
    demo.mda.run(demo_sequence(), output=handler)
    records = json.loads((tmp_path / SUMMARY_NAME).read_text())["stacks"]
    followers = [r for r in records if r["decision_from"] is not None]
    assert len(followers) == 2 and all(r["channel"] == "DAPI" for r in followers)
    assert [r["device_used"] for r in records] == [None if method == "sf" else "cpu"] * 4


def test_a_stack_whose_description_cannot_be_written_still_gets_its_fused_images(tmp_path, monkeypatch):
    """A MOCK of a full disk at the stack's OME description: the fused and depth images still go out (they were
    lost with the stack's name), and the stack's record says what failed."""
    from fusion.stack_buffer import StackBuffer, StackWriteError

    def no_room(self, profile, unit):
        self.finalized = True
        raise StackWriteError(f"{self.path}: no room on the disk for its OME description")

    monkeypatch.setattr(StackBuffer, "finalize", no_room)
    with slide_core(CHANNELS[:1]) as (core, _):
        handler = StreamingFusionHandler(tmp_path)
        core.mda.run(useq.MDASequence(channels=CHANNELS[:1], z_plan={"absolute": [0, 5, 10]}), output=handler)
    record, = handler.summary["stacks"]
    assert record["name"] != "?" and tifffile.imread(record["outputs"]["fused"]).ndim >= 2
    assert "no room on the disk for its OME description" in record["error"]


@pytest.mark.parametrize("name, index", [
    ("p0_t3_cam1", 1), ("cam0", 0), ("p0-A1_c1-FITC", None),
    ("p0-dish_cam7_t0_cam1", 1),  # (a position named "dish cam7": the cam axis comes after it)
])
def test_a_stack_name_says_which_camera_took_it(name, index):
    """A stack that never started has no record naming its camera: its name's cam index does (a multi-camera's
    per-camera count of planned stacks)."""
    from fusion.mda_stacks import camera_index

    assert camera_index(name) == index
