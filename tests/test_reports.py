"""Typed reports: what a real session and a real refusion write is what their report objects hold."""
from __future__ import annotations

import json

import pytest

from acquisition.profile import load_profile
from acquisition.session import run_profile
from acquisition.session_report import SessionReport, SessionSeconds, SliceRecord
from fusion.refuse import refuse_stack
from fusion.refuse_report import RefuseReport
from simulators.render_stack import write_rendered_stack
from tests.conftest import REPO_ROOT, rendered
from tests.test_sessions import small

# The keys session.json has always had: the README, the viewer and people's scripts read them.
SESSION_KEYS = {"profile", "folder", "planned_slices", "acquired_slices", "dropped_frames", "retries", "ended_by",
                "errors", "focus_unit", "faults_injected", "focus_scores", "seconds", "throughput_slices_per_s",
                "alignment", "warnings", "psnr_db", "best_slice_psnr_db", "slices", "outputs",
                "acquisition_mode", "seconds_acquisition", "z_range_um", "truth_range_um", "device_used"}
REFUSE_KEYS = {"stack", "name", "method", "settings", "n_slices", "shape", "dtype", "depth_unit",
               "depth_defined_fraction", "z_positions_um", "seconds", "focus_scores", "chosen_fraction", "outputs",
               "alignment", "warnings", "focus_positions", "source_fingerprint", "slice_files", "device_used",
               "channel_weights", "channels"}


@pytest.mark.hardware_sim
def test_a_session_report_round_trips_through_session_json(tmp_path):
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated.yaml"))
    outcome = run_profile(profile, tmp_path, progress=False)
    written = json.loads((outcome.folder / "session.json").read_text())
    assert set(written) == SESSION_KEYS
    assert set(written["slices"][0]) == {"index", "planned_index", "z", "move_s", "settle_s", "exposure_s",
                                         "store_s", "fusion_s", "time_s"}
    read_back = SessionReport.from_json(written)
    assert read_back == outcome.report
    assert read_back.to_json() == written
    assert isinstance(read_back.seconds, SessionSeconds) and isinstance(read_back.slices[0], SliceRecord)


def test_a_session_that_fused_nothing_leaves_out_the_fused_keys():
    report = SessionReport(profile={}, folder="f", planned_slices=5, acquired_slices=0, focus_unit="um",
                           ended_by="the camera is gone")
    assert set(report.to_json()) == SESSION_KEYS - {"focus_scores", "seconds", "throughput_slices_per_s",
                                                    "alignment", "device_used", "warnings", "psnr_db",
                                                    "best_slice_psnr_db", "seconds_acquisition", "z_range_um",
                                                    "truth_range_um"}
    assert SessionReport.from_json(report.to_json()) == report


@pytest.mark.parametrize("unit,said", [("um", "z 5, 10 µm"), ("dpt", "z 0.5 dpt")])
def test_the_lost_slices_error_spells_the_focus_unit_as_every_other_line_does(unit, said):
    """It said "z 5 um" where the live view, the plan's checks and the depth map's say µm."""
    from acquisition.session_report import DroppedFrame

    lost = [DroppedFrame(planned_index=i, z=z, error="timeout") for i, z in
            enumerate([5.0, 10.0] if unit == "um" else [0.5])]
    report = SessionReport(profile={}, folder="f", planned_slices=9, acquired_slices=9 - len(lost), focus_unit=unit,
                           dropped_frames=lost)
    said_lost = report.lost_slices_said()
    assert said_lost is not None and f"lost after the retries ({said}): " in said_lost


def test_a_refusion_report_round_trips_through_its_json(tmp_path):
    stack = write_rendered_stack(tmp_path / "colour.ome.tif", rendered(shape=(64, 80)))["stack"]
    report = refuse_stack(stack, tmp_path / "out", progress=False)
    written = json.loads((tmp_path / "out" / "colour.json").read_text())
    assert set(written) == REFUSE_KEYS
    assert RefuseReport.from_json(written) == report
    assert report.to_json() == written


def test_a_json_that_is_not_a_refusion_report_says_which_keys_are_wrong():
    with pytest.raises(ValueError, match=r"missing \[.*'n_slices'.*\], unknown \['slices'\]"):
        RefuseReport.from_json({"stack": "a", "slices": 3})


@pytest.mark.parametrize("method,requested", [("ums", "auto"), ("ums", "cpu"), ("sf", "auto")])
def test_a_refusion_report_records_the_device_the_deep_measure_ran_on(tmp_path, method, requested):
    """settings.device keeps what was asked ("auto"; --resume compares it); device_used says where it ran."""
    import torch

    from fusion.engine import FusionSettings

    stack = write_rendered_stack(tmp_path / "gray.ome.tif", rendered(color=False, shape=(48, 64)))["stack"]
    settings = FusionSettings(measure=method, device=requested)
    report = refuse_stack(stack, tmp_path / "out", settings, progress=False)
    written = json.loads((tmp_path / "out" / "gray.json").read_text())
    used = None if method == "sf" else requested if requested != "auto" else \
        "cuda" if torch.cuda.is_available() else "cpu"
    assert written["settings"]["device"] == requested and written["device_used"] == report.device_used == used


def device_resolved(method: str, requested: str) -> str | None:
    """Where the deep measure runs when ``requested`` ("auto": CUDA when present); None for the classical ones."""
    import torch

    if method != "ums":
        return None
    return requested if requested != "auto" else "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.hardware_sim
@pytest.mark.parametrize("method", ["ums", "sf"])
def test_session_json_records_the_device_the_deep_measure_ran_on(tmp_path, method):
    """As the refusion report does: the profile keeps the device asked for, device_used says where it ran."""
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated.yaml"), z={"bottom": 0, "top": 40, "step": 10})
    profile = profile.model_copy(update={"fusion": profile.fusion.model_copy(update={"method": method,
                                                                                     "device": "auto"})})
    outcome = run_profile(profile, tmp_path, progress=False)
    written = json.loads((outcome.folder / "session.json").read_text())
    assert written["profile"]["fusion"]["device"] == "auto"
    assert written["device_used"] == outcome.report.device_used == device_resolved(method, "auto")


@pytest.mark.parametrize("method,requested", [("ums", "auto"), ("ums", "cpu"), ("sf", "auto")])
def test_mda_fusion_json_records_the_device_each_stacks_deep_measure_ran_on(tmp_path, method, requested):
    import numpy as np
    import useq

    from fusion.mda import SUMMARY_NAME, StreamingFusionHandler

    handler = StreamingFusionHandler(tmp_path, method=method, device=requested)
    sequence = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"absolute": [0, 1, 2]}, axis_order="tcz")
    handler.sequenceStarted(sequence, {})
    rng = np.random.default_rng(0)
    for event in sequence:
        handler.frameReady((rng.random((48, 64)) * 4000).astype(np.uint16), event, {})
    handler.sequenceFinished(sequence)
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert summary["settings"]["device"] == requested and summary["failed"] == []
    assert [record["device_used"] for record in summary["stacks"]] == [device_resolved(method, requested)] * 2


@pytest.mark.parametrize("disk_becomes, said", [
    ("read-only", r"Read-only file system$"),
    ("full", r"No space left on device; free some space there or write elsewhere$")])
def test_a_focus_curve_that_cannot_be_written_is_said_as_every_output_is_and_leaves_no_half_file(
        tmp_path, disk_becomes, said):
    """A disk remounted read-only (or full) near a session's end said ``[Errno 30] Read-only file system:
    '.../focus_curve.png'`` where every other output names the file and its folder; a full one could leave a
    truncated focus_curve.png that session.json does not name. Real parts: a small tmpfs, remounted read-only or
    filled to its last byte by another file."""
    import subprocess

    from acquisition.report import plot_focus_curve
    from fusion.outputs import OutputWriteError
    from tests.conftest import small_tmpfs
    from tests.test_mda_disk_full import fill

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        if disk_becomes == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        else:
            fill(disk)
        with pytest.raises(OutputWriteError, match=f"^cannot write focus_curve.png into {disk}: {said}"):
            plot_focus_curve(disk / "focus_curve.png", [0.0, 1.0, 2.0], [0.5, 2.0, 0.7], "um", [0.2, 0.6, 0.2])
        assert sorted(p.name for p in disk.iterdir()) == ([] if disk_becomes == "read-only" else ["filler"])
