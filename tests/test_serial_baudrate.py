"""A serial focus drive's baud rate: from the profile (focus.baudrate) to the port, over the simulators'
pseudo-terminals, which hear a driver at another rate than their own as noise, as a real line does."""
from __future__ import annotations

import pytest

from acquisition.profile import Profile, load_profile
from acquisition.rig import open_rig
from acquisition.rig_registry import RigContext, opener_for
from acquisition.session import Session, new_session_folder
from devices.errors import DeviceProtocolError
from simulators.asi_stage import AsiStageSimulator
from simulators.optotune_lens import OptotuneLensSimulator
from tests.conftest import REPO_ROOT
from tests.test_sessions import small

pytestmark = pytest.mark.hardware_sim

# driver -> (its simulator, the focus section's other keys, the device's own rate, another it can be set to)
SERIAL_DRIVES = {"asi": (AsiStageSimulator, {"unit": "um"}, 9600, 19200),
                 "optotune": (OptotuneLensSimulator, {"unit": "dpt"}, 115200, 57600)}
# What each driver says when it hears noise at the rate it tried.
WRONG_RATE_SAYS = {"asi": r"unexpected answer to 'M Z=10' at {baud} baud; set focus.baudrate to the controller's "
                          r"rate \(device replied b'",
                   "optotune": r"handshake failed at {baud} baud: expected 'Ready'"}


def rig_on(port: str, driver: str, **focus) -> Profile:
    _, keys, _, _ = SERIAL_DRIVES[driver]
    return Profile.model_validate({"camera": {"driver": "simulated"},
                                   "focus": {"driver": driver, "port": port, **keys, **focus},
                                   "plan": {"z": {"range": 4, "step": 1}} if keys["unit"] == "um"
                                   else {"sweep": {"start": 0, "stop": 2, "step": 1}}})


def open_and_move(profile: Profile) -> float:
    """Open the profile's focus drive with the real driver's opener, move it to 1 and say where it is."""
    part = opener_for("focus", profile.focus.driver, simulated=False)(RigContext(profile))
    try:
        part.device.move_to(1.0)
        part.device.wait_until_settled(2.0)
        return part.device.position()
    finally:
        part.close()


@pytest.mark.parametrize("driver", SERIAL_DRIVES)
def test_the_profiles_baudrate_reaches_the_driver_on_a_named_port(driver):
    simulator_type, _, default_baud, other_baud = SERIAL_DRIVES[driver]
    with simulator_type(baudrate=other_baud) as simulator:   # a device set to another rate than its default
        # Left out, the port runs at the device's default: the device hears noise, and the driver says
        # which rate it tried.
        with pytest.raises(DeviceProtocolError, match=WRONG_RATE_SAYS[driver].format(baud=default_baud)):
            open_and_move(rig_on(simulator.port, driver))
        assert open_and_move(rig_on(simulator.port, driver, baudrate=other_baud)) == pytest.approx(1.0, abs=0.01)


def test_a_lens_driver_at_another_rate_says_which_rate_it_tried_and_the_devices():
    from devices.optotune_lens import OptotuneLens

    with OptotuneLensSimulator() as simulator, \
            pytest.raises(DeviceProtocolError, match=r"Optotune lens: handshake failed at 9600 baud: expected 'Ready' "
                                                     r"\(the Lens Driver 4 talks at 115200\)"):
        OptotuneLens(simulator.port, timeout_s=0.5, baudrate=9600)


def test_a_simulated_serial_stage_runs_at_the_profiles_baudrate(tmp_path):
    data = small(load_profile(REPO_ROOT / "profiles" / "simulated-serial-stage.yaml")).model_dump(exclude_none=True)
    data["focus"]["baudrate"] = 115200
    profile = Profile.model_validate(data)
    rig = open_rig(profile)
    try:
        assert rig.simulated["focus"].baudrate == 115200   # the simulator is set as the profile says the port is
        outcome = Session(profile, rig, new_session_folder(tmp_path)).run(progress=False)
    finally:
        rig.close()
    assert outcome.completed and outcome.report.acquired_slices == outcome.report.planned_slices


class StageAnsweringText(AsiStageSimulator):
    """Understands the driver (same rate) but answers readable text that is not the protocol's."""

    def handle(self, data: bytes) -> list[bytes]:
        return [b"?? unknown\r\n"]


def test_a_readable_answer_the_stage_should_not_give_is_not_blamed_on_the_rate():
    from devices.asi_stage import AsiZStage

    with StageAnsweringText() as simulator:
        stage = AsiZStage(simulator.port, timeout_s=0.5)
        try:
            with pytest.raises(DeviceProtocolError) as raised:
                stage.move_to(1.0)
        finally:
            stage.close()
    assert "unexpected answer to 'M Z=10' (device replied b'?? unknown')" in str(raised.value)
    assert "baud" not in str(raised.value)


def test_one_garbled_answer_after_good_ones_is_not_blamed_on_the_rate(tmp_path):
    # The port answered correctly many times, then one answer came as noise: the retry was recorded as
    # "unexpected answer to 'M Z=30' at 9600 baud; set focus.baudrate to the controller's rate".
    from tests.test_profile_faults import profile_with

    profile = profile_with(tmp_path, "simulated-serial-stage", {"focus": {"garbage": True, "times": 1,
                                                                          "after_slices": 2}})
    rig = open_rig(profile)
    try:
        outcome = Session(profile, rig, new_session_folder(tmp_path)).run(progress=False)
    finally:
        rig.close()
    assert outcome.completed and [(r.slice, r.what) for r in outcome.report.retries] == [(2, "move")]
    error = outcome.report.retries[0].error
    assert error.startswith("ASI MS-2000 Z stage: unexpected answer to 'M Z=30', garbled on the line: the controller "
                            "answered correctly before on this port (device replied b'")
    assert "baud" not in error
