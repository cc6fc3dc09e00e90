"""The Lens Driver 4's answer to a mode switch, as the real firmware sends it: MwCA (focal-power mode) answers
'MCA', a status byte, then the focal-power range (max, min), before its CRC and CR LF: 12 bytes, not 7."""
from __future__ import annotations

import struct

import pytest

from devices.errors import DeviceProtocolError
from devices.optotune_lens import crc16_arc
from tests.devices_fixtures import optotune_lens

pytestmark = pytest.mark.hardware_sim


def answers_on_the_wire(simulator, command: bytes) -> list[bytes]:
    """What the simulator sends back for one framed ``command`` (its answer as the driver reads it)."""
    return simulator.handle(command + struct.pack("<H", crc16_arc(command)))


def test_the_simulator_answers_mwca_as_the_firmware_does():
    from simulators.optotune_lens import OptotuneLensSimulator

    with OptotuneLensSimulator() as simulator:
        (answer,) = answers_on_the_wire(simulator, b"MwCA")
    assert len(answer) == 12 and answer.startswith(b"MCA\x00") and answer.endswith(b"\r\n")
    high, low = struct.unpack(">hh", answer[4:8])
    # PrDA's scale: (dpt + 5) * 200 for firmware type A; 292.84 mA * 0.05 dpt/mA reaches 14.64 dpt at 20 °C
    assert (high / 200 - 5, low / 200 - 5) == pytest.approx((14.64, -14.64), abs=0.01)


def test_the_lens_opens_in_focal_power_mode_against_the_firmware_s_answer_and_keeps_its_range():
    with optotune_lens("focal power") as (lens, simulator):
        assert lens.mode == "focal power" and simulator.mode == b"C"
        assert lens.device_range.lower == pytest.approx(-13.91, abs=0.01)  # PwTA's, for 20..45 °C
        lens.set_focal_power_dpt(2.5)
        lens.wait_until_settled()
        assert lens.focal_power_dpt() == pytest.approx(2.5, abs=0.01)


def test_a_focal_power_range_upside_down_in_the_mwca_answer_is_a_device_error_naming_it():
    from devices.optotune_lens import OptotuneLens
    from simulators.optotune_lens import OptotuneLensSimulator

    # (its range at 20 °C: -14.64 dpt up to 14.64, upside down)
    with OptotuneLensSimulator(dpt_per_ma=-0.05) as simulator, pytest.raises(DeviceProtocolError) as caught:
        OptotuneLens(simulator.port, timeout_s=0.5)
    assert str(caught.value).startswith("Optotune lens: answered MwCA (its focal-power range on entering focal-power "
                                        "mode) with -14.64 dpt at most and 14.64 at least: no range (device replied ")
