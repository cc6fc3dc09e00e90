"""Profile values that cannot work are refused before any device moves, naming the file and the key."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from acquisition.profile import MAX_SPECIMEN_SIDE_PX, ProfileError, load_profile
from tests.conftest import REPO_ROOT

RIG = "camera: {driver: simulated}\nfocus: {driver: simulated}\n"


def write_profile(tmp_path, text: str):
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("camera: {driver: simulated, specimen: {texture: astronot}}\nfocus: {driver: simulated}\n"
     "plan: {z: {range: 10, step: 1}}\n",
     r"rig.yaml: camera.specimen.texture: unknown texture 'astronot'; choose one of astronaut, "),
    (RIG + "plan: {z: {range: 2, step: 5}}\n",
     r"rig.yaml: plan.z: the step 5 is larger than the range \(2\): the plan would visit one position"),
    (RIG + "plan: {z: {bottom: 0, top: 3, step: 4}}\n",
     r"rig.yaml: plan.z: the step 4 is larger than the distance from bottom to top \(3\)"),
    (RIG + "plan: {z: {absolute: [5]}}\n", r"rig.yaml: plan.z.absolute: List should have at least 2 items"),
    # A negative range ran as a successful session of no slices; a repeated position stacked the same focus.
    (RIG + "plan: {z: {range: -10, step: 2}}\n", r"rig.yaml: plan.z.range: Input should be greater than 0"),
    (RIG + "plan: {z: {absolute: [5, 5, 5]}}\n", r"rig.yaml: plan.z: the position 5 comes more than once"),
    ("camera: {driver: simulated}\nfocus: {driver: simulated, limits: [1000, -1000]}\nplan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: focus: limits: the lower limit 1000 must be below the upper -1000"),
    # A typo's step: 480,001 slices, about a terabyte, before fusion would refuse the 32,768th.
    (RIG + "plan: {z: {bottom: 0, top: 48, step: 0.0001}}\n",
     r"rig.yaml: plan.z: the plan visits 480,001 positions; a stack is fused from 32,767 slices at most"),
    (RIG.replace("driver: simulated}", "driver: simulated, exposure_ms: .inf}", 1) + "plan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: camera.exposure_ms: Input should be a finite number"),
    # A timeout of .inf waited for ever on a silent stage, past every stop signal (kill -9 was the way out).
    ("camera: {driver: simulated, timeout_s: .inf}\nfocus: {driver: simulated, settle_timeout_s: .inf}\n"
     "plan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: camera.timeout_s: Input should be a finite number\n.*rig.yaml: focus.settle_timeout_s: Input should "
     r"be a finite number"),
    ("camera: {driver: simulated}\nfocus: {driver: simulated, settle_ms: .nan}\nplan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: focus.settle_ms: Input should be a finite number"),
    # pydantic took "true" for 1 ms.
    (RIG.replace("driver: simulated}", "driver: simulated, exposure_ms: true}", 1) + "plan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: camera.exposure_ms: expected a number, got true"),
    ("camera: {driver: simulated}\nfocus: {driver: simulated, limits: [true, 1000]}\nplan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: focus.limits: expected a number, got true"),
    # useq's own z-plans took "step: true" for a 1 µm step (49 slices), and infinity or NaN for a number.
    (RIG + "plan: {z: {bottom: 0, top: 48, step: true}}\n", r"rig.yaml: plan.z.step: expected a number, got true"),
    (RIG + "plan: {z: {absolute: [1, true]}}\n", r"rig.yaml: plan.z.absolute: expected a number, got true"),
    (RIG + "plan: {z: {bottom: 0, top: .inf, step: 1}}\n", r"rig.yaml: plan.z.top: Input should be a finite number"),
    (RIG + "plan: {z: {range: 4, step: .nan}}\n", r"rig.yaml: plan.z.step: Input should be a finite number"),
    # A z-plan written as a list or as text ended in a traceback (AttributeError: ... 'model_fields').
    (RIG + "plan: {z: [0, 2, 4]}\n",
     r"rig.yaml: plan.z: a z-plan is a mapping of keys \(µm\): \{range, step\} around where the drive is, \{bottom, "
     r"top, step\}, or \{absolute: \[...\]\}; got \[0, 2, 4\]"),
    (RIG + "plan: {z: '0:40:2'}\n", r"rig.yaml: plan.z: a z-plan is a mapping of keys .*; got '0:40:2'"),
    # A key written as a list ended in a traceback (TypeError: unhashable type: 'list').
    ("camera: {driver: simulated, [exposure_ms]: 10}\n" + RIG[RIG.index("focus"):],
     r"rig.yaml: not valid YAML at line 1, column 29: a key is a name, not a list"),
    # numpy's generator takes no seed below 0: the session ended with 'error: expected non-negative integer'.
    ("camera: {driver: simulated, specimen: {seed: -1}}\nfocus: {driver: simulated}\nplan: {z: {range: 4, step: 1}}\n",
     r"rig.yaml: camera.specimen.seed: Input should be greater than or equal to 0"),
    ("camera: {driver: simulated}\nfocus: {driver: optotune, port: simulated, unit: dpt}\n"
     "plan: {sweep: {start: 1, stop: 1.2, step: 0.5}}\n",
     r"rig.yaml: plan.sweep: the step 0.5 is larger than the distance from start to stop \(0.2\)"),
    # A serial port's speed: a typo is refused (not a line of noise), and only serial drives have one.
    ("camera: {driver: simulated}\nfocus: {driver: asi, port: /dev/ttyUSB0, baudrate: 96000}\n"
     "plan: {z: {range: 4, step: 1}}\n",
     r"^[^\n]*rig.yaml: focus.baudrate: 96000 is not a serial baud rate; use one of 1200, .*, 9600, .*, 115200"),
    ("camera: {driver: simulated}\nfocus: {driver: optotune, port: /dev/ttyACM0, unit: dpt, baudrate: fast}\n"
     "plan: {sweep: {start: 0, stop: 2, step: 0.5}}\n",
     r"^[^\n]*rig.yaml: focus.baudrate: Input should be a valid integer[^\n]*$"),
    ("camera: {driver: simulated}\nfocus: {driver: asi, port: /dev/ttyUSB0, baudrate: true}\n"
     "plan: {z: {range: 4, step: 1}}\n",
     r"^[^\n]*rig.yaml: focus.baudrate: expected a number, got true$"),
    ("camera: {driver: simulated}\nfocus: {driver: simulated, baudrate: 9600}\nplan: {z: {range: 4, step: 1}}\n",
     r"^[^\n]*rig.yaml: focus.baudrate: for serial focus drives only \(focus.driver: asi or optotune\): the port they "
     r"are on and its speed; this simulated focus drive does not follow it: remove it$"),
    ("camera: {driver: simulated}\nfocus: {driver: micromanager, baudrate: 9600}\nplan: {z: {range: 4, step: 1}}\n",
     r"^[^\n]*rig.yaml: focus.baudrate: for serial focus drives only .*; this micromanager focus drive does not"),
    # Finite, and still for ever: settle_ms: 1e12 waited past any session (and so would the others).
    ("camera: {driver: simulated}\nfocus: {driver: simulated, settle_ms: 1e12}\nplan: {z: {range: 4, step: 1}}\n",
     r"^[^\n]*rig.yaml: focus.settle_ms: at most 60000 ms \(a minute\), got 1e\+12 ms: a session would seem to "
     r"hang$"),
    ("camera: {driver: simulated, exposure_ms: 1e9, timeout_s: 1e9, give_up_after_s: 86401}\n"
     "focus: {driver: simulated, settle_timeout_s: 3601}\nplan: {z: {range: 4, step: 1}}\n",
     r"^[^\n]*rig.yaml: camera.exposure_ms: at most 600000 ms \(10 minutes\), got 1e\+09 ms: .*\n"
     r"[^\n]*rig.yaml: camera.timeout_s: at most 3600 s \(an hour\), got 1e\+09 s: .*\n"
     r"[^\n]*rig.yaml: camera.give_up_after_s: at most 3600 s \(an hour\), got 86401 s: .*\n"
     r"[^\n]*rig.yaml: focus.settle_timeout_s: at most 3600 s \(an hour\), got 3601 s: a session would seem to hang$"),
    ("camera: {driver: simulated, arrival_latency_ms: -5}\nfocus: {driver: optotune, port: simulated, unit: dpt}\n"
     "plan: {sweep: {start: 0, stop: 2, step: 0.5}, stream: true}\n",
     r"^[^\n]*rig.yaml: camera.arrival_latency_ms: Input should be greater than or equal to 0"),
    (RIG + "plan: {z: {range: 4, step: 1}}\nfaults: {focus: {delay_s: 1e12}}\n",
     r"^[^\n]*rig.yaml: faults.focus.delay_s: at most 3600 s \(an hour\), got 1e\+12 s"),
])
def test_values_that_cannot_work_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(write_profile(tmp_path, text))


@pytest.mark.parametrize("size", ["1e-30", "5e-5", "20000", "1e30"])
def test_a_pixel_size_out_of_all_proportion_is_a_profile_error(tmp_path, size):
    # 1e-30 opened the devices and ended the session at its first slice (a ValueError of TIFF's fractions),
    # leaving a header-only stack; 1e30 wrote outputs whose resolution was 0/1.
    text = RIG.replace("driver: simulated}", f"driver: simulated, pixel_size_um: {size}}}", 1) \
        + "plan: {z: {range: 4, step: 1}}\n"
    with pytest.raises(ProfileError, match=r"^[^\n]*rig.yaml: camera.pixel_size_um: a pixel on the specimen is "
                                           r"0.0001 to 10000 µm \(0.1 nm to 1 cm\), got [^\n]* µm: is it in µm\?$"):
        load_profile(write_profile(tmp_path, text))


@pytest.mark.parametrize("size", [1e-4, 0.065, 1e4])
def test_pixel_sizes_from_a_tenth_of_a_nanometre_to_a_centimetre_are_taken(tmp_path, size):
    text = RIG.replace("driver: simulated}", f"driver: simulated, pixel_size_um: {size}}}", 1) \
        + "plan: {z: {range: 4, step: 1}}\n"
    assert load_profile(write_profile(tmp_path, text)).camera.pixel_size_um == size


def test_waits_up_to_their_limits_are_taken(tmp_path):
    text = ("camera: {driver: simulated, exposure_ms: 600000, timeout_s: 3600, give_up_after_s: 3600}\n"
            "focus: {driver: simulated, settle_ms: 60000, settle_timeout_s: 3600}\nplan: {z: {range: 4, step: 1}}\n")
    profile = load_profile(write_profile(tmp_path, text))
    assert (profile.camera.exposure_ms, profile.focus.settle_ms) == (600000, 60000)


@pytest.mark.parametrize("text,message", [
    # YAML keeps the last of two equal keys without a word: the profile that ran was not the one read.
    (RIG + "plan: {z: {range: 4, step: 1}}\nplan: {z: {range: 8, step: 1}}\n",
     r"^.*rig.yaml: not valid YAML at line 4, column 1: the key 'plan' is given twice$"),
    ("camera: {driver: simulated, exposure_ms: 10, exposure_ms: 20}\nfocus: {driver: simulated}\n",
     r"^.*rig.yaml: not valid YAML at line 1, column 46: the key 'exposure_ms' is given twice$"),
    # PyYAML's own messages run over five to eight lines: one, with the place.
    ("camera:\n  driver: simulated\n\tfocus: x\n",
     r"^.*rig.yaml: not valid YAML at line 3, column 1: found character '\\t' that cannot start any token$"),
])
def test_yaml_that_cannot_be_read_as_written_is_one_line(tmp_path, text, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(write_profile(tmp_path, text))


def test_a_one_position_plan_is_refused_on_the_command_line_before_moving(tmp_path):
    path = write_profile(tmp_path, RIG + "plan: {z: {range: 2, step: 5}}\n")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(path), "--out",
                           str(tmp_path / "sessions")], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: plan.z: the step 5 is larger than the range (2): the plan would visit one position; "
        "make the step smaller"]
    assert not (tmp_path / "sessions").exists()


def test_a_huge_simulated_specimen_is_one_line_per_key_not_a_memory_traceback(tmp_path):
    # 100000 px a side asked numpy for 112 GiB in simulators/specimens.py and crashed with a traceback.
    path = write_profile(tmp_path, "camera: {driver: simulated, specimen: {height_px: 100000, width_px: 100000}}\n"
                                   "focus: {driver: simulated}\nplan: {z: {range: 4, step: 1}}\n")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(path), "--out",
                           str(tmp_path / "sessions")], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line.split(": at most")[0] for line in lines] == [
        f"error: {path}: camera.specimen.height_px", f"{path}: camera.specimen.width_px"]
    assert all(f"at most {MAX_SPECIMEN_SIDE_PX} px, got 100000" in line for line in lines)
    assert not (tmp_path / "sessions").exists()


def test_a_specimen_at_the_largest_side_is_taken(tmp_path):
    side = MAX_SPECIMEN_SIDE_PX
    profile = load_profile(write_profile(tmp_path, f"camera: {{driver: simulated, specimen: {{height_px: {side}, "
                                                   f"width_px: 16}}}}\nfocus: {{driver: simulated}}\n"
                                                   "plan: {z: {range: 4, step: 1}}\n"))
    assert (profile.camera.specimen.height_px, profile.camera.specimen.width_px) == (side, 16)
    with pytest.raises(ProfileError, match=rf"rig.yaml: camera.specimen.width_px: at most {side} px, got {side + 1}"):
        load_profile(write_profile(tmp_path, f"camera: {{driver: simulated, specimen: {{width_px: {side + 1}}}}}\n"
                                             "focus: {driver: simulated}\nplan: {z: {range: 4, step: 1}}\n"))


def test_a_folder_or_a_binary_file_given_as_a_profile_says_so(tmp_path):
    with pytest.raises(ProfileError, match=r"is a folder; give a profile file"):
        load_profile(tmp_path)
    binary = tmp_path / "photo.yaml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 a JPEG")
    with pytest.raises(ProfileError, match=r"photo.yaml: not a text file \(a profile is UTF-8 YAML\)"):
        load_profile(binary)


@pytest.mark.parametrize("option", ["--out", "output.folder"])
def test_an_output_folder_that_cannot_be_made_names_where_it_came_from(tmp_path, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder = blocker / "sessions"
    text = RIG + "plan: {z: {range: 4, step: 1}}\n"
    if option == "output.folder":
        text += f"output: {{folder: '{folder}'}}\n"
    path = write_profile(tmp_path, text)
    out_args = ["--out", str(folder)] if option == "--out" else []
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(path), *out_args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    named = "--out" if option == "--out" else f"{path}: output.folder"
    assert done.returncode == 1
    expected = f"error: {named} {folder}: cannot make that folder: {blocker} is a file"
    assert done.stderr.strip().splitlines() == [expected]


def test_a_home_folder_or_variable_in_an_output_folder_is_where_the_shell_would_put_it(tmp_path, monkeypatch):
    """``folder: ~/sessions`` made a folder named ``~`` in the working folder (and ``rm -rf ~`` to clean it up)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    text = RIG.replace("{driver: simulated}\nfocus", "{driver: simulated, specimen: {height_px: 96, width_px: 128}}"
                                                     "\nfocus") + "plan: {z: {range: 4, step: 1}}\n"
    path = write_profile(tmp_path, text + "output: {folder: ~/sessions}\n")
    env = {**os.environ, "HOME": str(home)}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(path)],
                          capture_output=True, text=True, cwd=work, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in work.iterdir()] == [] and len(list((home / "sessions").iterdir())) == 1
    monkeypatch.setenv("LAB_DATA", str(tmp_path / "lab"))
    assert load_profile(write_profile(tmp_path, text + "output: {folder: $LAB_DATA/s}\n")).output.folder == \
        f"{tmp_path / 'lab'}/s"
    with pytest.raises(ProfileError, match=r"output.folder: '\$NOT_SET_HERE/s' names the environment variable "
                                           r"\$NOT_SET_HERE, which is not set"):
        load_profile(write_profile(tmp_path, text + "output: {folder: $NOT_SET_HERE/s}\n"))


def test_a_home_folder_of_a_user_this_computer_does_not_have_is_refused(tmp_path):
    """``folder: ~nonexistentuser/x`` made ``./~nonexistentuser/x/<stamp>`` in the working folder, and the run said
    nothing: expanduser leaves such a ~ as it is. It is a profile error naming the key, as an unset $VARIABLE is."""
    text = RIG + "plan: {z: {range: 4, step: 1}}\n"
    with pytest.raises(ProfileError, match=r"output.folder: '~nonexistentuser_ums/x' starts with ~nonexistentuser_ums, "
                                           r"the home folder of a user 'nonexistentuser_ums' that this computer does "
                                           r"not have \(a folder really named ~nonexistentuser_ums: write "
                                           r"./~nonexistentuser_ums/x\)"):
        load_profile(write_profile(tmp_path, text + "output: {folder: ~nonexistentuser_ums/x}\n"))


@pytest.mark.parametrize("name", ["simulated-mda", "simulated-micromanager"])
def test_a_full_scale_exposure_for_a_camera_that_does_not_follow_it_is_refused(tmp_path, name):
    """simulated-mda.yaml (exposure 5 ms) took camera.noise.full_scale_exposure_ms and ignored it: its camera, as
    every camera but the optics simulator's, does not scale its light with the exposure."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "profiles" / f"{name}.yaml").read_text())
    data["camera"]["noise"]["full_scale_exposure_ms"] = 5
    with pytest.raises(ProfileError, match=r"rig.yaml: camera.noise.full_scale_exposure_ms: only the optics "
                                           r"simulator's camera \(driver: simulated\) .* camera.* does not follow it"):
        load_profile(write_profile(tmp_path, yaml.safe_dump(data)))
    data["camera"]["noise"].pop("full_scale_exposure_ms")
    profile = load_profile(write_profile(tmp_path, yaml.safe_dump(data)))
    assert profile.camera.noise.full_scale_exposure_ms == 10
    assert type(profile).model_validate(profile.model_dump()) == profile  # dumped whole (the default in it): taken


def test_the_optics_simulators_camera_takes_a_full_scale_exposure(tmp_path):
    profile = load_profile(write_profile(tmp_path, "camera: {driver: simulated, noise: {full_scale_exposure_ms: 5}}\n"
                                                   "focus: {driver: simulated}\nplan: {z: {range: 4, step: 1}}\n"))
    assert profile.camera.noise.full_scale_exposure_ms == 5


def profile_with(tmp_path, name: str, camera: dict):
    """profiles/<name>.yaml with these camera sections' keys added (camera: {noise: {bit_depth: 12}})."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "profiles" / f"{name}.yaml").read_text())
    for section, keys in camera.items():
        data["camera"].setdefault(section, {}).update(keys)
    return write_profile(tmp_path, yaml.safe_dump(data))


@pytest.mark.parametrize("name,camera,message", [
    # A real camera's profile took the simulator's noise and ran at the camera's own depth and noise, without a word.
    ("genicam-etl", {"noise": {"bit_depth": 12}},
     r"rig.yaml: camera.noise.bit_depth: for simulated cameras only \(camera.driver: simulated, or micromanager with "
     r"micromanager.simulated_devices: true\); this genicam camera does not follow it: remove it"),
    ("microscope", {"noise": {"full_well_e": 10000, "read_noise_e": 1.5}},
     r"rig.yaml: camera.noise.full_well_e, camera.noise.read_noise_e: for simulated cameras only .*; this "
     r"micromanager camera does not follow them: remove them"),
    ("simulated-genicam-etl", {"specimen": {"texture": "coffee"}},   # (the bundled Viky shows its own pattern)
     r"rig.yaml: camera.specimen.texture: for simulated cameras only .*; this genicam camera does not follow it"),
    ("simulated-micromanager", {"optics": {"um_per_dpt": 3}},
     r"rig.yaml: camera.optics.um_per_dpt: only the optics simulator's camera \(driver: simulated\) looks through the "
     r"simulated tunable lens; this micromanager camera \(simulated devices\) does not follow it"),
    ("simulated-mda", {"specimen": {"texture": "coffee"}},
     r"rig.yaml: camera.specimen.texture: the slide simulator \(an mda: plan\) shows a grey texture of its own in each "
     r"channel; the slide simulator's camera does not follow it: remove it"),
])
def test_a_simulator_key_for_a_camera_that_does_not_follow_it_is_refused(tmp_path, name, camera, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(profile_with(tmp_path, name, camera))


@pytest.mark.parametrize("name", ["simulated", "simulated-micromanager", "simulated-mda"])
def test_simulated_cameras_take_their_noise(tmp_path, name):
    profile = load_profile(profile_with(tmp_path, name, {"noise": {"bit_depth": 16, "full_well_e": 1000}}))
    assert (profile.camera.noise.bit_depth, profile.camera.noise.full_well_e) == (16, 1000)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "profiles").glob("*.yaml")), ids=lambda path: path.stem)
def test_a_profile_dumped_whole_is_taken(path):
    """A dump holds every key at its default, the simulator's, the other drivers' and micromanager:'s among them:
    read again, it is the same profile."""
    profile = load_profile(path)
    assert type(profile).model_validate(profile.model_dump()) == profile
    assert type(profile).model_validate(profile.model_dump(mode="json")) == profile


def profile_changed(tmp_path, name: str, changes: dict):
    """profiles/<name>.yaml with these sections' keys added or replaced ({"camera": {"cti": "bundled"}})."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "profiles" / f"{name}.yaml").read_text())
    for section, keys in changes.items():
        data[section] = {**(data.get(section) or {}), **keys}
    return write_profile(tmp_path, yaml.safe_dump(data))


GENICAM_ONLY = r"for GenICam cameras only \(camera.driver: genicam\)"
MICRO_MANAGER_RIGS = r"for Micro-Manager rigs only \(camera.driver or focus.driver: micromanager or pycromanager\)"


@pytest.mark.parametrize("name,changes,message", [
    # A GenICam camera's keys on another camera: taken, and that camera ran at its own pixel format and gain.
    ("microscope", {"camera": {"cti": "bundled", "serial_number": "0", "gain": 2}},
     rf"^[^\n]*rig.yaml: camera.cti, camera.serial_number, camera.gain: {GENICAM_ONLY}; this micromanager camera "
     r"does not follow them: remove them$"),
    ("simulated-micromanager", {"camera": {"pixel_format": "Mono12"}},
     rf"rig.yaml: camera.pixel_format: {GENICAM_ONLY}; this micromanager camera \(simulated devices\) does not follow "
     r"it: remove it$"),
    ("simulated", {"camera": {"model": "Viky", "index": 1}},
     rf"rig.yaml: camera.model, camera.index: {GENICAM_ONLY}; this simulated camera does not follow them"),
    # A Micro-Manager camera's label on a GenICam or the optics simulator's camera.
    ("genicam-etl", {"camera": {"label": "Camera"}},
     r"rig.yaml: camera.label: for Micro-Manager cameras only \(camera.driver: micromanager or pycromanager\): the "
     r"camera's device label in the configuration; this genicam camera does not follow it: remove it$"),
    ("simulated", {"camera": {"label": "Camera"}}, r"rig.yaml: camera.label: for Micro-Manager cameras only .*; this "
                                                   r"simulated camera does not follow it"),
    # A micromanager: section on a rig without Micro-Manager: its configuration was never loaded, its properties
    # never set.
    ("genicam-etl", {"micromanager": {"config": "demo", "properties": {"Camera": {"Gain": 2}}}},
     rf"^[^\n]*rig.yaml: micromanager.config, micromanager.properties: {MICRO_MANAGER_RIGS}; this rig, a genicam "
     r"camera and an optotune focus drive, does not follow them: remove them$"),
    ("simulated", {"micromanager": {"simulated_devices": True}},
     rf"rig.yaml: micromanager.simulated_devices: {MICRO_MANAGER_RIGS}; this rig, a simulated camera and a "
     r"simulated focus drive, does not follow it"),
    # The slide simulator loads no configuration and its stage does not sequence; a pycromanager core's properties
    # are Micro-Manager's own.
    ("simulated-mda", {"micromanager": {"config": "demo"}},
     r"rig.yaml: micromanager.config: the slide simulator \(an mda: plan with simulated_devices\) loads no "
     r"configuration; the slide simulator's core does not follow it"),
    ("simulated-mda", {"micromanager": {"simulated_sequencing": True}},
     r"rig.yaml: micromanager.simulated_sequencing: for the simulated devices' stage in a single-stack session only"),
    ("microscope", {"camera": {"driver": "pycromanager"}, "micromanager": {"properties": {"Camera": {"Gain": 2}}}},
     r"rig.yaml: micromanager.properties: set on a micromanager core only .*; a pycromanager core's are set in "
     r"Micro-Manager; this pycromanager rig does not follow it"),
    ("microscope", {"camera": {"driver": "pycromanager"}, "micromanager": {"simulated_devices": True}},
     r"rig.yaml: micromanager.simulated_devices: the simulators' devices are loaded into a micromanager core only"),
    # A Micro-Manager stage's label on a serial or simulated drive, a serial drive's port on a Micro-Manager or
    # simulated stage: taken, and ignored.
    ("serial-stage", {"focus": {"label": "Z"}},
     r"^[^\n]*rig.yaml: focus.label: for Micro-Manager stages only \(focus.driver: micromanager or pycromanager\): "
     r"the stage's device label in the configuration; this asi focus drive does not follow it: remove it$"),
    ("simulated", {"focus": {"label": "Z"}}, r"rig.yaml: focus.label: for Micro-Manager stages only .*; this "
                                             r"simulated focus drive does not follow it"),
    ("microscope", {"focus": {"port": "COM3", "baudrate": 9600}},
     r"^[^\n]*rig.yaml: focus.port, focus.baudrate: for serial focus drives only \(focus.driver: asi or optotune\): "
     r"the port they are on and its speed; this micromanager focus drive does not follow them: remove them$"),
    ("simulated", {"focus": {"port": "simulated"}}, r"rig.yaml: focus.port: for serial focus drives only .*; this "
                                                    r"simulated focus drive does not follow it"),
    # The slide simulator's core has its own camera and stage: another label was refused only as the session opened.
    ("simulated-mda", {"camera": {"label": "Camera"}, "focus": {"label": "Z"}},
     r"^[^\n]*rig.yaml: camera.label, focus.label: the slide simulator \(an mda: plan with simulated_devices\) has "
     r"one camera and one focus stage, its own; the slide simulator's core does not follow them: remove them$"),
])
def test_a_key_for_another_driver_or_rig_is_refused_naming_who_follows_it(tmp_path, name, changes, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(profile_changed(tmp_path, name, changes))


@pytest.mark.parametrize("name,changes", [
    ("genicam-etl", {"camera": {"serial_number": "0", "model": "Viky", "index": 0, "pixel_format": "Mono8",
                                "gain": 1}}),
    ("microscope", {"camera": {"label": "Camera"}}),
    ("microscope", {"camera": {"driver": "pycromanager", "label": "Camera"}}),
    ("simulated-micromanager", {"camera": {"label": "SimCamera"}, "micromanager": {"config": "demo"}}),
    ("simulated-mda", {"micromanager": {"properties": {"SimCamera": {"Gain": 2}}}}),
    ("simulated-sequenced", {}),
    ("serial-stage", {"focus": {"baudrate": 9600}}),
    ("microscope", {"focus": {"label": "Z"}}),
    ("simulated-micromanager", {"focus": {"label": "SimZ"}}),
])
def test_keys_for_the_rigs_driver_are_taken(tmp_path, name, changes):
    load_profile(profile_changed(tmp_path, name, changes))


@pytest.mark.parametrize("value,said", [(None, "null"), ({"a": 1}, r"a mapping \({'a': 1}\)"),
                                        ([1, 2], r"a list \(\[1, 2\]\)")])
def test_a_property_value_that_is_not_text_or_a_number_is_refused(tmp_path, value, said):
    """micromanager.properties: {Camera: {Gain: null}} was sent to the device as the text "None" (a mapping as
    "{'a': 1}")."""
    with pytest.raises(ProfileError, match=rf"^[^\n]*rig.yaml: micromanager.properties.Camera.Gain: a property's "
                                           rf"value is text, a number or Yes/No, got {said}$"):
        load_profile(profile_changed(tmp_path, "microscope",
                                     {"micromanager": {"properties": {"Camera": {"Gain": value}}}}))


def test_every_key_the_rig_does_not_follow_is_said_one_reason_a_line(tmp_path):
    """A GenICam camera given a simulator's noise, a Micro-Manager label and micromanager.properties was refused for
    the noise only: the user fixed it and ran again three times. Each reason is said, on a line of its own."""
    path = profile_changed(tmp_path, "genicam-etl", {"camera": {"label": "Camera", "noise": {"bit_depth": 12}},
                                                      "micromanager": {"properties": {"Camera": {"Gain": 2}}}})
    with pytest.raises(ProfileError) as refused:
        load_profile(path)
    lines = str(refused.value).splitlines()
    assert [line.split(": ")[:2] for line in lines] == [[str(path), "camera.noise.bit_depth"],
                                                        [str(path), "camera.label"],
                                                        [str(path), "micromanager.properties"]], lines
    assert all(line.endswith("does not follow it: remove it") for line in lines), lines


@pytest.mark.parametrize("properties,message", [
    # pydantic's words named no device.
    ({"Camera": None}, r"micromanager.properties.Camera: a device's properties are a mapping \{property: value\}, "
                       r"got null$"),
    ({"Camera": "Gain"}, r"micromanager.properties.Camera: a device's properties are a mapping .*, got a str"),
    # Sent to the device as the text "nan" (or "inf").
    ({"Camera": {"Gain": float("nan")}}, r"micromanager.properties.Camera.Gain: a property's value is a finite "
                                         r"number, got nan$"),
    ({"Camera": {"Gain": float("-inf")}}, r"micromanager.properties.Camera.Gain: .* a finite number, got -inf$"),
])
def test_a_devices_properties_that_cannot_be_set_are_refused_naming_the_device(tmp_path, properties, message):
    with pytest.raises(ProfileError, match=rf"^[^\n]*rig.yaml: {message}"):
        load_profile(profile_changed(tmp_path, "microscope", {"micromanager": {"properties": properties}}))


@pytest.mark.parametrize("properties,message", [
    # Device labels and property names are capitalised (Camera, Exposure): they were taken for pydantic's names of a
    # union's members and left out of the key path.
    ({"Camera": {"Exposure": [10]}}, r"micromanager.properties.Camera.Exposure: a property's value is text, a number "
                                     r"or Yes/No, got a list \(\[10\]\)$"),
    ({"Dichroic": {"Label": None}}, r"micromanager.properties.Dichroic.Label: a property's value is text, a number or "
                                    r"Yes/No, got null$"),
    # It said micromanager.properties.1.[key]: the device's label was lost.
    ({"Camera": {1: "Yes"}}, r"micromanager.properties.Camera: key 1: Input should be a valid string$"),
])
def test_a_bad_property_is_named_by_its_device_and_property(tmp_path, properties, message):
    with pytest.raises(ProfileError, match=rf"^[^\n]*rig.yaml: {message}"):
        load_profile(profile_changed(tmp_path, "microscope", {"micromanager": {"properties": properties}}))


def test_a_section_whose_keys_are_all_commented_out_is_taken_as_left_out(tmp_path):
    """micromanager: with its keys commented out (YAML's null) said "Input should be a valid dictionary or instance of
    MicroManagerSettings"; it is an empty section, as is any other with defaults."""
    text = (REPO_ROOT / "profiles" / "simulated.yaml").read_text()
    text = text.replace("  noise: {full_well_e: 20000, read_noise_e: 5, bit_depth: 8}\n",
                        "  noise:\n    # bit_depth: 8\n")
    assert "  noise:\n    # bit_depth: 8\n" in text  # (the shipped profile's line, commented out)
    profile = load_profile(write_profile(tmp_path, text + "micromanager:\n  # config: demo\nfaults:\n  # camera: {}\n"))
    assert profile.micromanager == type(profile.micromanager)() and profile.camera.noise.bit_depth == 8


def test_a_required_section_whose_keys_are_all_commented_out_says_so(tmp_path):
    with pytest.raises(ProfileError, match=r"^[^\n]*rig.yaml: camera: the section is empty \(are all its keys "
                                           r"commented out\?\): give its keys, driver at least$"):
        load_profile(write_profile(tmp_path, "camera:\n  # driver: simulated\nfocus: {driver: simulated}\n"
                                             "plan: {z: {range: 4, step: 1}}\n"))


def test_a_plan_left_empty_where_a_library_cannot_take_it_names_the_key(tmp_path):
    """mda.z_plan.relative: null ended in a Python traceback (useq's validator raised TypeError, which pydantic does
    not turn into its errors); it names the key, not the micromanager.config: null beside it that is allowed."""
    path = profile_changed(tmp_path, "simulated-mda", {"mda": {"z_plan": {"relative": None}},
                                                       "micromanager": {"config": None}})
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    said = str(error.value)
    assert said.startswith(f"{path}: mda.z_plan.relative: no value (null) where one is needed"), said
    assert "micromanager.config" not in said
