"""The three acquisition modes on real parts: hardware-sequenced stacks (UniMMCore Python devices and the
real MMCore with the demo adapters), the free-running tunable-lens stream, and what each records."""
from __future__ import annotations

import json
import time

import pytest
import tifffile
import yaml

from acquisition.acquisition_mode import acquirer_for
from acquisition.lens_settling import LensTrajectory
from acquisition.plans import planned_positions
from acquisition.profile import Profile, ProfileError, load_profile
from acquisition.acquirer import MAX_LOST_IN_A_ROW
from acquisition.frame_stream import FrameStream
from acquisition.rig import open_rig
from acquisition.session import Session, new_session_folder, run_profile
from devices.errors import DeviceErrorReply, DeviceNotFoundError, DeviceTimeoutError, UnsupportedFeatureError
from fusion.readers import open_stack
from tests.conftest import REPO_ROOT, small_profile as small

pytestmark = pytest.mark.hardware_sim

PROFILES = REPO_ROOT / "profiles"


def stack_z(folder) -> list[float]:
    with open_stack(folder / "stack.ome.tif") as stack:
        return [float(z) for z in stack.z_positions_um]


def run_session(tmp_path, profile):
    """A session in this process, returning the outcome and what the simulators saw."""
    rig = open_rig(profile)
    try:
        outcome = Session(profile, rig, new_session_folder(tmp_path)).run(progress=False)
        return outcome, rig.simulated
    finally:
        rig.close()


# -- hardware-sequenced stacks --

def test_sequenced_stack_is_rendered_where_each_frame_is_stamped_and_fuses_above_the_best_slice(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"))
    outcome, simulators = run_session(tmp_path, profile)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquisition_mode"] == "sequenced"
    assert report["acquired_slices"] == report["planned_slices"] == 13 and report["dropped_frames"] == []
    planned = planned_positions(profile.plan, 0.0)
    assert stack_z(outcome.folder) == pytest.approx(planned)
    # The stage stepped on the camera's triggers: each frame was rendered where the stage then was,
    # and that is the z the frame was stamped with. (The first frame is the snap before the sequence
    # that gives fusion's kernels a real frame to load for: fusion.kernel_warmup.)
    assert simulators["camera"].rendered_at_um[0] == 0.0
    assert simulators["camera"].rendered_at_um[1:] == pytest.approx(planned, abs=1e-6)
    assert simulators["focus"].triggers >= 12
    assert report["psnr_db"] > report["best_slice_psnr_db"] + 3
    assert report["throughput_slices_per_s"] > 0 and report["acquisition"]["sequences"][0]["frames_got"] == 13


def test_auto_steps_when_the_stage_cannot_sequence_and_on_names_the_stage(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-micromanager.yaml"))
    assert profile.plan.hardware_sequencing == "auto"
    rig = open_rig(profile)
    try:
        assert acquirer_for(profile, rig) is None  # auto: the stage is not sequenceable, so the session steps
        strict = small(load_profile(PROFILES / "simulated-micromanager.yaml"), **{"plan.hardware_sequencing": "on"})
        with pytest.raises(UnsupportedFeatureError, match=r"Micro-Manager stage SimZ: plan.hardware_sequencing is on, "
                                                          r"but .* not sequenceable"):
            acquirer_for(strict, rig)
    finally:
        rig.close()


def test_on_with_a_camera_outside_micromanager_names_the_device(tmp_path):
    profile = small(load_profile(PROFILES / "simulated.yaml"), **{"plan.hardware_sequencing": "on"})
    with pytest.raises(UnsupportedFeatureError, match=r"simulated stage: .*not a Micro-Manager stage"):
        run_profile(profile, tmp_path, progress=False)


def test_a_sequence_that_loses_a_frame_is_retried_from_that_frame(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"),
                    faults={"camera": {"drop_frames": 1, "after_slices": 4}})
    outcome, simulators = run_session(tmp_path, profile)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquired_slices"] == report["planned_slices"]
    assert [r["what"] for r in report["retries"]] == ["sequence"]
    assert "ended the sequence after" in report["retries"][0]["error"]
    assert len(report["acquisition"]["sequences"]) == 2
    planned = planned_positions(profile.plan, 0.0)
    assert stack_z(outcome.folder) == pytest.approx(planned)
    with open_stack(outcome.folder / "stack.ome.tif") as stack:
        assert stack.n_slices == 13
    assert report["psnr_db"] > report["best_slice_psnr_db"] + 3


def test_a_position_lost_after_its_retries_is_skipped_and_the_sequence_goes_on_as_a_stepped_stack_does(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"),
                    faults={"camera": {"drop_frames": profile_retries_plus_one(), "after_slices": 4}})
    outcome, _ = run_session(tmp_path, profile)
    report = outcome.report.to_json()
    assert outcome.completed and report["ended_by"] is None
    # One gap, at the slice the fault names: the camera counts its own frames, however far it runs ahead.
    assert report["acquired_slices"] == 12 and [d["planned_index"] for d in report["dropped_frames"]] == [4]
    lost_z = report["dropped_frames"][0]["z"]
    assert lost_z not in stack_z(outcome.folder) and len(stack_z(outcome.folder)) == 12
    assert report["psnr_db"] > report["best_slice_psnr_db"] + 3


@pytest.mark.parametrize("after_slices", [4, 12])   # 12: the last slice (the camera had run past it)
@pytest.mark.parametrize("name", ["simulated-micromanager", "simulated-sequenced"])
def test_a_camera_fault_meets_the_slice_it_names_in_a_sequence_as_in_a_stepped_stack(tmp_path, name, after_slices):
    profile = small(load_profile(PROFILES / f"{name}.yaml"),
                    faults={"camera": {"drop_frames": 1, "after_slices": after_slices}})
    outcome, _ = run_session(tmp_path, profile)
    report = outcome.report.to_json()
    assert outcome.completed and report["acquired_slices"] == report["planned_slices"] == 13
    assert [r["slice"] for r in report["retries"]] == [after_slices]   # the frame lost was that slice's, retried
    assert report["faults_injected"] == [{"device": "camera", "after_slices": after_slices, "drop_frames": 1}]
    assert stack_z(outcome.folder) == pytest.approx(planned_positions(profile.plan, 0.0))


@pytest.mark.parametrize("name", ["simulated-micromanager", "simulated-sequenced"])
def test_a_fault_after_the_last_slice_is_not_reported_as_injected_and_a_warning_says_so(tmp_path, name):
    profile = small(load_profile(PROFILES / f"{name}.yaml"), faults={"camera": {"drop_frames": 1, "after_slices": 13}})
    outcome, _ = run_session(tmp_path, profile)
    report = outcome.report.to_json()
    assert outcome.completed and report["acquired_slices"] == 13 and report["retries"] == []
    assert report["faults_injected"] == []
    assert ("faults.camera did not fire: its slice (13) never came: the session acquired 13 of the 13 planned, "
            "so nothing was rehearsed") in report["warnings"]


def test_a_stage_fault_mid_sequence_is_refused_before_anything_moves_when_sequencing_is_on(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"),
                    faults={"focus": {"error_reply": 5, "after_slices": 4}})
    assert profile.plan is not None and profile.plan.hardware_sequencing == "on"
    rig = open_rig(profile)
    try:
        with pytest.raises(UnsupportedFeatureError, match=r"Micro-Manager stage SimZ: faults.focus.after_slices: in a "
                                                          r"hardware-sequenced stack .* give after_slices: 0 \(it "
                                                          r"meets the sequence's first move\) or plan.hardware_"
                                                          r"sequencing: auto to step instead"):
            acquirer_for(profile, rig)
        assert rig.simulated["focus"].get_position_um() == 0.0 and not rig.faults_injected
    finally:
        rig.close()


def test_auto_steps_a_stack_whose_stage_fault_starts_mid_stack_and_says_why(tmp_path, capsys):
    # The rehearsal is what the user asked for; auto leaves the choice of mode to the system.
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"), **{"plan.hardware_sequencing": "auto"},
                    faults={"focus": {"error_reply": 5, "times": 1, "after_slices": 4}})
    outcome, _ = run_session(tmp_path, profile)
    report = outcome.report.to_json()
    assert outcome.completed and report["acquisition_mode"] == "stepped" and report["acquired_slices"] == 13
    assert [(r["what"], r["slice"]) for r in report["retries"]] == [("move", 4)]   # the fault met slice 4
    assert report["faults_injected"] == [{"device": "focus", "after_slices": 4, "error_reply": 5, "times": 1}]
    why = ("the stack was stepped, not hardware-sequenced (plan.hardware_sequencing: auto), so that faults.focus "
           "(after_slices: 4) could start mid-stack: a sequenced stage steps on the camera's trigger and is sent "
           "no command between slices")
    assert why in report["warnings"]
    from run_session import print_session_summary

    print_session_summary(outcome)   # the terminal says it as it says other warnings
    assert f"warning: {why}" in capsys.readouterr().err


@pytest.mark.parametrize("name,faults,lost,later", [
    # A stepped stage's move that keeps failing ends the stack, so here the camera loses slice 2 and the
    # stage's fault comes later (it met the 8th planned slice, once 6 were acquired).
    ("simulated-micromanager", {"camera": {"drop_frames": 3, "after_slices": 2},
                                "focus": {"error_reply": 5, "times": 1, "after_slices": 6}}, 2, ("move", 6)),
    # The stage refuses the sequence's first move three times (a try and plan.retries' 2): slice 0 is lost and
    # the camera's frames begin at slice 1 (its fault met the camera's 5th frame: slice 5).
    ("simulated-sequenced", {"focus": {"error_reply": 5, "times": 3},
                             "camera": {"drop_frames": 1, "after_slices": 4}}, 0, ("sequence", 4)),
])
def test_a_later_fault_meets_the_planned_slice_it_names_after_a_slice_was_lost(tmp_path, name, faults, lost, later):
    """after_slices: n is planned slice n (from 0), lost slices before it counted, stepped or sequenced alike."""
    outcome, _ = run_session(tmp_path, small(load_profile(PROFILES / f"{name}.yaml"), faults=faults))
    report = outcome.report.to_json()
    assert report["ended_by"] is None
    assert report["acquisition_mode"] == ("sequenced" if name == "simulated-sequenced" else "stepped")
    assert [d["planned_index"] for d in report["dropped_frames"]] == [lost] and report["acquired_slices"] == 12
    assert [(r["what"], r["slice"]) for r in report["retries"] if r["slice"] != lost] == [later]
    assert len(report["faults_injected"]) == 2 and not report.get("warnings")


def profile_retries_plus_one() -> int:
    """Tries per position in the shipped sequenced profile (1 + plan.retries)."""
    plan = load_profile(PROFILES / "simulated-sequenced.yaml").plan
    assert plan is not None
    return plan.retries + 1


def test_a_sequence_that_keeps_failing_ends_the_session_with_the_frames_acquired_saved(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"),
                    faults={"camera": {"drop_frames": 10, "after_slices": 4}})
    outcome, _ = run_session(tmp_path, profile)
    report = outcome.report.to_json()  # as session.json has it
    assert not outcome.completed and "ended the sequence after" in report["ended_by"]
    acquired = report["acquired_slices"]
    assert 4 <= acquired < 13
    # Each of MAX_LOST_IN_A_ROW positions was tried 1 + retries times before the session gave up.
    assert len(report["retries"]) == (profile.plan.retries + 1) * MAX_LOST_IN_A_ROW
    # Nothing acquired is lost: on disk and fused; what was not is listed with its z.
    with open_stack(outcome.folder / "stack.ome.tif") as stack:
        assert stack.n_slices == acquired
    # The positions tried and lost, as a stepped stack lists them; those never tried are not "dropped".
    assert [d["planned_index"] for d in report["dropped_frames"]] == list(range(acquired, acquired + MAX_LOST_IN_A_ROW))
    assert all("z" in d for d in report["dropped_frames"])
    assert (outcome.folder / "fused.tif").is_file()


DEMO_RIG = {"name": "demo", "micromanager": {"config": "demo"},
            "camera": {"driver": "micromanager", "exposure_ms": 2},
            "focus": {"driver": "micromanager"},
            "plan": {"z": {"bottom": 0, "top": 10, "step": 1}, "hardware_sequencing": "on"}}


def test_demo_adapters_stage_with_use_sequences_runs_a_sequenced_stack(tmp_path):
    profile = Profile.model_validate({**DEMO_RIG, "micromanager": {"config": "demo",
                                                                  "properties": {"Z": {"UseSequences": True}}}})
    outcome = run_profile(profile, tmp_path, progress=False)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquisition_mode"] == "sequenced"
    assert report["acquired_slices"] == report["planned_slices"] == 11
    assert stack_z(outcome.folder) == pytest.approx([float(z) for z in range(11)])
    assert tifffile.imread(outcome.folder / "fused.tif").shape == (512, 512)


def test_demo_adapters_stage_without_sequences_is_named_when_on(tmp_path):
    with pytest.raises(UnsupportedFeatureError, match=r"Micro-Manager stage Z: .*not sequenceable .*UseSequences"):
        run_profile(Profile.model_validate(DEMO_RIG), tmp_path, progress=False)


@pytest.mark.parametrize("micromanager,error,message", [
    ({"properties": {"Z": {"UseSequence": "Yes"}}}, UnsupportedFeatureError,
     r"^Micro-Manager device Z: micromanager.properties: no property 'UseSequence' \(did you mean 'UseSequences'\?\)$"),
    ({"properties": {"Zz": {"UseSequences": "Yes"}}}, DeviceNotFoundError,
     r"Micro-Manager device Zz: .* does not load \(did you mean 'Z'"),
    # MMCore leaves a read-only property as it was, without a word.
    ({"properties": {"Camera": {"CameraName": "foo"}}}, UnsupportedFeatureError,
     r"Micro-Manager device Camera: micromanager.properties: CameraName is read-only"),
    ({"properties": {"Z": {"UseSequences": "Maybe"}}}, DeviceErrorReply,
     r"Micro-Manager device Z: micromanager.properties: cannot set UseSequences to 'Maybe'"),
    ({"config": "dem"}, DeviceNotFoundError,
     r"micromanager.config: no configuration file at dem \(the demo adapters' configuration is config: demo\)"),
    # It said "the configuration has no focus stage", of a configuration never given.
    ({"config": None}, DeviceNotFoundError,
     r"^Micro-Manager: micromanager.config is not set, so the core has no devices: give a configuration file"),
    # camera.exposure_ms (2 ms in DEMO_RIG) beside the camera's own Exposure: one would win in silence.
    ({"properties": {"Camera": {"Exposure": 5}}}, ValueError,
     r"the exposure is given twice: camera.exposure_ms and micromanager.properties: Camera: Exposure; keep one"),
])
def test_a_bad_micromanager_section_is_named_before_anything_moves(tmp_path, capsys, micromanager, error, message):
    profile = Profile.model_validate({**DEMO_RIG, "micromanager": {"config": "demo", **micromanager}})
    with pytest.raises(error, match=message):
        run_profile(profile, tmp_path, progress=False)
    assert "pymmcore-plus" not in capsys.readouterr().err  # its own coloured warning about the same typo


# -- the free-running tunable-lens stream --

@pytest.mark.parametrize("start,end,seen,still", [
    (0.000, 0.010, None, False),   # before the first command
    (1.001, 1.011, 0, False),      # while the lens settles after command 0 (sent at 1.000, 5 ms)
    (1.006, 1.016, 0, True),       # wholly after settling, before the next command
    (1.015, 1.025, 0, False),      # command 1 (at 1.020) falls inside the exposure
    (1.021, 1.031, 1, False),      # settling after command 1
    (1.027, 1.037, 1, True),
])
def test_lens_trajectory_says_which_step_a_frame_saw_and_whether_the_lens_was_still(start, end, seen, still):
    trajectory = LensTrajectory(settle_s=0.005, guard_s=0.0005)
    trajectory.command(1.000, 0.5)
    trajectory.command(1.020, 0.8)
    focus = trajectory.frame_focus(start, end)
    assert (focus.command, focus.still) == (seen, still)


def test_lens_stream_session_fuses_above_the_best_slice_and_lists_flagged_frames(tmp_path):
    outcome = run_profile(small(load_profile(PROFILES / "simulated-etl-stream.yaml")), tmp_path, progress=False)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquisition_mode"] == "stream"
    assert report["acquired_slices"] == report["planned_slices"] and report["dropped_frames"] == []
    assert report["acquisition"]["flagged_frames"] == len(report["acquisition"]["flagged"]) > 0
    assert report["psnr_db"] > report["best_slice_psnr_db"] + 3


def lens_stream_with(camera_fault: dict) -> Profile:
    """The lens-stream profile, small, its camera timing out in 0.5 s, with this camera fault."""
    return small(load_profile(PROFILES / "simulated-etl-stream.yaml"), **{"camera.timeout_s": 0.5},
                 faults={"camera": camera_fault})


@pytest.mark.parametrize("drop_frames", [1, 3])   # 3: as many as a stepped slice's try and its 2 retries
def test_frames_dropped_in_a_lens_stream_cost_time_not_positions(tmp_path, drop_frames):
    # A free-running camera that loses a frame in transport streams on; the lens holds its power
    # until a frame of its step comes, so nothing is lost (it was: the stream ended, and 13 of 17 with it).
    outcome, _ = run_session(tmp_path, lens_stream_with({"drop_frames": drop_frames, "after_slices": 4}))
    report = outcome.report
    assert outcome.completed and report.acquired_slices == report.planned_slices == 17
    assert report.dropped_frames == [] and report.retries == []
    assert report.faults_injected == [{"device": "camera", "after_slices": 4, "drop_frames": drop_frames}]


@pytest.mark.parametrize("fault,error", [
    ({"error_reply": 5}, "simulated camera: camera error 5"),   # ends the camera's sequence at once
    # (the camera's own wait, its exposure and camera.timeout_s, ends before the stream's for a still frame)
    ({"silent": True}, "simulated camera: no frame within 0.51 s (10 ms exposure + 0.5 s timeout; "
                       "the camera stopped answering)"),
])
def test_a_camera_error_in_a_lens_stream_is_retried_on_a_stream_started_again(tmp_path, fault, error):
    outcome, _ = run_session(tmp_path, lens_stream_with({**fault, "times": 1, "after_slices": 4}))
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquired_slices"] == report["planned_slices"] == 17
    assert report["dropped_frames"] == [] and report["acquisition"]["stream_restarts"] == 1
    assert {(r["slice"], r["what"]) for r in report["retries"]} == {(4, "frame")}
    assert report["retries"][0]["error"] == error   # durations said as given, not as what was left of them


def test_a_lens_stream_position_still_failing_after_its_retries_is_the_only_one_lost(tmp_path):
    # The try and plan.retries' 2 fail, as in a stepped stack: that position is lost, the sweep goes on.
    outcome, _ = run_session(tmp_path, lens_stream_with({"error_reply": 5, "times": 3, "after_slices": 4}))
    report = outcome.report
    assert report.ended_by is None and [d.planned_index for d in report.dropped_frames] == [4]
    assert [r.attempt for r in report.retries] == [1, 2, 3]
    kept = [s.planned_index for s in report.slices]
    assert kept == [k for k in range(17) if k != 4] and report.acquired_slices == 16


# -- a camera that stops answering in a sequence or a stream: camera.give_up_after_s ends it, as a stepped stack --

STOPS_ANSWERING = {
    # Frames 1.5 s late, past the 0.3 s timeout (a try lasts as long: stopping waits for the exposure under way).
    "simulated-sequenced": {"delay_s": 1.5, "after_slices": 4},
    "simulated-etl-stream": {"silent": True, "after_slices": 4},
}


@pytest.mark.parametrize("name", STOPS_ANSWERING)
def test_a_camera_that_stops_answering_mid_stack_is_given_up_on_after_give_up_after_s(tmp_path, name):
    # Without the limit: 11 tries of 0.3 s or more for each of 3 positions in a row (19 s streamed, 51 s sequenced).
    profile = small(load_profile(PROFILES / f"{name}.yaml"), faults={"camera": STOPS_ANSWERING[name]},
                    **{"camera.timeout_s": 0.3, "camera.give_up_after_s": 1.0, "plan.retries": 10})
    started_s = time.monotonic()
    outcome, _ = run_session(tmp_path, profile)
    took_s = time.monotonic() - started_s
    assert took_s < 15, f"took {took_s:.1f} s"  # 5x the ~3 s it takes idle, the rig's opening included
    report = outcome.report
    assert report.ended_by is not None and "gave up after camera.give_up_after_s = 1 s" in report.ended_by
    assert profile.plan is not None and len(report.retries) < profile.plan.retries  # the limit ended it, not them
    # What came before the camera stopped is kept: on disk with its z, in session.json, and fused.
    first_four = planned_positions(profile.plan, 0.0)[:4]
    with open_stack(outcome.folder / "stack.ome.tif") as stack:
        assert stack.focus_positions() == (pytest.approx(first_four), profile.focus.unit)
    written = json.loads((outcome.folder / "session.json").read_text())
    assert written["ended_by"] == report.ended_by and written["acquired_slices"] == 4
    # Positions the stack never got to are not lost ones (the stream listed all 13 left as "lost after the retries").
    assert written["dropped_frames"] == []
    assert [s["z"] for s in written["slices"]] == pytest.approx(first_four)
    assert (outcome.folder / "fused.tif").is_file()


# -- a lens stream on the GenICam camera --

def test_a_lens_stream_on_a_camera_without_an_exposure_time_is_refused_before_anything_moves(tmp_path):
    # Viky, the genicam wheel's camera, has no ExposureTime: when each frame was exposed, and so which power
    # it saw, cannot be told. It ran, stamping each frame with the step it arrived in; now it is an error.
    profile = small(load_profile(PROFILES / "simulated-genicam-etl.yaml"), **{"plan.stream": True})
    with pytest.raises(UnsupportedFeatureError, match=r"GenICam camera \(0\): plan.stream needs a camera that "
                                                      r"reports its exposure time.*set plan.stream: false"):
        run_profile(profile, tmp_path / "sessions", progress=False)
    assert list((tmp_path / "sessions").iterdir()) == []  # no session folder left behind


def test_a_genicam_stream_stopped_by_a_fetch_timeout_is_started_again_and_never_hangs():
    """The GenICam driver stops acquiring at a fetch timeout; the stream's next wait starts it again."""
    from devices.genicam import GenICamCamera, bundled_producer

    camera = GenICamCamera(bundled_producer(), serial_number="0")
    try:
        started_s = time.monotonic()
        with FrameStream(camera, max_frames=10, frame_timeout_s=1e-4) as stream:  # no frame comes that soon
            for restarts in (0, 1):
                with pytest.raises(DeviceTimeoutError, match=r"GenICam camera \(0\): no frame within 0.0001 s"):
                    stream.next_frame(timeout_s=5.0)
                assert stream.restarts == restarts
        assert time.monotonic() - started_s < 5.0  # it takes 0.3 s idle; a hang would never end
        assert camera.snap(timeout_s=5.0).pixels.shape[:2] == (400, 400)  # stopped and started, it still delivers
    finally:
        camera.close()


def test_the_kernel_warm_up_says_nothing_about_its_throwaway_crop():
    """A stream's or sequence's warm-up fuses a crop of a snapped frame: a warning about that crop
    ("too small to align") would only repeat, or contradict, what the stack itself reports."""
    import warnings

    import numpy as np

    from fusion import FusionSettings
    from fusion.kernel_warmup import warm_kernels

    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warm_kernels(frame, FusionSettings(align="auto"))  # as a session with alignment sets it
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("plan,message", [
    ({"z": {"range": 10, "step": 1}, "stream": True}, r"plan: stream: a free-running stream sweeps a tunable lens"),
    ({"z": {"range": 10, "step": 1}, "hardware_sequencing": "maybe"},
     r"plan.hardware_sequencing: Input should be 'auto', 'on' or 'off'"),
    ({"z": {"range": 10, "step": 1}, "hardware_sequence": "on"},
     r"plan.hardware_sequence: unknown key 'hardware_sequence' \(did you mean 'hardware_sequencing'\?\); "
     r"allowed here: auto_range, hardware_sequencing"),
])
def test_bad_acquisition_mode_keys_are_named(tmp_path, plan, message):
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"camera": {"driver": "simulated"}, "focus": {"driver": "simulated"}, "plan": plan}))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_a_settle_wait_that_a_sequence_cannot_honour_is_a_warning(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"), **{"focus.settle_ms": 50})
    outcome, _ = run_session(tmp_path, profile)
    assert outcome.completed and outcome.report.acquisition_mode == "sequenced"
    assert any("focus.settle_ms (50 ms) is not waited in a hardware sequence" in w for w in outcome.report.warnings)


def test_acquisition_warnings_stand_when_fusion_fails(tmp_path, monkeypatch):
    from fusion.engine import StreamingFusion

    working_finish = StreamingFusion.finish

    def broken_finish(self):
        if self.n_slices <= 2:  # the kernel warm-up's throwaway engine, before the sequence
            return working_finish(self)
        raise RuntimeError("a fusion bug")

    monkeypatch.setattr(StreamingFusion, "finish", broken_finish)
    profile = small(load_profile(PROFILES / "simulated-sequenced.yaml"), **{"focus.settle_ms": 50})
    outcome, _ = run_session(tmp_path, profile)
    assert not outcome.completed and "fusion failed: RuntimeError: a fusion bug" in outcome.report.errors
    written = json.loads((outcome.folder / "session.json").read_text())
    assert "seconds" not in written  # nothing was fused
    assert any("focus.settle_ms (50 ms) is not waited" in w for w in written["warnings"])


def test_a_lens_stack_refused_later_keeps_its_focal_powers_and_its_depth_in_dpt(tmp_path):
    from fusion.refuse import refuse_stack
    from fusion.refuse_report import RefuseReport

    outcome = run_profile(small(load_profile(PROFILES / "simulated-etl-stream.yaml")), tmp_path, progress=False)
    powers = [s.z for s in outcome.report.slices]
    with open_stack(outcome.folder / "stack.ome.tif") as stack:
        assert stack.focus_positions() == (pytest.approx(powers), "dpt")
        assert stack.z_positions_um is None  # not micrometres: no µm z-scale is claimed
    report = refuse_stack(outcome.folder / "stack.ome.tif", tmp_path / "refused", progress=False)
    assert report.depth_unit == "dpt" and report.focus_positions == pytest.approx(powers)
    assert report.z_positions_um is None
    with tifffile.TiffFile(report.outputs["depth"]) as depth:
        assert depth.imagej_metadata["depth_unit"] == "dpt"
    assert RefuseReport.from_json(report.to_json()) == report
    older = {k: v for k, v in report.to_json().items() if k != "focus_positions"}  # written before the field
    assert RefuseReport.from_json(older).focus_positions is None


def run_sequenced_from_the_command_line(tmp_path, monkeypatch, faults: dict) -> int:
    """``run_session.main`` on the small sequenced profile with ``faults``; its exit status."""
    import threading

    import run_session

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # main() sets its own: undone after
    profile = yaml.safe_load((PROFILES / "simulated-sequenced.yaml").read_text())
    profile["camera"]["specimen"].update(height_px=96, width_px=128)
    profile["faults"] = faults
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(profile))
    return run_session.main(["--profile", str(path), "--out", str(tmp_path / "out")])


def test_a_camera_error_in_the_sequence_thread_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    faults = {"camera": {"error_reply": 5, "times": 1}}
    assert run_sequenced_from_the_command_line(tmp_path, monkeypatch, faults) == 0  # retried, complete
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("warning: ") and "camera error 5" in line for line in err.splitlines())


def test_a_frame_lost_in_the_one_frame_retry_of_a_sequence_is_retried_quietly(tmp_path, capsys, monkeypatch):
    # The last slice's frame is lost: the sequence ends early and is retried as a sequence of one frame,
    # whose frame is lost too; the second retry gets it.
    faults = {"camera": {"drop_frames": 2, "after_slices": 12}}
    assert run_sequenced_from_the_command_line(tmp_path, monkeypatch, faults) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and not any(line.startswith("warning: ") for line in err.splitlines()), err
    report = json.loads(next((tmp_path / "out").glob("*/session.json")).read_text())
    assert report["acquired_slices"] == report["planned_slices"] == 13 and report["dropped_frames"] == []
    assert [(r["slice"], r["what"], r["attempt"]) for r in report["retries"]] == [(12, "sequence", 1),
                                                                                  (12, "sequence", 2)]


def test_a_transient_delay_of_the_micromanager_camera_clears_after_its_times(tmp_path):
    profile = small(load_profile(PROFILES / "simulated-micromanager.yaml"),
                    **{"camera.timeout_s": 0.5}, faults={"camera": {"delay_s": 1.0, "times": 1}})
    outcome, _ = run_session(tmp_path, profile)
    report = outcome.report
    assert outcome.completed and report.acquired_slices == report.planned_slices
    assert len(report.retries) == 1 and report.retries[0].what == "snap"
