"""The MDA handler across runs and sequence shapes: one handler (or napari's "Follow MDA") running
several MDAs into one folder, MDAs without a z-plan, and where its warnings point."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import useq

from fusion.mda import SUMMARY_NAME, StreamingFusionHandler
from fusion.stack_stream import ONE_SLICE_NOTE
from tests.devices_fixtures import small_demo_core


@pytest.fixture(scope="module")
def demo():
    return small_demo_core()


def pages(path) -> int:
    with tifffile.TiffFile(path) as tiff:
        return len(tiff.pages)


def summary_of(folder) -> dict:
    return json.loads((folder / SUMMARY_NAME).read_text())


def snapshot(folder) -> dict[str, tuple[int, int]]:
    """Every file directly in ``folder``: (size, mtime in ns)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def sequence_folder_pattern(sequence) -> str:
    return rf"mda-\d{{8}}-\d{{6}}-{str(sequence.uid)[:8]}(-\d+)?"


def run_by_hand(handler, sequence, shape=(8, 8)):
    """The handler protocol called directly, as pymmcore-plus calls it, with a frame per event."""
    handler.sequenceStarted(sequence, {})
    for k, event in enumerate(sequence):
        handler.frameReady(np.full(shape, k, np.uint16), event, {})
    handler.sequenceFinished(sequence)


# -- several MDAs, one folder --

def test_a_second_and_third_mda_through_one_handler_go_to_folders_of_their_own(demo, tmp_path):
    """The second MDA through one handler overwrote the first's stack (11 pages became 3), fused image,
    depth map and mda_fusion.json."""
    handler = StreamingFusionHandler(tmp_path, method="sf")
    first = useq.MDASequence(z_plan={"range": 10, "step": 1})
    demo.mda.run(first, output=handler)
    assert handler.out_dir == tmp_path and pages(tmp_path / "stack.stack.ome.tif") == 11
    before = snapshot(tmp_path)
    assert set(before) == {"stack.stack.ome.tif", "stack.fused.tif", "stack.depth.tif", SUMMARY_NAME}

    second = useq.MDASequence(z_plan={"range": 4, "step": 2})
    demo.mda.run(second, output=handler)
    demo.mda.run(second, output=handler)  # the same sequence again: the same uid, a folder of its own still
    assert snapshot(tmp_path) == before   # the first MDA's files, untouched
    summary = summary_of(tmp_path)
    assert summary["sequence_uid"] == str(first.uid) and summary["finished"] is True
    assert [r["slices"] for r in summary["stacks"]] == [11]

    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2 and handler.out_dir == folders[-1] and handler.folder == tmp_path
    for folder in folders:
        assert re.fullmatch(sequence_folder_pattern(second), folder.name), folder.name
        assert pages(folder / "stack.stack.ome.tif") == 3
        assert (folder / "stack.fused.tif").is_file() and (folder / "stack.depth.tif").is_file()
        summary = summary_of(folder)
        assert summary["sequence_uid"] == str(second.uid) and summary["out_dir"] == str(folder)
        record, = summary["stacks"]
        assert all(Path(path).parent == folder for path in record["outputs"].values())


def test_follow_mda_keeps_every_mda_the_core_runs(demo, tmp_path):
    """napari's "Follow MDA" sends every MDA the core runs into one folder: the second replaced the first."""
    from napari_ums_fusion.mda_follow import MDAFollower

    follower = MDAFollower(demo, tmp_path, measure="sf")
    try:
        first = useq.MDASequence(channels=["DAPI"], stage_positions=[(0, 0, 0)], z_plan={"range": 10, "step": 1})
        demo.mda.run(first)
        assert follower.handler.finished.wait(60)
        second = useq.MDASequence(channels=["DAPI"], stage_positions=[(0, 0, 100)], z_plan={"range": 4, "step": 2})
        demo.mda.run(second)
        assert follower.handler.finished.wait(60)
    finally:
        follower.stop()
    assert pages(tmp_path / "p0_c0-DAPI.stack.ome.tif") == 11
    assert summary_of(tmp_path)["sequence_uid"] == str(first.uid)
    folder, = (p for p in tmp_path.iterdir() if p.is_dir())
    assert re.fullmatch(sequence_folder_pattern(second), folder.name)
    assert pages(folder / "p0_c0-DAPI.stack.ome.tif") == 3
    assert summary_of(folder)["stacks"][0]["z_um"] == [98.0, 100.0, 102.0]


def test_follow_mda_stops_an_mda_whose_z_plan_is_finer_than_the_depth_map_holds_before_its_first_frame(demo,
                                                                                                        tmp_path):
    """Steps of 1e-5 µm around 250 µm (the demo stage goes there exactly): napari's "Follow MDA" let the MDA acquire
    all its frames, and then the stack's fusion failed. It is stopped as it starts, before any frame is taken, and
    the handler says the step to give the z_plan; the next MDA is followed as usual."""
    from napari_ums_fusion.mda_follow import MDAFollower

    frames = []

    def frame_taken(*args):
        frames.append(1)

    follower = MDAFollower(demo, tmp_path, measure="sf")
    demo.mda.events.frameReady.connect(frame_taken)
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            demo.mda.run(useq.MDASequence(stage_positions=[(0, 0, 250)],
                                          z_plan={"range": 0.00008, "step": 0.00001}))
        assert follower.handler.finished.wait(60)
        refused = follower.handler.refused
        assert frames == [] and summary_of(tmp_path)["frames"] == 0
        assert refused is not None and "give it a step of at least 1.53e-05 µm" in refused
        assert "; the MDA was stopped: nothing of it is fused" in refused
        assert summary_of(tmp_path)["error"] == refused and not list(tmp_path.glob("*.tif"))
        demo.mda.run(useq.MDASequence(stage_positions=[(0, 0, 250)], z_plan={"range": 4, "step": 2}))
        assert follower.handler.finished.wait(60)
    finally:
        demo.mda.events.frameReady.disconnect(frame_taken)
        follower.stop()
    assert follower.handler.refused is None and len(frames) == 3
    assert len(list(follower.handler.out_dir.glob("*.fused.tif"))) == 1


def test_follow_mda_says_each_mdas_exact_bit_depth(demo, tmp_path):
    """Followed MDAs said the bits of the pixel format in the sequence's metadata, which rounds up: 11 bits said
    12. The follower gives the handler its core, read as each MDA starts (the second at 10 bits)."""
    from napari_ums_fusion.mda_follow import MDAFollower
    from tests.test_ome_metadata import validated_ome

    follower = MDAFollower(demo, tmp_path, measure="sf")
    try:
        for bits in (11, 10):
            demo.setProperty("Camera", "BitDepth", bits)
            demo.mda.run(useq.MDASequence(z_plan={"range": 4, "step": 2}))
            assert follower.handler.finished.wait(60)
    finally:
        follower.stop()
    stacks = sorted(tmp_path.rglob("*.stack.ome.tif"), key=lambda path: len(path.parts))
    assert [validated_ome(path).images[0].pixels.significant_bits for path in stacks] == [11, 10]


def test_follow_mda_says_each_cameras_exact_bit_depth_in_a_multi_camera_mda(tmp_path):
    """Followed multi-camera MDAs said the bits of each camera's pixel format (11 bits said 12): the follower gave
    the handler the core only, whose current camera is the Multi Camera. It reads each physical camera's depth as the
    session does (Micro-Manager's Multi Camera over the demo config's camera at 11 bits and a second at 10)."""
    from devices.micromanager import open_mmcore
    from napari_ums_fusion.mda_follow import MDAFollower
    from tests.test_mda_sessions import multi_camera_config, multi_camera_properties
    from tests.test_ome_metadata import validated_ome

    core = open_mmcore(str(multi_camera_config(tmp_path)))
    for camera, properties in multi_camera_properties((11, 10)).items():
        for name, value in properties.items():
            core.setProperty(camera, name, value)
    follower = MDAFollower(core, tmp_path / "fused", measure="sf")
    try:
        core.mda.run(useq.MDASequence(z_plan={"range": 2, "step": 1}))
        assert follower.handler.finished.wait(60)
    finally:
        follower.stop()
        core.unloadAllDevices()
    records = summary_of(tmp_path / "fused")["stacks"]
    assert {record["indices"]["cam"]: validated_ome(record["outputs"]["stack"]).images[0].pixels.significant_bits
            for record in records} == {0: 11, 1: 10}


def test_a_folder_holding_an_earlier_runs_outputs_is_not_written_over(tmp_path):
    sequence = useq.MDASequence(z_plan={"absolute": [0, 1, 2]})
    run_by_hand(StreamingFusionHandler(tmp_path, method="sf"), sequence)
    before = snapshot(tmp_path)
    later = StreamingFusionHandler(tmp_path, method="sf")   # a new handler (the script run again)
    run_by_hand(later, sequence)
    assert snapshot(tmp_path) == before and later.out_dir.parent == tmp_path

    # Stacks without a summary (a run that died) are kept too; other files (another writer's) take nothing.
    crashed, shared = tmp_path / "crashed", tmp_path / "shared"
    crashed.mkdir()
    shared.mkdir()
    (crashed / "stack.stack.ome.tif").write_bytes(b"the slices of a run that died")
    (shared / "raw.ome.tiff").write_bytes(b"pymmcore-plus's own file")
    after_crash, beside_raw = (StreamingFusionHandler(folder, method="sf") for folder in (crashed, shared))
    run_by_hand(after_crash, sequence)
    run_by_hand(beside_raw, sequence)
    assert (crashed / "stack.stack.ome.tif").read_bytes() == b"the slices of a run that died"
    assert after_crash.out_dir.parent == crashed and pages(after_crash.out_dir / "stack.stack.ome.tif") == 3
    assert beside_raw.out_dir == shared and pages(shared / "stack.stack.ome.tif") == 3


def test_mda_fusion_json_names_its_sequence_while_and_after_it_is_acquired(tmp_path):
    sequence = useq.MDASequence(z_plan={"absolute": [0, 1, 2]})
    handler = StreamingFusionHandler(tmp_path, method="sf")
    handler.sequenceStarted(sequence, {})
    acquiring = summary_of(tmp_path)  # (after a crash, this is what is left)
    assert acquiring["sequence_uid"] == str(sequence.uid) and acquiring["finished"] is False
    for event in sequence:
        handler.frameReady(np.ones((8, 8), np.uint16), event, {})
    handler.sequenceFinished(sequence)
    done = summary_of(tmp_path)
    assert done["sequence_uid"] == str(sequence.uid) and done["finished"] is True
    assert done["started"] == acquiring["started"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
                                                                     done["started"])


# -- sequences without a z-plan --

def user_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_an_mda_without_a_z_plan_says_so_once_and_writes_no_fused_images(demo, tmp_path):
    """Each frame was a "z-stack": a raw stack, a depth map and a fused image identical to the frame,
    and an "only one slice" warning each."""
    sequence = useq.MDASequence(channels=["DAPI", "FITC"], time_plan={"interval": 0, "loops": 3})
    handler = StreamingFusionHandler(tmp_path, method="sf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        demo.mda.run(sequence, output=handler)
    said = user_warnings(caught)
    assert not any("only one slice" in message for message in said), said
    no_z, = (message for message in said if "z-plan" in message)
    assert str(sequence.uid) in no_z and "nothing to fuse" in no_z
    assert not list(tmp_path.glob("*.fused.tif")) and not list(tmp_path.glob("*.depth.tif"))
    stacks = sorted(tmp_path.glob("*.stack.ome.tif"))
    assert len(stacks) == 6 and all(pages(path) == 1 for path in stacks)  # the frames are kept
    summary = summary_of(tmp_path)
    assert "has no z-plan" in summary["note"] and "nothing to fuse" in summary["note"]
    assert len(summary["one_slice_stacks"]) == 6 and summary["failed"] == []
    assert all(r["note"] == ONE_SLICE_NOTE and list(r["outputs"]) == ["stack"] for r in summary["stacks"])


def test_a_position_without_z_is_kept_and_the_positions_with_z_are_fused(demo, tmp_path):
    sequence = useq.MDASequence(
        channels=["DAPI"],
        stage_positions=[{"x": 0, "y": 0, "z": 10, "sequence": {"z_plan": {"range": 4, "step": 1}}},
                         {"x": 100, "y": 100, "z": 12}])
    handler = StreamingFusionHandler(tmp_path, method="sf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        demo.mda.run(sequence, output=handler)
    said = [message for message in user_warnings(caught) if "one slice" in message]
    assert len(said) == 1 and "1 of its 2 stacks" in said[0] and "p1_c0-DAPI" in said[0], said
    records = {r["name"]: r for r in summary_of(tmp_path)["stacks"]}
    assert records["p0_c0-DAPI"]["slices"] == 5 and (tmp_path / "p0_c0-DAPI.fused.tif").is_file()
    assert records["p1_c0-DAPI"]["note"] == ONE_SLICE_NOTE and not (tmp_path / "p1_c0-DAPI.fused.tif").exists()
    assert summary_of(tmp_path)["one_slice_stacks"] == ["p1_c0-DAPI"]


def test_events_not_known_in_advance_without_z_are_told_once_at_the_end(tmp_path):
    """A bare list of events runs under a placeholder sequence: the handler learns the stacks as they come."""
    events = list(useq.MDASequence(channels=["DAPI", "FITC"], time_plan={"interval": 0, "loops": 2}))
    handler = StreamingFusionHandler(tmp_path, method="sf", keep_stacks=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler.sequenceStarted(None, {})
        for k, event in enumerate(events):
            handler.frameReady(np.full((8, 8), k, np.uint16), event, {})
        handler.sequenceFinished(None)
    said = [message for message in user_warnings(caught) if "z-plan" in message]
    assert len(said) == 1 and "each of its 4 stacks is one frame" in said[0]
    # keep_stacks=False deletes a raw stack once it is fused: these never are, so they stay (maybe the only copy).
    kept = [f"{name}.stack.ome.tif" for name in handler.summary["one_slice_stacks"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SUMMARY_NAME, *kept])
    assert len(handler.summary["one_slice_stacks"]) == 4


# -- where warnings point --

def test_handler_warnings_point_at_the_callers_line_and_name_the_sequence(tmp_path):
    """The "only one slice" warning's only source line was ``return self.engine.finish()``."""
    sequence = useq.MDASequence(channels=["DAPI"], time_plan={"interval": 0, "loops": 2})
    handler = StreamingFusionHandler(tmp_path, method="sf", decision_channel="GFP")
    with pytest.warns(UserWarning) as caught:
        handler.sequenceStarted(sequence, {})
    assert [w.filename for w in caught] == [__file__, __file__]
    assert all(str(sequence.uid) in str(w.message) for w in caught)
    assert "decision_channel 'GFP'" in str(caught[0].message) and "no z-plan" in str(caught[1].message)
    for event in sequence:
        handler.frameReady(np.ones((8, 8), np.uint16), event, {})
    with warnings.catch_warnings(record=True) as finishing:
        warnings.simplefilter("always")
        handler.sequenceFinished(sequence)
    assert user_warnings(finishing) == []  # said once, at the start


def test_following_an_mda_run_on_this_thread_warns_at_the_run(demo, tmp_path):
    from napari_ums_fusion.mda_follow import MDAFollower

    follower = MDAFollower(demo, tmp_path, measure="sf")
    try:
        with pytest.warns(UserWarning, match="no z-plan") as caught:
            demo.mda.run(useq.MDASequence(channels=["DAPI"]))
    finally:
        follower.stop()
    assert {w.filename for w in caught if "no z-plan" in str(w.message)} == {__file__}
