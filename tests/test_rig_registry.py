"""The rig registry: acquisition opens devices through it and knows no simulator."""
from __future__ import annotations

import subprocess
import sys

import pytest

from acquisition.profile import SPECIMEN_TEXTURES, load_profile
from acquisition.rig import open_rig
from acquisition.rig_registry import opener_for
from simulators.specimens import TEXTURES
from tests.conftest import REPO_ROOT
from tests.test_sessions import small


def test_the_profile_knows_the_textures_the_simulators_render():
    assert SPECIMEN_TEXTURES == TEXTURES


def test_a_driver_without_an_opener_is_an_error_naming_the_known_ones():
    with pytest.raises(LookupError, match=r"no opener for a nosuch focus; known: .*asi.*simulated asi"):
        opener_for("focus", "nosuch", simulated=False)


def test_a_program_that_does_not_register_the_simulators_is_told_where_they_come_from():
    code = ("from acquisition.profile import load_profile\nfrom acquisition.rig import open_rig\n"
            "open_rig(load_profile('profiles/simulated.yaml'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode != 0
    assert "no opener for a simulated simulated focus (the simulators register theirs when simulators.rigs is " \
           "imported)" in done.stderr


@pytest.mark.hardware_sim
def test_a_simulated_rig_comes_with_its_simulators_by_role_and_its_ground_truth():
    rig = open_rig(small(load_profile(REPO_ROOT / "profiles" / "simulated-serial-stage.yaml")))
    try:
        assert set(rig.simulated) == {"focus", "camera"}
        rig.focus.move_to(5.0)  # the real driver, on the simulator's pseudo-terminal
        rig.focus.wait_until_settled(5.0)
        assert rig.simulated["focus"].position_um() == pytest.approx(5.0, abs=0.01)
        truth = rig.truth_for({})
        assert truth is not None and truth.shape[:2] == (96, 128)
    finally:
        rig.close()
