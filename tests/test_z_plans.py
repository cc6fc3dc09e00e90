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
    ("{range: 4, stp: 1}", r"rig.yaml: plan.z.stp: unknown key 'stp'"),
    ("{bottom: 4, top: 0, step: 1}", r"rig.yaml: plan.z: top \(0\) is below bottom \(4\): swap them"),
    ("{range: 4, step: 0}", r"rig.yaml: plan.z.step: Input should be greater than 0"),
    ("{absolute: [3]}", r"rig.yaml: plan.z.absolute: List should have at least 2 items"),
])
def test_a_bad_z_plan_names_the_key(tmp_path, z, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(write_profile(tmp_path, RIG + f"plan: {{z: {z}}}\n"))
