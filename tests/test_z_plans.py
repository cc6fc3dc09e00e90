"""A profile's z-plans are useq-schema's own models, validated as strictly as the rest of the profile."""
from __future__ import annotations

import pytest
import useq

from acquisition.plans import planned_positions
from acquisition.profile import PlanSettings, ProfileError, load_profile
from tests.test_profile_checks import RIG, write_profile


@pytest.mark.parametrize("z,model,positions", [
    ({"range": 4, "step": 1}, useq.ZRangeAround, [8.0, 9.0, 10.0, 11.0, 12.0]),      # around where the drive is
    ({"bottom": 0, "top": 3, "step": 1}, useq.ZTopBottom, [0.0, 1.0, 2.0, 3.0]),
    ({"bottom": 0, "top": 3, "step": 1, "go_up": False}, useq.ZTopBottom, [3.0, 2.0, 1.0, 0.0]),
    ({"absolute": [5, 1, 3]}, useq.ZAbsolutePositions, [5.0, 1.0, 3.0]),
])
def test_a_z_plan_is_useqs_own_model_and_visits_what_useq_says(z, model, positions):
    plan = PlanSettings.model_validate({"z": z})
    assert isinstance(plan.z, model)
    assert planned_positions(plan, 10.0) == positions


@pytest.mark.parametrize("z,message", [
    ("{range: 4, stp: 1}", r"rig.yaml: plan.z.stp: unknown key 'stp' \(did you mean 'step'\?\); allowed here: go_up, "
                           r"range, step$"),
    # The one typo without a guess and the keys allowed: the plan's kind is a union member.
    ("{bottom: -4, top: 44, step: 3, stpe: 3}", r"rig.yaml: plan.z.stpe: unknown key 'stpe' \(did you mean 'step'\?\); "
                                               r"allowed here: bottom, go_up, step, top$"),
    ("{absolute: [1, 2], step: 1}", r"rig.yaml: plan.z.step: unknown key 'step'; allowed here: absolute, go_up$"),
    ("{bottom: 4, top: 0, step: 1}", r"rig.yaml: plan.z: top \(0\) is below bottom \(4\): swap them"),
    ("{range: 4, step: 0}", r"rig.yaml: plan.z.step: Input should be greater than 0"),
    ("{absolute: [3]}", r"rig.yaml: plan.z.absolute: List should have at least 2 items"),
])
def test_a_bad_z_plan_names_the_key(tmp_path, z, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(write_profile(tmp_path, RIG + f"plan: {{z: {z}}}\n"))


def test_a_sweep_typo_guesses_the_key_with_the_same_letters(tmp_path):
    text = "camera: {driver: simulated}\nfocus: {driver: optotune, port: simulated, unit: dpt}\n" \
           "plan: {sweep: {start: 0, stop: 2, stpe: 0.5}}\n"
    with pytest.raises(ProfileError, match=r"plan.sweep.stpe: unknown key 'stpe' \(did you mean 'step'\?\)"):
        load_profile(write_profile(tmp_path, text))


@pytest.mark.parametrize("plan,positions", [
    # Float noise in session.json and the stack: 0.19999999999999996, -0.39999999999999947.
    ({"sweep": {"start": 4.4, "stop": -0.4, "step": 0.3}},
     [4.4, 4.1, 3.8, 3.5, 3.2, 2.9, 2.6, 2.3, 2.0, 1.7, 1.4, 1.1, 0.8, 0.5, 0.2, -0.1, -0.4]),
    ({"sweep": {"start": -0.4, "stop": 0.2, "step": 0.3}}, [-0.4, -0.1, 0.2]),
    ({"z": {"bottom": 0.1, "top": 0.7, "step": 0.2}}, [0.1, 0.3, 0.5, 0.7]),
    ({"sweep": {"start": 0.3, "stop": -0.3, "step": 0.1}}, [0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3]),  # 0: -5.6e-17
])
def test_planned_positions_carry_no_float_noise_and_no_minus_zero(plan, positions):
    import math

    planned = planned_positions(PlanSettings.model_validate(plan), 0.0)
    assert planned == positions  # exactly: as the profile wrote them
    assert all(math.copysign(1.0, p) == 1.0 for p in planned if p == 0)


def run_session_errors(tmp_path, profile: str, capsys, **sections) -> list[str]:
    """run_session's "error:" lines for a shipped simulated profile, small, with ``sections`` merged in."""
    import yaml

    import run_session
    from tests.conftest import REPO_ROOT

    data = yaml.safe_load((REPO_ROOT / "profiles" / f"{profile}.yaml").read_text())
    data["camera"]["specimen"].update(height_px=96, width_px=128)
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if key != "plan" else value
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    status = run_session.main(["--profile", str(path), "--out", str(tmp_path / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 1 and not list((tmp_path / "out").glob("*/stack.ome.tif"))  # refused before anything moved
    return errors


@pytest.mark.hardware_sim
@pytest.mark.parametrize("focus,sweep,message", [
    # The lens driver clamped 300 mA to its 292.84 mA in silence; the settle check then failed mid-sweep.
    ({"unit": "mA", "limits": [-1000, 1000]}, {"start": 0, "stop": 600, "step": 50},
     "error: Optotune lens: the plan goes to 600 mA, beyond what the device reports it can reach: "
     "-292.84..292.769 mA (the lens's maximum current, CrMA: 292.84 mA); focus.limits (-1000..1000 mA) do not "
     "rule it out: set focus.limits within the device's range and keep the plan inside them"),
    # A 0..60 dpt sweep 'succeeded' on a lens that reaches about 14 dpt.
    ({"limits": [-100, 100]}, {"start": 0, "stop": 60, "step": 5},
     "error: Optotune lens: the plan goes to 60 dpt, beyond what the device reports it can reach: "
     "-13.91..13.91 dpt (the lens's focal-power range for 20 to 45 °C, as the driver answered PwTA); "
     "focus.limits (-100..100 dpt) do not rule it out"),
])
def test_a_lens_plan_beyond_what_the_lens_reports_it_reaches_is_refused_as_the_rig_opens(tmp_path, capsys, focus,
                                                                                          sweep, message):
    errors = run_session_errors(tmp_path, "simulated-etl", capsys, focus=focus, plan={"sweep": sweep})
    assert len(errors) == 1 and errors[0].startswith(message)


@pytest.mark.hardware_sim
@pytest.mark.parametrize("profile,focus,plan,message", [
    # The profile sets no focus.limits: the stage's are the driver's default, and setting them can widen them.
    ("simulated-serial-stage", {}, {"z": {"bottom": 0, "top": 20000, "step": 5000}},
     "error: ASI MS-2000 Z stage: the plan goes to 20000 um, outside the limits -10000..10000 um, the driver's "
     "default (no focus.limits given): keep the plan inside them, or set focus.limits to the range the device "
     "really reaches"),
    # A lens in current mode without focus.limits is limited to its own register: no focus.limits widens that.
    ("simulated-etl", {"unit": "mA"}, {"sweep": {"start": 0, "stop": 400, "step": 100}},
     "error: Optotune lens: the plan goes to 400 mA, beyond what the device reports it can reach: "
     "-292.84..292.769 mA (the lens's maximum current, CrMA: 292.84 mA); keep the plan inside it"),
    ("simulated-etl", {}, {"sweep": {"start": 0, "stop": 20, "step": 5}},
     "error: Optotune lens: the plan goes to 20 dpt, beyond what the device reports it can reach: -13.91..13.91 dpt "
     "(the lens's focal-power range for 20 to 45 °C, as the driver answered PwTA); keep the plan inside it"),
])
def test_a_plan_beyond_the_drives_own_range_names_the_device_not_a_focus_limits_the_profile_lacks(
        tmp_path, capsys, profile, focus, plan, message):
    # It said "(focus.limits)", or "focus.limits (-5..15 dpt) do not rule it out", of a profile without them.
    assert run_session_errors(tmp_path, profile, capsys, focus=focus, plan=plan) == [message]


@pytest.mark.hardware_sim
def test_a_plan_beyond_the_profiles_focus_limits_names_them(tmp_path, capsys):
    errors = run_session_errors(tmp_path, "simulated", capsys, plan={"z": {"bottom": 0, "top": 2000, "step": 500}})
    assert errors == ["error: simulated stage: the plan goes to 2000 um, outside the limits -1000..1000 um "
                      "(focus.limits)"]


@pytest.mark.hardware_sim
def test_a_lens_in_current_mode_without_focus_limits_is_limited_to_what_its_register_reaches():
    from devices.errors import PositionOutOfRangeError
    from tests.devices_fixtures import optotune_lens

    with optotune_lens("current") as (lens, _):
        lens.check_reachable([-292.84, 0.0, 292.7], "the plan")
        # The register's top is a step below CrMA: sent there, the lens stopped short and never 'settled'.
        with pytest.raises(PositionOutOfRangeError, match=r"292.84 mA is beyond what the device reports it can "
                                                          r"reach: -292.84..292.769 mA \(the lens's maximum current"):
            lens.move_to(292.84)


@pytest.mark.hardware_sim
def test_a_z_step_between_the_stages_steps_is_warned_of_naming_both(tmp_path):
    # The ASI stage steps by 0.1 µm: 0.15 and 0.45 were recorded as planned while the stage went to 0.1-µm steps.
    from acquisition.session import run_profile
    from tests.test_profile_faults import profile_with

    profile = profile_with(tmp_path, "simulated-serial-stage", {}, {"z": {"bottom": 0, "top": 0.6, "step": 0.15}})
    report = run_profile(profile, tmp_path / "sessions", progress=False).report.to_json()
    assert ("ASI MS-2000 Z stage steps by 0.1 um: 2 of the 5 planned positions (0.15, 0.45 um) fall between its "
            "steps, so the drive goes to the nearest step while the stack records the planned position (off by up "
            "to 0.05 um); make the plan's step and start multiples of 0.1 um") in report["warnings"]


@pytest.mark.hardware_sim
def test_positions_on_the_drives_grid_or_off_it_by_a_hair_of_their_spacing_are_not_warned_of():
    from acquisition.plans import off_grid_warning, repeated_focus_warning
    from tests.devices_fixtures import asi_stage, optotune_lens

    with asi_stage() as (stage, _):
        assert repeated_focus_warning([-3.0, 0.0, 3.0, 0.3], stage) is None
    with optotune_lens("current") as (lens, _):   # steps by 0.0715 mA: 50 mA apart, 0.036 at most is 0.07%
        assert off_grid_warning([0.0, 50.0, 100.0, 150.0], lens) is None


@pytest.mark.hardware_sim
def test_a_plan_whose_step_the_depth_map_cannot_hold_is_refused_before_anything_moves(tmp_path, capsys):
    """Steps of 1e-4 µm at 1e4 µm: the whole stack was acquired, then its fusion refused (float32 rounds every z to
    10000). The plan is refused as the rig opens, naming the positions and the step the depth map holds there."""
    errors = run_session_errors(tmp_path, "simulated", capsys, focus={"limits": [-20000, 20000]},
                                plan={"z": {"bottom": 10000, "top": 10000.0008, "step": 0.0001}})
    assert errors == ["error: plan.z: its slices' z (10000, 10000.0001, 10000.0002, ... µm: a step of 0.0001 µm) "
                      "cannot be told apart in the depth map, which holds z as float32 (about 7 significant digits): "
                      "give it a step of at least 0.000977 µm (the depth map's at 10000 µm); nothing was acquired"]
