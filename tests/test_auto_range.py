"""The automatic z-range: a coarse pre-sweep of binned frames finds where the specimen has detail;
the fine stack covers it with at most 30% more slices than the true height range needs."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from acquisition.auto_range import AutoRangeError, PreSweepAnalysis, binned, coarse_positions, fine_positions, within
from acquisition.profile import Profile, ProfileError, load_profile
from acquisition.session import run_profile
from benchmarks.auto_range import pre_sweep
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map
from tests.conftest import REPO_ROOT

STEP_UM, COARSE_STEP_UM = 3.0, 6.0


def slices_needed(lo_um: float, hi_um: float, step_um: float) -> int:
    """Slices a stack at ``step_um`` needs to reach from lo to hi."""
    return math.ceil((hi_um - lo_um) / step_um - 1e-9) + 1


# Textures that show detail across the whole field, on the simulator's surfaces (steps below).
@pytest.mark.parametrize("surface", ["plane", "dome", "irregular"])
@pytest.mark.parametrize("texture", ["coffee", "gravel", "brick"])
def test_auto_range_covers_the_true_heights_with_at_most_30_percent_more_slices(texture, surface):
    shape = (480, 640)
    specimen = VirtualSpecimen(load_texture(texture, shape),
                               make_height_map(surface, shape, 30.0, np.random.default_rng(0)))
    analysis = pre_sweep(specimen)
    positions = fine_positions(*analysis.range_um(), STEP_UM, margin_steps=1)
    true_lo, true_hi = float(specimen.height_um.min()), float(specimen.height_um.max())
    assert positions[0] <= true_lo and positions[-1] >= true_hi
    assert len(positions) <= 1.3 * slices_needed(true_lo, true_hi, STEP_UM)
    assert len(analysis.z_um) < len(coarse_positions((-30.0, 80.0), COARSE_STEP_UM))  # the sweep stopped early


def test_fine_positions_cover_the_range_plus_a_step_either_side_centred():
    assert fine_positions(0.0, 6.0, 3.0, margin_steps=1) == [-3.0, 0.0, 3.0, 6.0, 9.0]
    positions = fine_positions(0.0, 7.0, 3.0, margin_steps=1)
    assert positions[0] <= -3.0 and positions[-1] >= 10.0 and np.allclose(np.diff(positions), 3.0)


@pytest.mark.parametrize("texture", ["coffee", "gravel"])
def test_auto_range_covers_every_step_of_a_stepped_specimen(texture):
    shape = (480, 640)
    specimen = VirtualSpecimen(load_texture(texture, shape), make_height_map("steps", shape, 30.0))
    positions = fine_positions(*pre_sweep(specimen).range_um(), STEP_UM, margin_steps=1)
    true_lo, true_hi = float(specimen.height_um.min()), float(specimen.height_um.max())
    assert positions[0] <= true_lo and positions[-1] >= true_hi
    assert len(positions) <= 1.3 * slices_needed(true_lo, true_hi, STEP_UM)


def test_a_specimen_outside_the_search_range_is_a_clear_error():
    shape = (240, 320)
    specimen = VirtualSpecimen(load_texture("gravel", shape), make_height_map("dome", shape, 20.0))
    with pytest.raises(AutoRangeError, match=r"no part of the frame came into focus between 200 and 300 µm"):
        pre_sweep(specimen, search_um=(200.0, 300.0)).range_um()


@pytest.mark.parametrize("search_um,end", [((0.0, 80.0), "bottom"), ((-30.0, 15.0), "top")])
def test_a_search_range_that_cuts_the_specimen_stacks_to_its_end_and_warns(search_um, end):
    shape = (480, 640)
    specimen = VirtualSpecimen(load_texture("gravel", shape), make_height_map("dome", shape, 30.0))
    analysis = pre_sweep(specimen, search_um)
    lo, hi = analysis.range_um()
    if end == "bottom":  # the dome's rim at 0 µm peaks at the first coarse frame: it counts
        assert lo <= 0.0 and hi >= 27.0
    else:
        assert hi >= 15.0 and lo <= 0.0
    warnings = analysis.edge_warnings()
    assert len(warnings) == 1 and f"still in focus at the {end} of the pre-sweep" in warnings[0]
    assert "widen auto_range.search_um" in warnings[0]


@pytest.mark.parametrize("search_um", [(10.0, 22.0), (5.0, 25.0)])
def test_a_search_range_inside_a_deep_specimen_says_so(search_um):
    # (5, 25): some tiles peak inside, but the frame's detail hardly changes: a range would be a guess
    shape = (480, 640)
    specimen = VirtualSpecimen(load_texture("gravel", shape), make_height_map("dome", shape, 30.0))
    with pytest.raises(AutoRangeError, match=r"or is deeper than it on both sides; widen auto_range.search_um"):
        pre_sweep(specimen, search_um=search_um).range_um()


def test_binning_that_leaves_too_few_tiles_is_a_clear_error():
    specimen = VirtualSpecimen(load_texture("gravel", (480, 640)), make_height_map("dome", (480, 640), 30.0))
    analysis = PreSweepAnalysis()
    with pytest.raises(AutoRangeError, match=r"a binned pre-sweep frame of 20x15 px holds fewer than 3 x 3 tiles .* "
                                             r"lower auto_range.binning"):
        analysis.add(0.0, binned(specimen.texture, 32))


@pytest.mark.hardware_sim
def test_autorange_profile_records_the_range_stacked_and_the_true_one(tmp_path):
    outcome = run_profile(load_profile(REPO_ROOT / "profiles" / "simulated-autorange.yaml"), tmp_path, progress=False)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquired_slices"] == report["planned_slices"]
    (lo, hi), (true_lo, true_hi) = report["z_range_um"], report["truth_range_um"]
    assert lo <= true_lo and hi >= true_hi
    assert report["planned_slices"] <= 1.3 * slices_needed(true_lo, true_hi, 3.0)
    assert report["pre_sweep"]["stopped_early"] and report["pre_sweep"]["frames"] < 19
    assert report["psnr_db"] > report["best_slice_psnr_db"] + 3


@pytest.mark.hardware_sim
def test_a_search_that_cuts_the_specimen_warns_and_stacks_from_the_cut_within_the_limits(tmp_path):
    profile = load_profile(REPO_ROOT / "profiles" / "simulated-autorange.yaml")
    data = profile.model_dump(exclude_none=True)
    data["plan"]["auto_range"]["search_um"] = (0.0, 80.0)   # the dome's rim lies at 0 µm ...
    data["focus"]["limits"] = (0.0, 1000.0)                 # ... on the coverslip: the stage goes no lower
    outcome = run_profile(Profile.model_validate(data), tmp_path, progress=False)
    report = outcome.report
    assert outcome.completed and report.z_range_um is not None
    assert report.z_range_um[0] == 0.0 and report.z_range_um[1] >= 30.0   # the whole dome, nothing below 0
    assert any("still in focus at the bottom of the pre-sweep (0 µm)" in w for w in report.warnings)
    assert report.psnr_db > report.best_slice_psnr_db + 10


def test_a_stack_is_moved_inside_an_end_it_cannot_pass_and_keeps_its_step():
    assert within([-6.0, -3.0, 0.0, 3.0, 6.0], 0.0, 100.0) == [0.0, 3.0, 6.0, 9.0, 12.0]
    assert within([90.0, 95.0, 100.0, 105.0], -100.0, 100.0) == [85.0, 90.0, 95.0, 100.0]
    assert within([-6.0, 0.0, 6.0, 12.0], 0.0, 10.0) == [0.0, 6.0, 10.0]   # longer than the room: filled


@pytest.mark.hardware_sim
def test_a_pre_sweep_that_finds_nothing_leaves_no_empty_session_folder(tmp_path):
    profile = load_profile(REPO_ROOT / "profiles" / "simulated-autorange.yaml")
    data = profile.model_dump(exclude_none=True)
    data["plan"]["auto_range"]["search_um"] = (200.0, 260.0)   # far above the 30 µm dome
    with pytest.raises(AutoRangeError, match="no part of the frame came into focus between 200 and 260 µm"):
        run_profile(Profile.model_validate(data), tmp_path / "sessions", progress=False)
    assert list((tmp_path / "sessions").iterdir()) == []


def autorange_rig_profile() -> Profile:
    """The auto-range profile with a small specimen (6 x 8 binned tiles: enough to find its range)."""
    data = load_profile(REPO_ROOT / "profiles" / "simulated-autorange.yaml").model_dump(exclude_none=True)
    data["camera"]["specimen"].update(height_px=240, width_px=320)
    return Profile.model_validate(data)


def error_5(rig, role: str, times: int, frames_before: int = 0) -> None:
    """Have the simulated ``role`` answer with error 5, ``times`` times (a camera: from its frame after
    ``frames_before`` more)."""
    from acquisition.profile import FaultSettings
    from simulators.rigs import commit_fault

    simulator = rig.simulated[role]
    start = functools.partial(commit_fault, simulator, FaultSettings(error_reply=5, times=times))
    if frames_before:
        simulator.faults.schedule(frames_before, start)
    else:
        start()


@pytest.mark.hardware_sim
@pytest.mark.parametrize("role,what", [("camera", "snap"), ("focus", "move")])
def test_a_transient_error_in_the_pre_sweep_is_retried_and_recorded(tmp_path, role, what):
    from acquisition.rig import open_rig
    from acquisition.session import Session, new_session_folder

    profile = autorange_rig_profile()
    rig = open_rig(profile)
    try:
        error_5(rig, role, times=1)   # the pre-sweep's first move or frame
        outcome = Session(profile, rig, new_session_folder(tmp_path)).run(progress=False)
    finally:
        rig.close()
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquired_slices"] == report["planned_slices"] and report["retries"] == []
    retries = report["pre_sweep"]["retries"]
    assert [(r["slice"], r["what"], r["attempt"]) for r in retries] == [(0, what, 1)]
    assert "error 5" in retries[0]["error"]


@pytest.mark.hardware_sim
def test_a_pre_sweep_still_failing_after_its_retries_is_one_clear_error_and_the_focus_goes_back():
    from acquisition.pre_sweep import find_z_range
    from acquisition.rig import open_rig
    from devices.errors import DeviceErrorReply

    profile = autorange_rig_profile()
    rig = open_rig(profile)
    try:
        error_5(rig, "camera", times=3, frames_before=2)   # the third frame's try and plan.retries' 2
        with pytest.raises(DeviceErrorReply, match=r"^simulated camera: camera error 5, in the auto-range pre-sweep "
                                                   r"at -18 µm \(coarse frame 3 of 20\) after 3 tries "
                                                   r"\(plan.retries: 2\); the session did not start$"):
            find_z_range(profile, rig)
        rig.focus.wait_until_settled()
        assert rig.focus.position() == 0.0   # where it was before the pre-sweep
    finally:
        rig.close()


@pytest.mark.parametrize("auto_range,message", [
    ({"search_um": [10, 0], "step_um": 3}, r"plan.auto_range: search_um: the bottom 10 must be below the top 0"),
    ({"search_um": [0, 10], "step_um": 3, "coarse_step_um": 6},
     r"plan.auto_range: the coarse step 6 µm gives fewer than 3 pre-sweep frames"),
    ({"search_um": [0, 50], "step": 3}, r"plan.auto_range.step: unknown key 'step'"),
    ({"search_um": [-30, float("inf")], "step_um": 3}, r"plan.auto_range.search_um.1: Input should be a finite number"),
    # A misspelt required key: one line, naming the key it misspells (not also "search_um: Field required").
    ({"serach_um": [0, 50], "step_um": 3},
     r"^[^\n]*rig.yaml: plan.auto_range.serach_um: unknown key 'serach_um' \(did you mean 'search_um'\?\)[^\n]*$"),
])
def test_bad_auto_range_settings_are_named(tmp_path, auto_range, message):
    path = tmp_path / "rig.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"camera": {"driver": "simulated"}, "focus": {"driver": "simulated"},
                                    "plan": {"auto_range": auto_range}}))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


@pytest.mark.parametrize("unit", ["dpt", "mA"])
def test_a_z_plan_in_um_on_a_tunable_lens_is_refused_naming_plan_z_and_the_lens_unit(tmp_path, unit):
    # plan.z {bottom: 0, top: 4, step: 0.5} (µm, as the README says) ran on a lens as 0..4 dpt, without a word.
    path = tmp_path / "etl.yaml"
    path.write_text("camera: {driver: simulated}\n"
                    f"focus: {{driver: optotune, port: simulated, unit: {unit}}}\n"
                    "plan: {z: {bottom: 0, top: 4, step: 0.5}}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert str(caught.value) == f"{path}: plan.z: a z-plan is in µm, for a stage; this focus drive moves in {unit}: " \
                                f"give plan.sweep ({{start, stop, step}} in {unit})"


def test_auto_range_with_a_tunable_lens_is_refused():
    with pytest.raises(ValueError, match=r"an automatic z-range is found with a stage in µm"):
        Profile.model_validate({"camera": {"driver": "simulated"},
                                "focus": {"driver": "optotune", "port": "simulated", "unit": "dpt"},
                                "plan": {"auto_range": {"search_um": [0, 50], "step_um": 3}}})


@pytest.mark.parametrize(("focus", "plan"), [
    # A tunable lens's profile with a stage swapped in: its sweep of 0..1 dpt ran as 0..1 µm, without a word.
    ("{driver: simulated}", "{sweep: {start: 0, stop: 1, step: 0.1}}"),
    # Streamed on a stage: frames exposed while it travelled were fused at their planned z (20 dB where stepping
    # the same positions gave 37.7 dB), exit 0, no warning.
    ("{driver: asi, port: simulated, speed_um_per_s: 20}", "{sweep: {start: -3, stop: 33, step: 3}, stream: true}"),
])
def test_a_sweep_on_a_stage_is_refused_naming_plan_sweep_and_the_stage_unit(tmp_path, focus, plan):
    path = tmp_path / "stage.yaml"
    path.write_text(f"camera: {{driver: simulated}}\nfocus: {focus}\nplan: {plan}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    driver = "simulated" if "simulated}" in focus else "asi"
    assert str(caught.value) == f"{path}: plan.sweep: a sweep is for a tunable lens, in dpt or mA; this focus drive " \
                                f"({driver}) moves in µm: give plan.z ({{bottom, top, step}} in µm)"


# -- fine steps the depth map (float32) cannot hold: refused at load where the step alone decides, else before the stack

@pytest.mark.parametrize("auto_range,message", [
    # At 1e4 µm float32 holds z every 0.000977 µm: steps of 1e-4 were acquired whole, then their fusion refused.
    ({"search_um": [9990, 10010], "step_um": 0.0001},
     r"plan.auto_range: step_um 0.0001 µm is finer than the depth map holds anywhere in search_um \(9990..10010 µm\): "
     r"it holds z as float32 \(about 7 significant digits\), every 0.000977 µm at 9990 µm, so wherever the pre-sweep "
     r"finds the specimen some of the fine stack's slices cannot be told apart; give it a step of at least 0.000977 "
     r"µm \(the depth map's at 10010 µm\)"),
    ({"search_um": [-10010, -9990], "step_um": 1e-5, "margin_steps": 2}, r"plan.auto_range: step_um 1e-05 µm is finer"),
])
def test_an_auto_range_step_finer_than_the_depth_map_holds_anywhere_in_its_search_is_refused_at_load(
        tmp_path, auto_range, message):
    path = tmp_path / "rig.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"camera": {"driver": "simulated"}, "focus": {"driver": "simulated"},
                                    "plan": {"auto_range": auto_range}}))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


@pytest.mark.parametrize("auto_range", [
    {"search_um": [-30, 10010], "step_um": 0.0001},   # near 0 the depth map holds it: the range found decides
    {"search_um": [9990, 10010], "step_um": 0.0007},   # two steps reach past its spacing: the range found decides
    {"search_um": [9990, 10010], "step_um": 0.0001, "margin_steps": 0},   # a stack of one slice may be found
])
def test_an_auto_range_step_that_only_the_range_found_decides_loads(tmp_path, auto_range):
    path = tmp_path / "rig.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"camera": {"driver": "simulated"}, "focus": {"driver": "simulated"},
                                    "plan": {"auto_range": auto_range}}))
    assert load_profile(path).plan.auto_range.step_um == auto_range["step_um"]


@pytest.mark.hardware_sim
def test_a_range_found_that_the_step_cuts_into_slices_the_depth_map_cannot_tell_apart_is_refused_before_the_stack(
        tmp_path, monkeypatch):
    """A specimen found at 10000..10000.003 µm (a MOCK of the pre-sweep's finding: the simulated slide lies at 0..30
    µm) stacked every 0.0007 µm: float32 holds z there every 0.000977 µm. The stack was acquired whole and then its
    fusion refused; it is refused once the range is known, before the stack's first move, the focus back where it
    was and no stack file written."""
    from acquisition.rig import open_rig
    from acquisition.session import Session, new_session_folder

    data = autorange_rig_profile().model_dump(exclude_none=True)
    data["focus"].update(limits=(-20000.0, 20000.0), speed_um_per_s=1e6)
    data["plan"]["auto_range"].update(search_um=(9990.0, 10010.0), step_um=0.0007, coarse_step_um=5.0)
    profile = Profile.model_validate(data)
    monkeypatch.setattr(PreSweepAnalysis, "range_um", lambda self: (10000.0, 10000.003))
    rig = open_rig(profile)
    try:
        folder = new_session_folder(tmp_path / "sessions")
        with pytest.raises(AutoRangeError) as refused:
            Session(profile, rig, folder).run(progress=False)
        rig.focus.wait_until_settled()
        assert rig.focus.position() == 0.0   # where it was before the pre-sweep
    finally:
        rig.close()
    assert str(refused.value) == (
        "plan.auto_range: the range its pre-sweep found (10000..10000.003 µm) in steps of 0.0007 µm: its slices' z "
        "(9999.9998, 10000 µm: a step of 0.0007 µm) cannot be told apart in the depth map, which holds z as float32 "
        "(about 7 significant digits): give it a step of at least 0.000977 µm (the depth map's at 10000 µm); the "
        "session did not start")
    assert not list(folder.glob("*.tif"))
