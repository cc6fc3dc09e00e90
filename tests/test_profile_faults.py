"""Failures rehearsed from a profile's faults: section, on the simulators, without writing code."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from acquisition.plans import planned_positions
from acquisition.profile import ProfileError, load_profile
from acquisition.session import run_profile
from fusion.readers import open_stack
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.hardware_sim

PROFILES = REPO_ROOT / "profiles"


def profile_with(tmp_path, name: str, faults: dict, plan: dict | None = None, focus: dict | None = None, **camera):
    """A shipped simulated profile, small and quick, with a faults: section, written as YAML and loaded."""
    data = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    if "specimen" in data["camera"]:
        data["camera"]["specimen"].update(height_px=96, width_px=128)
    data["camera"].update({"timeout_s": 0.5, **camera})
    data["focus"]["settle_timeout_s"] = 0.5  # a stage that never settles is given up on sooner
    data["focus"].update(focus or {})
    if plan:
        data["plan"] = plan
    data["faults"] = faults
    path = tmp_path / f"{name}-faults.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_profile(path)


def run(tmp_path, profile):
    return run_profile(profile, tmp_path / "sessions", progress=False)


@pytest.mark.slow
def test_a_stage_that_goes_silent_ends_the_session_with_what_was_acquired(tmp_path):
    outcome = run(tmp_path, profile_with(tmp_path, "simulated", {"focus": {"silent": True, "after_slices": 3}}))
    report = outcome.report
    assert not outcome.completed and "simulated stage: still moving after" in report.ended_by
    assert report.acquired_slices == 3 and report.faults_injected[0]["after_slices"] == 3
    assert (outcome.folder / "fused.tif").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("fault,reply", [({"garbage": True}, "garbled"), ({"error_reply": 5}, "error 5")])
def test_a_serial_stage_that_answers_wrongly_once_is_retried(tmp_path, fault, reply):
    profile = profile_with(tmp_path, "simulated-serial-stage", {"focus": {**fault, "times": 1, "after_slices": 2}})
    outcome = run(tmp_path, profile)
    report = outcome.report
    assert outcome.completed and report.acquired_slices == report.planned_slices
    assert len(report.retries) == 1 and report.retries[0].slice == 2


@pytest.mark.slow
@pytest.mark.parametrize("name,device", [("simulated-serial-stage", "focus"), ("simulated-etl", "focus"),
                                         ("simulated", "camera"), ("simulated", "focus")])
def test_a_device_that_disconnects_after_n_slices_ends_the_session_and_keeps_them(tmp_path, name, device):
    outcome = run(tmp_path, profile_with(tmp_path, name, {device: {"disconnect": True, "after_slices": 4}}))
    report = outcome.report
    assert not outcome.completed and report.retries == []  # a vanished device is not retried
    assert "port /dev/pts/" in report.ended_by or "is gone" in report.ended_by, report.ended_by
    assert report.acquired_slices == 4
    with open_stack(outcome.folder / "stack.ome.tif") as stack:
        assert stack.n_slices == 4
    assert (outcome.folder / "fused.tif").is_file()


@pytest.mark.parametrize("name", ["simulated", "simulated-micromanager"])
def test_dropped_frames_are_recorded_with_their_z(tmp_path, name):
    profile = profile_with(tmp_path, name, {"camera": {"drop_frames": 3, "after_slices": 2}})  # retries: 2
    outcome = run(tmp_path, profile)
    report = outcome.report
    assert outcome.completed
    assert [d.planned_index for d in report.dropped_frames] == [2]
    assert report.acquired_slices == report.planned_slices - 1


@pytest.mark.slow
def test_a_camera_that_delivers_nothing_is_given_up_on_within_the_profile_bound(tmp_path):
    profile = profile_with(tmp_path, "simulated", {"camera": {"drop_frames": 1000, "after_slices": 2}},
                           give_up_after_s=1.2)
    outcome = run(tmp_path, profile)
    report = outcome.report
    assert "gave up after camera.give_up_after_s = 1.2 s" in report.ended_by
    # 0.5 s per try: three tries fit in 1.2 s, where 3 tries x 3 frames were made before.
    assert len([r for r in report.retries if r.what == "snap"]) <= 3
    assert report.acquired_slices == 2 and (outcome.folder / "fused.tif").is_file()


def test_a_fault_that_never_met_its_device_is_not_reported_as_injected(tmp_path):
    # Both due at slice 3: the stage vanishes on that slice's move, so the camera is never asked for its frame.
    faults = {"focus": {"disconnect": True, "after_slices": 3}, "camera": {"drop_frames": 1, "after_slices": 3}}
    outcome = run(tmp_path, profile_with(tmp_path, "simulated", faults))
    report = outcome.report
    assert "is gone" in report.ended_by and report.acquired_slices == 3
    assert report.faults_injected == [{"device": "focus", "after_slices": 3, "disconnect": True}]
    assert report.warnings == ["faults.camera did not fire: it was switched on at its slice (3), but the camera was "
                               "not used again, so nothing was rehearsed"]


@pytest.mark.parametrize("faults,acquired", [
    ({"focus": {"silent": True, "after_slices": 20}}, 17),    # past the 17-slice stack's end
    # The camera vanishes at slice 3, before the stage's fault is due.
    ({"camera": {"disconnect": True, "after_slices": 3}, "focus": {"silent": True, "after_slices": 5}}, 3),
])
def test_a_fault_whose_slice_never_came_says_so(tmp_path, faults, acquired):
    report = run(tmp_path, profile_with(tmp_path, "simulated", faults)).report
    assert report.planned_slices == 17 and report.acquired_slices == acquired
    assert report.warnings is not None
    assert [w for w in report.warnings if w.startswith("faults.focus")] == [
        f"faults.focus did not fire: its slice ({faults['focus']['after_slices']}) never came: the session acquired "
        f"{acquired} of the 17 planned, so nothing was rehearsed"]


def test_a_lens_fault_due_after_the_last_slice_of_a_stream_spoils_nothing(tmp_path):
    # As in a stepped stack: a fault starts before a slice, never after the last one (it would spoil the return).
    profile = profile_with(tmp_path, "simulated-etl-stream", {"focus": {"error_reply": 5, "after_slices": 17}})
    assert profile.plan is not None and len(planned_positions(profile.plan, 0.0)) == 17
    outcome = run(tmp_path, profile)
    report = outcome.report
    assert outcome.completed and report.acquired_slices == 17 and report.errors == []
    assert report.faults_injected == []


@pytest.mark.parametrize("name", ["simulated-autorange", "simulated-sequenced"])
def test_faults_count_the_stacks_slices_and_leave_the_auto_range_pre_sweep_alone(tmp_path, name):
    # Were the pre-sweep's frames counted, the camera would lose its 2nd one: a pre-sweep frame.
    data = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    data["camera"]["specimen"].update(height_px=240, width_px=320)   # 6 x 8 binned tiles: enough to find the range
    data["camera"]["timeout_s"] = 0.5
    data["plan"] = {**yaml.safe_load((PROFILES / "simulated-autorange.yaml").read_text())["plan"],
                    "hardware_sequencing": data["plan"].get("hardware_sequencing", "auto")}
    data["faults"] = {"camera": {"drop_frames": 3, "after_slices": 1}}   # 3: a try and plan.retries' 2
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    outcome = run(tmp_path, load_profile(path))
    report = outcome.report.to_json()
    assert report["acquisition_mode"] == ("sequenced" if name == "simulated-sequenced" else "stepped")
    assert report["pre_sweep"]["frames"] >= 3 and outcome.completed
    assert [d["planned_index"] for d in report["dropped_frames"]] == [1]   # the fine stack's second slice
    assert report["acquired_slices"] == report["planned_slices"] - 1
    assert report["faults_injected"] == [{"device": "camera", "after_slices": 1, "drop_frames": 3}]


@pytest.mark.parametrize("name,faults,message", [
    ("simulated-genicam-etl", {"camera": {"drop_frames": 1}},
     r"faults.camera: only this project's simulators commit faults, and this camera \(genicam\) is not one"),
    ("simulated-micromanager", {"focus": {"garbage": True}},
     r"faults.focus: the simulated micromanager focus cannot simulate garbage; it can: silent, error_reply"),
    ("simulated", {"focus": {"after_slices": 2}}, r"faults.focus: no fault asked for"),
    # Two in one block: the simulators commit one, and session.json listed both as injected.
    ("simulated", {"focus": {"silent": True, "error_reply": 5, "times": 1}},
     r"faults.focus: silent and error_reply were both asked for; a device commits one fault at a time"),
    ("simulated", {"focus": {"silnet": True}},
     r"faults.focus.silnet: unknown key 'silnet' \(did you mean 'silent'\?\); allowed here: .*silent"),
    ("serial-stage", {"focus": {"silent": True}}, r"faults.focus: only this project's simulators commit faults"),
    # Nothing in an MDA commits faults: accepted, they were silently ignored.
    ("simulated-mda", {"camera": {"drop_frames": 1}},
     r"^[^\n]*: faults.camera: faults are rehearsed in single-stack sessions \(plan:\) only; an mda: plan's frames "
     r"are taken by pymmcore-plus's MDA runner, where no fault is committed: remove faults:, or rehearse them with "
     r"a plan: profile \(simulated-micromanager.yaml\)$"),
    ("simulated-mda", {"camera": {"delay_s": 1}, "focus": {"error_reply": 5}}, r": faults.camera, faults.focus: "),
])
def test_faults_that_cannot_be_committed_are_profile_errors(tmp_path, name, faults, message):
    with pytest.raises(ProfileError, match=message):
        profile_with(tmp_path, name, faults)


@pytest.mark.slow
def test_a_session_that_sees_no_focus_information_says_so(tmp_path):
    # A flat specimen far below the plan: every slice is the same blur, equally (un)sharp.
    data = yaml.safe_load((PROFILES / "simulated.yaml").read_text())
    data["camera"]["specimen"].update(height_px=96, width_px=128, surface="plane", depth_um=0)
    data["camera"]["noise"] = {"full_well_e": 0, "read_noise_e": 0, "bit_depth": 8}
    data["camera"]["optics"] = {"blur_px_per_um": 0.3}
    data["plan"] = {"z": {"bottom": 400, "top": 412, "step": 4}}
    path = tmp_path / "blank.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(path), "--out",
                           str(tmp_path / "sessions")], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stderr and "no focus information" in done.stderr
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert any("no focus information" in w for w in report["warnings"])


@pytest.mark.slow
def test_a_session_that_lost_a_slice_exits_1_naming_its_z(tmp_path):
    """Every position was visited, but the stack has a hole: a script checking $? must not take it as whole."""
    profile_with(tmp_path, "simulated", {"camera": {"drop_frames": 3, "after_slices": 2}})  # retries: 2
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile",
                           str(tmp_path / "simulated-faults.yaml"), "--out", str(tmp_path / "sessions")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1, done.stderr
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    lost_z = report["dropped_frames"][0]["z"]
    assert f"error: 1 planned slice was lost after the retries (z {lost_z:g} µm)" in done.stderr
    assert report["acquired_slices"] == report["planned_slices"] - 1


@pytest.mark.parametrize("name", ["simulated", "simulated-serial-stage", "simulated-micromanager", "simulated-etl"])
def test_the_commented_examples_in_the_simulated_profiles_validate(tmp_path, name):
    text = (PROFILES / f"{name}.yaml").read_text()
    examples = [line for line in text.splitlines() if line.startswith("#   ")]
    assert "# faults:" in text and examples
    for example in examples:  # each uncommented on its own
        path = tmp_path / f"{name}.yaml"
        entry = example[1:].split("  #")[0]
        path.write_text(text + "faults:\n" + entry + "\n")
        assert getattr(load_profile(path).faults, entry.split(":")[0].strip()) is not None


@pytest.mark.filterwarnings("ignore:.*too small to align")
@pytest.mark.parametrize("name,plan", [
    ("simulated", {"z": {"bottom": 0, "top": 6, "step": 3}}),
    ("simulated-etl-stream", {"sweep": {"start": 0, "stop": 0.6, "step": 0.3}, "stream": True}),
    ("simulated-sequenced", {"z": {"bottom": 0, "top": 6, "step": 3}, "hardware_sequencing": "on"})])
def test_an_exposure_longer_than_camera_timeout_s_is_waited_for_stepped_streamed_or_sequenced(tmp_path, name, plan):
    """camera.timeout_s runs beyond the exposure (devices.camera.frame_wait_s): with an exposure of 6 s and
    timeout_s 5 every snap of the simulated camera timed out and the session gave up."""
    profile = profile_with(tmp_path, name, {}, plan, exposure_ms=150, timeout_s=0.05)
    outcome = run(tmp_path, profile)
    report = outcome.report
    assert outcome.completed and report.ended_by is None, report.ended_by
    assert report.acquired_slices == report.planned_slices == 3 and report.retries == []
    assert report.acquisition_mode == {"simulated": "stepped", "simulated-etl-stream": "stream",
                                        "simulated-sequenced": "sequenced"}[name]


def test_a_z_beyond_a_serial_stages_travel_ends_the_session_at_once_naming_the_z_and_focus_limits(tmp_path):
    # Within the default limits (±10000 µm), beyond the controller's ±5000: it answered ':N-4', which was
    # retried 3 times as if transient and named neither the z nor focus.limits.
    profile = profile_with(tmp_path, "simulated-serial-stage", {}, {"z": {"bottom": 4994, "top": 5006, "step": 3}},
                           focus={"speed_um_per_s": 100000})  # (there from 0 well within the settle timeout)
    report = run(tmp_path, profile).report
    assert report.retries == [] and report.acquired_slices == 3   # 4994, 4997, 5000; not 5003
    assert report.ended_by == ("ASI MS-2000 Z stage: refused to move to 5003 µm: error 4: parameter out of range, "
                               "beyond the stage's travel; set focus.limits (now -10000..10000 um) to the stage's "
                               "travel (device replied ':N-4')")



def _asi_answers(answer):
    def spoil(context, opened):
        opened.simulator._where = lambda args: f":A {answer}\r\n".encode()  # (the controller's answer to W Z)
    return spoil


def _micromanager_stage_reports_nan(context, opened):
    context.shared["mm_stage"].get_position_um = lambda: float("nan")


@pytest.mark.parametrize("name, driver, spoil, said", [
    # The ASI controller answered 'W Z' with ':A nan': float() read it, the plan was centred there, and the session
    # said "the plan goes to nan um, outside the limits -10000..10000 um", of a plan that was fine.
    ("simulated-serial-stage", "asi", _asi_answers("nan"),
     "ASI MS-2000 Z stage: reported a position that is not a number (device replied 'nan')"),
    ("simulated-serial-stage", "asi", _asi_answers("inf"),
     "ASI MS-2000 Z stage: reported a position that is not a number (device replied 'inf')"),
    ("simulated-micromanager", "micromanager", _micromanager_stage_reports_nan,
     "Micro-Manager stage SimZ: reported a position that is not a number (nan um)"),
], ids=["asi-nan", "asi-inf", "micromanager-nan"])
def test_a_stage_reporting_a_position_that_is_not_a_number_is_named_as_such(tmp_path, request, name, driver, spoil,
                                                                            said):
    import simulators.rigs  # noqa: F401  (registers the simulated openers)
    from acquisition.rig_registry import opener_for, register_opener
    from devices.errors import DeviceProtocolError

    real = opener_for("focus", driver, True)

    def opener(context):
        opened = real(context)
        spoil(context, opened)
        return opened

    register_opener("focus", driver, opener, simulated=True)
    request.addfinalizer(lambda: register_opener("focus", driver, real, simulated=True))
    profile = profile_with(tmp_path, name, {}, {"z": {"range": 4, "step": 2}})  # centred on the stage's z
    with pytest.raises(DeviceProtocolError) as caught:
        run(tmp_path, profile)
    assert str(caught.value) == said
    assert not list((tmp_path / "sessions").glob("*"))  # refused before a frame was taken
