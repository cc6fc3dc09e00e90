"""The MDA handler used from Python, as a hostile caller uses it: an output folder that is a file, a 32-bit camera,
a stack whose outputs cannot be written, and a viewer polling the preview from another thread. Real MMCore with the
demo adapters, run by pymmcore-plus's MDA runner."""
from __future__ import annotations

import json
import re
import threading
import time
import traceback
import warnings

import numpy as np
import pytest
import tifffile
import useq

from fusion.mda import SUMMARY_NAME, StreamingFusionHandler
from tests.devices_fixtures import small_demo_core


@pytest.fixture(scope="module")
def demo():
    return small_demo_core()


def caught_run(core, sequence, handler) -> list[str]:
    """Run ``sequence`` through ``handler``; the warnings said meanwhile, from any thread."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        core.mda.run(sequence, output=handler)
    return [str(warning.message) for warning in caught]


# -- an output folder that is a file --

@pytest.mark.parametrize("under", [False, True])
def test_an_out_dir_that_is_a_file_is_refused_when_the_handler_is_made(tmp_path, under):
    # It was accepted; the MDA then exposed every frame, stored none, and left ``finished`` unset and ``error`` None
    # (the FileExistsError only a traceback on pymmcore-plus's relay thread).
    a_file = tmp_path / "fused"
    a_file.write_text("not a folder")
    out_dir = a_file / "sub" if under else a_file
    with pytest.raises(ValueError) as refused:
        StreamingFusionHandler(out_dir)
    said = str(refused.value)
    assert said.startswith(f"out_dir {out_dir} ")
    assert (f"lies under {a_file}, which is a file" if under else "is a file") in said
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("stop", [True, False])
@pytest.mark.parametrize("in_its_place", ["out", "parent"])
def test_a_folder_that_cannot_be_made_when_the_sequence_starts_stores_nothing_and_says_so(demo, tmp_path, stop,
                                                                                          in_its_place):
    out_dir = tmp_path / "parent" / "out"
    handler = StreamingFusionHandler(out_dir, stop_mda=demo.mda.cancel if stop else None)
    # Since the handler was made, a file appeared where its folder (or the folder above) goes.
    blocker = out_dir if in_its_place == "out" else out_dir.parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file")
    sequence = useq.MDASequence(z_plan={"range": 20, "step": 1})  # 21 frames
    said = caught_run(demo, sequence, handler)
    assert handler.finished.is_set()  # whoever waits for the outputs is not left waiting
    assert handler.error is not None and handler.error.startswith(f"the folder {out_dir} could not be made: it ")
    assert ("is a file" if in_its_place == "out" else f"lies under {blocker}, which is a file") in handler.error
    assert ("the MDA was stopped" in handler.error) is stop
    assert handler.stopped_by == (handler.error if stop else None)
    assert [message for message in said if "could not be made" in message] == \
        [f"StreamingFusionHandler: MDA sequence {sequence.uid}: {handler.error}"]
    summary = handler.summary
    assert summary is not None and summary["error"] == handler.error and summary["stacks"] == []
    assert summary["stacks_not_started"] == ["stack"]
    # Every frame taken is recorded as not stored; stopped, the MDA took only a few of them.
    assert len(summary["frames_not_stored"]) == summary["frames"]
    assert summary["frames"] < 21 if stop else summary["frames"] == 21
    # Nothing written anywhere: only the file that was in the way.
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == \
        sorted({blocker.relative_to(tmp_path).as_posix(), "parent"})
    assert blocker.read_text() == "a file"


def test_a_folder_that_could_not_be_made_does_not_spoil_the_next_sequence(demo, tmp_path):
    out_dir = tmp_path / "out"
    handler = StreamingFusionHandler(out_dir)
    out_dir.write_text("a file")
    caught_run(demo, useq.MDASequence(z_plan={"range": 2, "step": 1}), handler)
    assert handler.error is not None
    out_dir.unlink()  # moved out of the way: the next sequence runs as usual
    said = caught_run(demo, useq.MDASequence(z_plan={"range": 2, "step": 1}), handler)
    assert said == [] and handler.error is None and handler.finished.is_set()
    assert handler.out_dir == out_dir and (out_dir / "stack.fused.tif").exists()
    assert json.loads((out_dir / SUMMARY_NAME).read_text())["failed"] == []


# -- a 32-bit camera --

def test_a_32_bit_camera_is_fused_as_refusion_fuses_its_stack(demo, tmp_path):
    # uint32 frames were stored, and no stack fused ("unsupported pixel type uint32"), silently; --refuse fused the
    # same stacks as float32, with a warning. Every path that reads slices back is taken: pick composition, slices
    # read back from the file (none kept in memory), a channel composed from another's decision.
    from fusion.refuse import refuse_stack

    sequence = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"range": 4, "step": 1})
    handler = StreamingFusionHandler(tmp_path / "mda", composition="pick", max_slices_in_memory=0,
                                     decision_channel="DAPI")
    demo.setProperty("Camera", "PixelType", "32bit")
    try:
        said = caught_run(demo, sequence, handler)
    finally:
        demo.setProperty("Camera", "PixelType", "16bit")
    summary = handler.summary
    assert summary is not None and summary["failed"] == [] and handler.error is None
    folder = tmp_path / "mda"
    note = (f"StreamingFusionHandler: MDA sequence {sequence.uid} (outputs in {folder}): "
            f"{folder}/c0-DAPI.stack.ome.tif: uint32 pixels are fused as float32, and the fused image is float32 "
            "(values beyond 2^24 = 16777216 keep 7 significant digits); so are the sequence's other uint32 stacks")
    assert said == [note] and summary["warnings"] == [note]  # said once per sequence, and recorded
    records = {record["name"]: record for record in summary["stacks"]}
    assert records["c1-FITC"]["decision_from"] == "c0-DAPI"
    for name in ("c0-DAPI", "c1-FITC"):
        assert records[name]["converted_from"] == "uint32"
        with tifffile.TiffFile(folder / f"{name}.stack.ome.tif") as stack:  # stored as it came
            assert stack.series[0].dtype == np.uint32 and stack.series[0].shape == (5, 96, 128)
        fused = tifffile.imread(folder / f"{name}.fused.tif")
        assert fused.dtype == np.float32 and fused.shape == (96, 128)
    # The same stack refused: the same warning, the same fused image.
    refused = refuse_stack(folder / "c0-DAPI.stack.ome.tif", tmp_path / "refused", handler.settings, progress=False)
    refusion_said = [warning for warning in refused.warnings if "pixels are fused as" in warning]
    assert refusion_said == [note.split(f"(outputs in {folder}): ", 1)[1].removesuffix(
        "; so are the sequence's other uint32 stacks")]
    np.testing.assert_array_equal(tifffile.imread(refused.outputs["fused"]),
                                  tifffile.imread(folder / "c0-DAPI.fused.tif"))


# -- a stack that fails --

def test_a_stack_that_fails_is_said_in_a_warning_naming_it(demo, tmp_path):
    # A stack whose fused image could not be written was recorded only in mda_fusion.json: the caller was told nothing.
    folder = tmp_path / "mda"
    handler = StreamingFusionHandler(folder)
    in_the_way = folder / "c1-FITC.fused.tif"

    def a_folder_appears_where_the_fused_image_goes(*args):  # (on the runner thread, once the folder is claimed)
        in_the_way.mkdir(exist_ok=True)

    demo.mda.events.frameReady.connect(a_folder_appears_where_the_fused_image_goes)
    try:
        sequence = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"range": 4, "step": 1})
        said = caught_run(demo, sequence, handler)
    finally:
        demo.mda.events.frameReady.disconnect(a_folder_appears_where_the_fused_image_goes)
    summary = handler.summary
    assert summary is not None and summary["failed"] == ["c1-FITC"]
    record = next(record for record in summary["stacks"] if record["name"] == "c1-FITC")
    error = record["error"]
    assert "fused" not in record["outputs"]  # (a folder of that name is no fused image)
    warning, = said  # one, for the failed stack; the other was fused
    assert warning.startswith(f"StreamingFusionHandler: MDA sequence {sequence.uid} (outputs in {folder}): "
                              "stack c1-FITC failed (no fused image): ")
    assert "cannot write c1-FITC.fused.tif" in warning and "Is a directory" in warning and "\n" not in warning
    assert error.split(": ", 1)[1] in warning
    assert summary["warnings"] == [warning]
    assert (folder / "c0-DAPI.fused.tif").is_file() and (folder / "c1-FITC.stack.ome.tif").is_file()


# -- a z_plan stepping finer than the depth map holds --

# On the demo configuration, whose stage goes to 250.00001 µm exactly: 21 z that float32 rounds to a few.
TOO_FINE_Z_PLAN = {"range": 0.0002, "step": 0.00001}
STEP_TO_GIVE = "give it a step of at least 1.53e-05 µm (the depth map's at 250 µm)"


@pytest.mark.parametrize("stop", [True, False])
def test_a_z_plan_finer_than_the_depth_map_holds_is_refused_as_the_mda_starts_saying_the_step_to_give(demo, tmp_path,
                                                                                                     stop):
    """Steps of 1e-5 µm around 250 µm: the MDA was acquired whole, and then the stack's fusion failed, with advice
    for a caller of the engine ('push z nearer 0 (from the stack's first position, say), or None for every slice').
    The handler refuses the plan as the sequence starts, saying the step to give its z_plan; given stop_mda it stops
    the MDA there; a frame that comes all the same is stored, and none is fused."""
    sequence = useq.MDASequence(stage_positions=[(0, 0, 250)], z_plan=TOO_FINE_Z_PLAN)
    handler = StreamingFusionHandler(tmp_path, stop_mda=demo.mda.cancel if stop else None)
    with pytest.raises(ValueError, match=re.escape(STEP_TO_GIVE)):
        handler.check(sequence)  # (before running it, for whoever asks)
    said = caught_run(demo, sequence, handler)
    refused = handler.refused
    assert refused is not None and refused.startswith("the sequence's z_plan at stage position 0 (z 250 µm): its "
                                                      "slices' z (")
    assert STEP_TO_GIVE in refused and ("; the MDA was stopped: nothing of it is fused" in refused) is stop
    assert said == [f"StreamingFusionHandler: MDA sequence {sequence.uid} (outputs in {tmp_path}): {refused}"]
    summary = handler.summary
    assert summary is not None and summary["error"] == refused and summary["failed"] == []
    assert summary["frames"] < 21 if stop else summary["frames"] == 21
    # Every frame that came is stored, and none fused.
    assert sum(record["slices"] for record in summary["stacks"]) == summary["frames"]
    assert not list(tmp_path.glob("*.fused.tif"))
    # A stack of 11 planned slices whose first frame was kept is no stack of one slice (it was listed as one).
    assert summary["one_slice_stacks"] == []


def test_a_z_plan_of_more_slices_than_fusion_takes_is_refused_before_its_positions_are_listed(demo, tmp_path):
    """{range: 38, step: 0.001}: 38,001 slices a stack, more than fusion takes. handler.check walked all of them and
    let it run (fusion refused each stack at slice 32,768); it says the step to give, and nothing is planned."""
    sequence = useq.MDASequence(stage_positions=[(0, 0, 0)], z_plan={"range": 38, "step": 0.001})
    handler = StreamingFusionHandler(tmp_path, stop_mda=demo.mda.cancel)
    with pytest.raises(ValueError, match=re.escape(
            "the sequence's z_plan: it visits 38,001 positions; a stack is fused from 32,767 slices at most: make the "
            "step 0.0012 µm or larger")):
        handler.check(sequence)
    # Run all the same: refused as it starts, the MDA stopped there; a frame taken before it stopped is kept, not fused.
    said = caught_run(demo, sequence, handler)
    assert handler.refused is not None and handler.refused.startswith("the sequence's z_plan: it visits 38,001 ")
    assert said == [f"StreamingFusionHandler: MDA sequence {sequence.uid} (outputs in {tmp_path}): {handler.refused}"]
    assert handler.summary is not None and handler.summary["frames"] < 38001
    assert not list(tmp_path.glob("*.fused.tif"))


def test_a_script_whose_z_plan_is_refused_sees_the_refusal_once(tmp_path):
    """A script running the handler: the refusal was printed twice on stderr, logged and warned."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    script = (f"import useq\nfrom fusion.mda import StreamingFusionHandler\n"
              f"from tests.devices_fixtures import small_demo_core\n"
              f"core = small_demo_core()\n"
              f"sequence = useq.MDASequence(stage_positions=[(0, 0, 250)], z_plan={TOO_FINE_Z_PLAN!r})\n"
              f"core.mda.run(sequence, output=StreamingFusionHandler({str(tmp_path)!r}, stop_mda=core.mda.cancel))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(STEP_TO_GIVE) == 1, done.stderr


# -- a viewer polling the preview --

@pytest.mark.parametrize("composition", ["blend", "pick"])
def test_preview_may_be_polled_from_another_thread_while_the_mda_runs(tmp_path, composition):
    # napari's "Follow MDA" timer polls preview() on the GUI thread; it read the engine halfway through a slice
    # ("IndexError: index 3 is out of bounds for axis 0 with size 3") in 18-24 polls of a 31-slice MDA.
    core = small_demo_core(512, 512)
    handler = StreamingFusionHandler(tmp_path, composition=composition)
    errors: list[str] = []
    shown = 0
    runner = core.run_mda(useq.MDASequence(z_plan={"range": 30, "step": 1}), output=handler)
    assert isinstance(runner, threading.Thread)
    deadline = time.monotonic() + 120
    while not handler.finished.is_set() and time.monotonic() < deadline:
        try:
            preview = handler.preview()
        except Exception:
            errors.append(traceback.format_exc().strip().splitlines()[-1])
            continue
        if preview is not None:
            name, fused, depth = preview
            assert name == "stack" and fused.shape == (512, 512) and depth.shape == (512, 512)
            shown += 1
    runner.join(30)
    assert handler.finished.is_set() and errors == []
    assert shown > 0
    assert handler.summary is not None and handler.summary["failed"] == []
