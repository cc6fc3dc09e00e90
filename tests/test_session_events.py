"""Session events: the loop announces each slice and the end; the outputs and the live view follow."""
from __future__ import annotations

import json
import threading

import pytest

from acquisition.profile import load_profile
from acquisition.rig import open_rig
from acquisition.session import Session, new_session_folder
from acquisition.session_events import SessionListener
from tests.conftest import REPO_ROOT
from tests.test_sessions import small

pytestmark = pytest.mark.hardware_sim


class Recorder(SessionListener):
    """Writes down every event, as a listener of one's own would see them."""

    def __init__(self):
        self.events: list[tuple] = []
        self.fusion_threads: set[str] = set()

    def session_started(self, session, planned_slices):
        self.events.append(("started", planned_slices))

    def slice_acquired(self, session, index, pixels, z, frame_metadata):
        self.events.append(("acquired", index, z, pixels.shape))

    def slice_fused(self, session, index, fusion_s):
        self.fusion_threads.add(threading.current_thread().name)
        self.events.append(("fused", index, fusion_s > 0))

    def session_ended(self, session, report, result):
        on_disk = json.loads((session.folder / "session.json").read_text())
        self.events.append(("ended", report.acquired_slices, sorted(report.outputs), result is not None,
                            on_disk["acquired_slices"]))


def run_session(tmp_path, **plan):
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated.yaml"), **plan)
    recorder = Recorder()
    rig = open_rig(profile)
    try:
        outcome = Session(profile, rig, new_session_folder(tmp_path), [recorder]).run(progress=False)
    finally:
        rig.close()
    return outcome, recorder


def test_a_listener_hears_each_slice_acquired_and_fused_then_the_end_after_the_outputs_are_written(tmp_path):
    outcome, recorder = run_session(tmp_path)
    n = outcome.report.planned_slices
    kinds = [event[0] for event in recorder.events]
    assert kinds[0] == "started" and recorder.events[0] == ("started", n)
    assert kinds[-1] == "ended" and kinds.count("ended") == 1
    acquired = [event for event in recorder.events if event[0] == "acquired"]
    assert [event[1] for event in acquired] == list(range(n))
    assert [event[2] for event in acquired] == [s.z for s in outcome.report.slices]
    fused = [event for event in recorder.events if event[0] == "fused"]
    assert [event[1] for event in fused] == list(range(n)) and all(event[2] for event in fused)
    assert recorder.fusion_threads == {"fusion"}  # slice_fused comes from the fusion thread
    # The output writer listens first: by the end, the outputs are written and named in the report.
    assert recorder.events[-1] == ("ended", n, ["depth", "focus_curve", "fused", "stack"], True, n)


def test_without_listeners_a_session_still_writes_its_outputs(tmp_path):
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated.yaml"))
    rig = open_rig(profile)
    try:
        outcome = Session(profile, rig, new_session_folder(tmp_path)).run(progress=False)
    finally:
        rig.close()
    assert {"fused", "depth", "focus_curve", "stack"} <= set(outcome.report.outputs)
    written = json.loads((outcome.folder / "session.json").read_text())
    assert written["psnr_db"] == outcome.report.psnr_db and all("fusion_s" in s for s in written["slices"])


def test_a_decision_map_that_fails_costs_the_focus_curve_only(tmp_path, monkeypatch):
    """The decision map is made beside the image (after it): its failure must not take the fused image, the depth
    map or session.json with it."""
    import fusion.pyramid_composition

    def fails(*args, **kwargs):
        raise MemoryError("no room for the mode filter")

    monkeypatch.setattr(fusion.pyramid_composition, "clean_decision", fails)
    outcome, _ = run_session(tmp_path)
    written = json.loads((outcome.folder / "session.json").read_text())
    assert (outcome.folder / "fused.tif").is_file() and (outcome.folder / "depth.tif").is_file()
    assert {"fused", "depth"} <= set(written["outputs"]) and "focus_curve" not in written["outputs"]
    assert written["errors"] == ["the focus curve could not be made: MemoryError: no room for the mode filter"]
