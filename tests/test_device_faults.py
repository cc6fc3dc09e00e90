"""Every fault a simulator can commit becomes the driver's typed error, within its timeout."""
from __future__ import annotations

import contextlib
import re
import struct
import time
from typing import Any

import pytest

from devices.errors import (DeviceDisconnectedError, DeviceErrorReply, DeviceNotFoundError, DeviceProtocolError,
                            DeviceTimeoutError, PositionOutOfRangeError)
from tests.devices_fixtures import asi_stage, optotune_lens, unicore_rig

pytestmark = pytest.mark.hardware_sim

TIMEOUT_S = 0.5  # the drivers' timeout in these fixtures


def elapsed(call, bound_s: float = 5 * TIMEOUT_S):
    """Run ``call``; it must end within ``bound_s`` (5x what it takes idle: a busy machine is slow, a hang is not)."""
    started = time.monotonic()
    try:
        call()
    finally:
        took = time.monotonic() - started
        assert took < bound_s, f"took {took:.2f} s"


SERIAL_DEVICES = {"asi": (asi_stage, lambda d: d.position()), "optotune": (optotune_lens, lambda d: d.position())}


@pytest.mark.parametrize("device", SERIAL_DEVICES)
def test_silent_device_times_out(device):
    opener, query = SERIAL_DEVICES[device]
    with opener() as (driver, simulator):
        simulator.faults.silent = True
        with pytest.raises(DeviceTimeoutError, match=f"{driver.name}: no complete answer within 0.5 s"):
            elapsed(lambda: query(driver))


@pytest.mark.parametrize("device", SERIAL_DEVICES)
def test_late_answer_beyond_the_timeout_is_a_timeout(device):
    opener, query = SERIAL_DEVICES[device]
    with opener() as (driver, simulator):
        simulator.faults.delay_s = 1.0
        with pytest.raises(DeviceTimeoutError):
            elapsed(lambda: query(driver))


@pytest.mark.parametrize("device", SERIAL_DEVICES)
def test_garbage_answer_is_a_protocol_error(device):
    opener, query = SERIAL_DEVICES[device]
    with opener() as (driver, simulator):
        simulator.faults.garbage = True
        with pytest.raises((DeviceProtocolError, DeviceTimeoutError)) as caught:
            elapsed(lambda: query(driver))
        assert caught.value.reply, "the error carries what the device said"


@pytest.mark.parametrize("device", SERIAL_DEVICES)
def test_vanished_device_is_a_disconnection(device):
    opener, query = SERIAL_DEVICES[device]
    with opener() as (driver, simulator):
        query(driver)
        simulator.disconnect()
        with pytest.raises(DeviceDisconnectedError, match=f"{driver.name}: port /dev/pts/"):
            elapsed(lambda: query(driver))
            elapsed(lambda: query(driver))  # the first may fail on write or on read


@pytest.mark.parametrize("code,meaning", [(1, "unknown command"), (4, "parameter out of range"),
                                          (21, "halted by the HALT command"), (12, "reserved")])
def test_asi_error_codes_say_what_they_mean(code, meaning):
    with asi_stage() as (stage, simulator):
        simulator.faults.error_reply = code
        with pytest.raises(DeviceErrorReply, match=f"error {code}: .*{meaning}") as caught:
            stage.position()  # (error 4 to a move is the travel's end: PositionOutOfRangeError, below)
        assert caught.value.reply == f":N-{code}" and caught.value.code == code


def test_asi_stage_travel_limit_of_the_controller_is_a_position_out_of_range_not_a_transient_error():
    from devices.asi_stage import AsiZStage
    from devices.errors import TRANSIENT_ERRORS
    from devices.focus_drive import FocusLimits
    from simulators.asi_stage import AsiStageSimulator

    with AsiStageSimulator(travel_um=(-100.0, 100.0)) as simulator:
        stage = AsiZStage(simulator.port, limits=FocusLimits(-1000, 1000, "um"), timeout_s=0.5)
        with pytest.raises(PositionOutOfRangeError, match=r"refused to move to 500 µm: error 4: parameter out of "
                                                          r"range, beyond the stage's travel; set focus.limits "
                                                          r"\(now -1000..1000 um\) to the stage's travel") as caught:
            stage.move_to(500.0)
        assert not isinstance(caught.value, TRANSIENT_ERRORS) and caught.value.reply == ":N-4"
        stage.close()


@pytest.mark.parametrize("code,meaning", [(1, "CRC mismatch"), (3, "command not recognised"), (4, "no lens connected")])
def test_optotune_error_answers_say_what_they_mean(code, meaning):
    with optotune_lens() as (lens, simulator):
        simulator.faults.error_reply = code
        with pytest.raises(DeviceErrorReply, match=f"error {code}: {meaning}"):
            lens.temperature_c()


def test_optotune_handshake_failure_is_clear():
    from devices.optotune_lens import OptotuneLens
    from simulators.optotune_lens import OptotuneLensSimulator

    with OptotuneLensSimulator() as simulator:
        simulator.faults.garbage = True
        with pytest.raises(DeviceProtocolError, match="handshake failed"):
            OptotuneLens(simulator.port, timeout_s=0.5)


@pytest.mark.parametrize("device", SERIAL_DEVICES)
def test_a_port_in_use_by_another_session_is_refused_at_open(device):
    """Two sessions on one stage would interleave their moves (one of them died mid-stack)."""
    from devices.asi_stage import AsiZStage
    from devices.optotune_lens import OptotuneLens

    opener, query = SERIAL_DEVICES[device]
    with opener() as (driver, simulator):
        second = AsiZStage if device == "asi" else OptotuneLens
        with pytest.raises(DeviceNotFoundError,
                           match=f"serial port {simulator.port} is in use by another program that locks it"):
            second(simulator.port, timeout_s=0.5)
        query(driver)  # the first session's link is untouched


def test_a_reply_of_junk_is_quoted_short():
    error = DeviceProtocolError("stage", "garbled answer", b"\x00junk" * 1000)
    assert len(str(error)) < 250 and "(5000 bytes in all)" in str(error)


def test_missing_ports_and_files_are_not_found():
    from devices.asi_stage import AsiZStage
    from devices.genicam import GenICamCamera
    from devices.micromanager import open_mmcore

    with pytest.raises(DeviceNotFoundError, match="cannot open serial port /dev/ttyNOPE"):
        AsiZStage("/dev/ttyNOPE")
    with pytest.raises(DeviceNotFoundError, match="no Micro-Manager configuration file"):
        open_mmcore("/nowhere/rig.cfg")
    with pytest.raises(DeviceNotFoundError, match="no GenTL producer"):
        GenICamCamera("/nowhere/producer.cti")


@pytest.mark.parametrize("text", ["garbage line\n", "", "# a comment only\n"])
def test_a_configuration_that_loads_no_device_says_so(tmp_path, text):
    """MMCore passes over lines it does not know: such a file loaded without a word, and the session then said
    'the configuration has no focus stage'."""
    from devices.micromanager import open_mmcore

    config = tmp_path / "rig.cfg"
    config.write_text(text)
    with pytest.raises(DeviceNotFoundError, match=r"rig.cfg loaded no device: is it a Micro-Manager configuration"):
        open_mmcore(config)


def test_micromanager_dropped_frame_is_an_error_reply():
    with unicore_rig() as (_, _, camera, _, simulated_camera):
        simulated_camera.faults.drop_frames = 1
        with pytest.raises(DeviceErrorReply, match="frame lost"):
            camera.snap(timeout_s=1.0)
        assert camera.snap().pixels.ndim == 3  # the next frame arrives


def test_micromanager_late_frame_is_a_timeout_not_a_hang():
    with unicore_rig() as (_, _, camera, _, simulated_camera):
        simulated_camera.faults.delay_s = 2.0
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError,
                           match=r"no frame within 0.31 s \(10 ms exposure \+ 0.3 s timeout; snapImage did not ret"):
            camera.snap(timeout_s=0.3)
        assert time.monotonic() - started < 2.0  # 0.3 s timeout + 10 ms exposure; 5x


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # UniMMCore's sequence thread
def test_micromanager_sequence_with_lost_frames_is_an_error_not_a_hang():
    with unicore_rig() as (_, _, camera, _, simulated_camera):
        simulated_camera.faults.drop_frames = 5
        started = time.monotonic()
        with pytest.raises(DeviceErrorReply, match="ended the sequence after 0 of 3 frames"):
            list(camera.sequence(3, timeout_s=0.5))
        assert time.monotonic() - started < 2.0


def test_micromanager_one_frame_sequence_losing_its_frame_ends_early_without_a_thread_error(monkeypatch):
    """A retry of a sequence's last position is a sequence of one frame: its lost frame ends it early, as a
    longer sequence's does, not by an exception in UniMMCore's acquisition thread (a traceback on the terminal)."""
    import threading

    thread_errors: list = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    with unicore_rig() as (_, _, camera, _, simulated_camera):
        simulated_camera.faults.drop_frames = 1
        with pytest.raises(DeviceErrorReply, match="ended the sequence after 0 of 1 frames"):
            list(camera.sequence(1, timeout_s=0.5))
        assert [frame.pixels.ndim for frame in camera.sequence(1, timeout_s=0.5)] == [3]  # the next one comes
    assert thread_errors == []


def test_genicam_frame_not_in_time_is_a_timeout():
    from devices.genicam import GenICamCamera, bundled_producer

    camera = GenICamCamera(bundled_producer(), index=0)
    try:
        with pytest.raises(DeviceTimeoutError, match="no frame within"):
            camera.snap(timeout_s=1e-4)
    finally:
        camera.close()


@pytest.mark.parametrize("producer", ["text", "shared library"])
def test_a_cti_that_is_no_genicam_producer_is_one_line_and_no_crash(tmp_path, producer):
    """``camera.cti: /etc/passwd`` printed harvesters' "ERROR :: invalid ELF header" and a traceback before our
    error; a shared library that is no producer crashed the program (a segmentation fault in harvesters' update,
    after 60 lines of "does not implement"). Each is now our one line. Real harvesters, real files: a text file and
    Python's own _ctypes library, run as the user would, in a process of its own (the crash it was)."""
    import _ctypes
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    if producer == "text":
        cti = tmp_path / "passwd.cti"
        cti.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
        said = f"{cti}: invalid ELF header; a GenTL producer \\(.cti\\) is a shared library"
    else:
        cti, said = _ctypes.__file__, f"{_ctypes.__file__} is not a GenTL producer \\(it has no GCInitLib, "
    profile, sessions = tmp_path / "rig.yaml", tmp_path / "sessions"
    profile.write_text(f'camera: {{driver: genicam, cti: "{cti}", serial_number: "0"}}\nfocus: {{driver: simulated}}\n'
                       f'plan: {{z: {{range: 4, step: 1}}}}\noutput: {{folder: "{sessions}"}}\n')
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(profile)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert re.match(rf"error: GenICam camera \(0\): cannot open the camera: {said}", lines[0]), lines[0]
    assert not sessions.exists()


def test_genicam_unknown_serial_number_lists_what_is_there():
    from devices.genicam import GenICamCamera, bundled_producer

    with pytest.raises(DeviceNotFoundError, match="no camera matches; the producer has: #0 Viky serial 0"):
        GenICamCamera(bundled_producer(), serial_number="12345")


def test_pycromanager_without_micromanager_running_is_a_clear_error():
    # In a process of its own: pycromanager's Core() hands back any headless Python core this process started
    # (the session-wide fixture's), whatever port it is asked for, so in-process the answer hung on test order.
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = """
import contextlib
import re
import struct
import time
from typing import Any
import pycromanager  # (imported first: its ~1 s import is not the connection's time)
from devices.errors import DeviceDisconnectedError
from devices.pycromanager_core import connect
started = time.monotonic()
try:
    connect(port=4998)
except DeviceDisconnectedError as error:
    print(f"{time.monotonic() - started:.2f}", error)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    took_s, _, said = done.stdout.strip().partition(" ")
    assert "cannot reach Micro-Manager" in said, done.stdout + done.stderr
    # pyjavaz's socket thread ended too ("cannot join current thread"): not a second, puzzling report.
    assert "cannot join" not in done.stderr and "Exception in thread" not in done.stderr, done.stderr
    assert float(took_s) < 5.0  # pyjavaz gives up after about 1 s


def test_micromanager_stage_that_never_settles_times_out():
    with unicore_rig() as (_, drive, _, stage, _):
        stage.faults.silent = True
        drive.move_to(10.0)
        with pytest.raises(DeviceTimeoutError, match="still moving after 0.3 s"):
            elapsed(lambda: drive.wait_until_settled(timeout_s=0.3), bound_s=2.0)


def test_micromanager_stage_error_is_an_error_reply():
    with unicore_rig() as (_, drive, _, stage, _):
        stage.faults.error_reply = 7
        with pytest.raises(DeviceErrorReply, match="setPosition failed.*stage error 7"):
            drive.move_to(10.0)


@pytest.mark.parametrize("role,label,says", [
    # Suggestions come from the devices of the kind the role needs: the demo's one focus stage, not its 13 devices.
    ("focus", "ZStage", r"Micro-Manager stage ZStage: focus.label: no device 'ZStage' is loaded \(its focus stages: "
                        r"Z\)$"),
    ("camera", "Camra", r"Micro-Manager camera Camra: camera.label: no device 'Camra' is loaded "
                        r"\(did you mean 'Camera'\?\)$"),
    # A loaded device of another kind: said when the profile is opened, not at the first move or snap.
    ("focus", "XY", r"focus.label: 'XY' is an XY stage, not a focus stage \(its focus stages: Z\)$"),
    ("focus", "Camera", r"focus.label: 'Camera' is a camera, not a focus stage \(its focus stages: Z\)$"),
    ("camera", "Z", r"camera.label: 'Z' is a stage, not a camera \(its cameras: Camera\)$"),
])
def test_a_micromanager_label_not_loaded_names_the_nearest_or_lists_the_devices_of_its_kind(role, label, says):
    from devices.micromanager import MicroManagerCamera, MicroManagerFocusDrive
    from tests.devices_fixtures import demo_core

    with demo_core() as core, pytest.raises(DeviceNotFoundError, match=says) as caught:
        (MicroManagerFocusDrive if role == "focus" else MicroManagerCamera)(core, label=label)
    assert "Core" not in str(caught.value).split("(", 1)[1]


# ---- a long move: the settle timeout is for settling, not for travel ----

@contextlib.contextmanager
def slow_stage(kind: str, speed_um_per_s: float):
    """A stage that travels at ``speed_um_per_s``: the simulated one, or the ASI driver on its simulator's pty."""
    if kind == "simulated":
        from simulators.optics_camera import SimulatedStage

        stage: Any = SimulatedStage(speed_um_per_s)
        yield stage, stage
        return
    from devices.asi_stage import AsiZStage
    from simulators.asi_stage import AsiStageSimulator

    with AsiStageSimulator(speed_um_per_s=speed_um_per_s) as simulator:
        stage = AsiZStage(simulator.port, timeout_s=0.5, speed_um_per_s=speed_um_per_s)
        try:
            yield stage, simulator
        finally:
            stage.close()


@pytest.mark.parametrize("kind", ["simulated", "asi"])
def test_a_move_that_travels_longer_than_the_settle_timeout_is_waited_for(kind):
    # 800 µm at 500 µm/s takes 1.6 s: with a settle timeout of 0.5 s, the simulated stage gave up on it after twice
    # the timeout (a sleep, then polling), the ASI driver after once, while it was still travelling. (The timeout
    # is the slack the serial round trips to the ASI simulator get on a busy machine.)
    with slow_stage(kind, 500) as (stage, _):
        stage.position()  # (where it starts: the session reads it before its first move)
        started = time.monotonic()
        stage.move_to(800)
        stage.wait_until_settled(timeout_s=0.5)
        assert time.monotonic() - started >= 1.55 and stage.position() == pytest.approx(800)


def test_a_stuck_stage_is_given_up_on_after_its_travel_and_the_settle_timeout():
    with slow_stage("simulated", 500) as (stage, _):
        stage.position()
        stage.faults.silent = True
        stage.move_to(400)
        with pytest.raises(DeviceTimeoutError, match=r"^simulated stage: still moving after 0.2 s beyond 0.8 s of "
                                                      r"travel \(400 um at 500 um/s\) \(stuck, or not answering\)$"):
            elapsed(lambda: stage.wait_until_settled(timeout_s=0.2), bound_s=2)


@pytest.mark.parametrize("mode", ["current", "focal power"])
@pytest.mark.parametrize("max_current_ma", [-100.0, 0.0])
def test_an_optotune_lens_answering_a_maximum_current_not_above_0_is_a_device_error_naming_it(mode, max_current_ma):
    # It said "lower limit 100 is above upper limit -99.9756", naming no device nor what it answered (0 mA read
    # "-0..0 mA").
    from devices.optotune_lens import OptotuneLens
    from simulators.optotune_lens import OptotuneLensSimulator

    with OptotuneLensSimulator(max_current_ma=max_current_ma) as simulator, \
            pytest.raises(DeviceProtocolError) as caught:
        OptotuneLens(simulator.port, mode=mode, timeout_s=0.5)
    assert str(caught.value).startswith(f"Optotune lens: answered CrMA (its maximum current) with {max_current_ma:g} "
                                        "mA; a lens's maximum current is above 0 mA (device replied ")


def test_an_optotune_lens_answering_a_focal_power_range_upside_down_is_a_device_error_naming_it():
    from devices.optotune_lens import OptotuneLens
    from simulators.optotune_lens import OptotuneLensSimulator

    class UpsideDownAtTemperatureLimits(OptotuneLensSimulator):
        """Sane as it enters focal-power mode (MwCA), upside down for the temperature limits (PwTA)."""

        def _execute(self, command, value):
            answer = super()._execute(command, value)
            if command == b"PwTA":
                high, low = struct.unpack(">hh", answer[3:])
                return b"PTA" + struct.pack(">hh", low, high)
            return answer

    # (its range from PwTA at 45 °C: -13.91 dpt up to 13.91, upside down)
    with UpsideDownAtTemperatureLimits() as simulator, pytest.raises(DeviceProtocolError) as caught:
        OptotuneLens(simulator.port, timeout_s=0.5)
    assert str(caught.value).startswith("Optotune lens: answered PwTA (its focal-power range for 20 to 45 °C) with "
                                        "-13.91 dpt at most and 13.91 at least: no range (device replied ")


def test_a_producer_named_without_a_folder_opens_from_the_working_folder(tmp_path, monkeypatch):
    """``camera.cti: viky.cti`` beside the user: the file was there (the check that it is passed), and the loader,
    which searches its library path for a name without a slash, said "cannot open shared object file: No such file
    or directory" (a regression round). Real producer, copied."""
    import shutil

    from devices.genicam import GenICamCamera, bundled_producer

    shutil.copy(bundled_producer(), tmp_path / "viky.cti")
    monkeypatch.chdir(tmp_path)
    camera = GenICamCamera("viky.cti", serial_number="0")
    try:
        assert camera.snap().pixels.size > 0
    finally:
        camera.close()
