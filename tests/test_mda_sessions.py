"""Multi-dimensional sessions: a profile's useq MDA sequence run end to end, every z-stack fused."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import useq
import yaml

from acquisition.mda_plan import around_current_position
from acquisition.profile import ProfileError, load_profile
from tests.conftest import REPO_ROOT, with_default_sigint

PROFILES = REPO_ROOT / "profiles"


def small_mda_profile(tmp_path, **changes):
    """simulated-mda.yaml (3 channels x 4 positions x 20 slices) with small frames, plus ``changes``."""
    data = yaml.safe_load((PROFILES / "simulated-mda.yaml").read_text())
    data["camera"]["specimen"].update(height_px=120, width_px=160)
    data["camera"]["exposure_ms"] = 1
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args, timeout_s=300):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout_s)


def test_three_channels_four_positions_twenty_slices_with_one_command(tmp_path):
    done = run_cli("--profile", small_mda_profile(tmp_path), "--out", tmp_path / "sessions")
    assert done.returncode == 0, done.stderr
    folder, = (tmp_path / "sessions").iterdir()
    report = json.loads((folder / "session.json").read_text())
    assert report["planned_slices"] == report["acquired_slices"] == 3 * 4 * 20
    assert report["ended_by"] is None and report["errors"] == [] and report["missing_slices"] == {}
    names = sorted(r["name"] for r in report["stacks"])
    assert names == sorted(f"p{p}-{pos}_c{c}-{ch}" for p, pos in enumerate(["A1", "A2", "B1", "B2"])
                           for c, ch in enumerate(["DAPI", "FITC", "Cy5"]))
    for record in report["stacks"]:
        for kind in ("fused", "depth", "stack"):
            assert (folder / f"{record['name']}.{kind}{'.ome' if kind == 'stack' else ''}.tif").is_file()
        assert record["slices"] == 20
        assert record["psnr_db"] > record["best_slice_psnr_db"] + 1, record["name"]
    # The channels followed DAPI's decision: one depth map per position.
    for position in ("p0-A1", "p3-B2"):
        depths = [tifffile.imread(folder / f"{position}_c{c}-{ch}.depth.tif") for c, ch in
                  enumerate(["DAPI", "FITC", "Cy5"])]
        np.testing.assert_array_equal(depths[0], depths[1])
        np.testing.assert_array_equal(depths[0], depths[2])
    assert "12 z-stacks fused" in done.stdout


def test_each_channel_decides_for_itself_without_a_decision_channel(tmp_path):
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"stage_positions": [{"x": 0, "y": 0, "z": 15}],
                                     "z_plan": {"range": 30, "step": 3}})
    done = run_cli("--profile", profile, "--out", tmp_path / "sessions")
    assert done.returncode == 0, done.stderr
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert [r.get("decision_from") for r in report["stacks"]] == [None, None, None]
    assert all(r["psnr_db"] > r["best_slice_psnr_db"] + 1 for r in report["stacks"])


def test_a_channel_listed_twice_is_one_wheel_position_and_scored_against_its_own_truth(tmp_path):
    """[DAPI, DAPI] (two exposures of one channel, say): the simulated wheel put DAPI at its last position,
    whose specimen is FITC's, while the score used the first's truth: 6.9 dB for a good fusion."""
    profile = small_mda_profile(tmp_path, mda={"channels": ["DAPI", "DAPI"], "z_plan": {"range": 30, "step": 3},
                                               "stage_positions": [{"x": 0, "y": 0, "z": 15}]})
    done = run_cli("--profile", profile, "--out", tmp_path / "sessions")
    assert done.returncode == 0, done.stderr
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert [r["name"] for r in report["stacks"]] == ["p0_c0-DAPI", "p0_c1-DAPI"]
    assert all(r["psnr_db"] > r["best_slice_psnr_db"] + 1 for r in report["stacks"]), report["stacks"]


@pytest.mark.parametrize("stop, status, ended_by", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                                     (signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                     (signal.SIGHUP, 129, "hung up (SIGHUP)")])
def test_ctrl_c_cancels_the_mda_and_fuses_what_was_acquired(tmp_path, stop, status, ended_by):
    profile = small_mda_profile(tmp_path, camera={"exposure_ms": 40})
    out = tmp_path / "sessions"
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(profile),
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO_ROOT, preexec_fn=with_default_sigint)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/p0-A1_c1-FITC.stack.ome.tif")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    report = json.loads(next(out.glob("*/session.json")).read_text())
    assert report["ended_by"] == ended_by  # (SIGTERM was reported as Ctrl-C)
    # The product's own line, without pymmcore-plus's coloured log line holding the whole sequence's repr.
    assert f"error: the session ended early: {ended_by}" in stderr
    assert "MDA Canceled" not in stderr and "\x1b[" not in stderr and "MDASequence" not in stderr, stderr
    assert 20 < report["acquired_slices"] < 240
    fused = [r for r in report["stacks"] if "fused" in r["outputs"]]
    assert sum(r["slices"] for r in report["stacks"]) == report["acquired_slices"]  # nothing acquired is lost
    assert len(fused) == len(report["stacks"]) >= 2
    assert report["missing_slices"]  # the stack cut short says how many slices it lacks


def test_an_mda_session_killed_with_sigkill_leaves_a_session_json_saying_it_did_not_finish(tmp_path):
    """kill -9 (the OOM killer, a power cut) mid-MDA left mda_fusion.json and the stacks, and no session.json: the
    session's own record was written only at its end. It is written as the MDA starts, and again as each z-stack is
    finished, as a single-stack session's is."""
    with mda_session_past_a_stack(tmp_path) as (process, out):
        process.send_signal(signal.SIGKILL)
    folder, = out.iterdir()
    record = json.loads((folder / "session.json").read_text())
    assert record["ended_by"].startswith("the session did not end here: this record was written as its MDA ran, with "
                                         "the z-stacks finished so far")
    assert record["kind"] == "mda" and record["planned_slices"] == 240
    assert [channel["config"] for channel in record["profile"]["mda"]["channels"]] == ["DAPI", "FITC", "Cy5"]
    assert json.loads((folder / "mda_fusion.json").read_text())["finished"] is False
    fused = [stack for stack in record["stacks"] if "fused" in stack["outputs"]]
    assert fused and all(Path(stack["outputs"]["fused"]).is_file() for stack in fused)


def test_a_second_stop_while_the_mda_winds_down_does_not_deny_what_was_acquired(tmp_path):
    """Two SIGTERMs 10 ms apart (``timeout`` sends one to the program and one to its process group; a double
    Ctrl-C): the second went off while the first wound the MDA down and escaped as a stop 'before the session
    started; nothing was acquired', with frames on disk and session.json left as the MDA began. One stop is said,
    and the session ends as after one."""
    with mda_session_past_a_stack(tmp_path, output=subprocess.PIPE) as (process, out):
        process.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    assert "nothing was acquired" not in stdout + stderr, stderr
    assert process.returncode == 143, stderr
    folder, = out.iterdir()
    record = json.loads((folder / "session.json").read_text())
    assert record["ended_by"] == "terminated (SIGTERM)", record["ended_by"]
    assert record["acquired_slices"] > 0 and any("fused" in stack["outputs"] for stack in record["stacks"])


@contextlib.contextmanager
def mda_session_past_a_stack(tmp_path: Path, output=subprocess.DEVNULL):
    """``run_session.py --profile`` of a small MDA (40 ms exposures) in a process of its own, yielded with its --out
    once its session.json names a finished z-stack; killed at the block's end if it still runs. ``output``: where its
    stdout and stderr go (text)."""
    profile = small_mda_profile(tmp_path, camera={"exposure_ms": 40})
    out = tmp_path / "sessions"
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--profile", str(profile),
                                "--out", str(out)], stdout=output, stderr=output, text=True, cwd=REPO_ROOT,
                               preexec_fn=with_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while not stacks_recorded(out) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the session ended before a z-stack of it was recorded"
        yield process, out
    finally:
        process.kill()
        process.wait(timeout=30)


def stacks_recorded(out: Path) -> bool:
    """Whether an MDA session under ``out`` has rewritten its early session.json to name a finished z-stack."""
    for record in out.glob("*/session.json"):
        with contextlib.suppress(ValueError, OSError):  # (being replaced)
            if json.loads(record.read_text()).get("stacks"):
                return True
    return False


def test_stacks_not_fused_are_not_claimed_and_the_warnings_printed_are_recorded(tmp_path):
    # One slice per stack: nothing can be fused. The summary said "4 z-stacks fused" and session.json had no
    # warnings, while the handler warned that stacks of one slice are not fused.
    profile = small_mda_profile(tmp_path, mda={"stage_positions": [{"x": 0, "y": 0, "z": 15}], "z_plan": None})
    done = run_cli("--profile", profile, "--out", tmp_path / "sessions")
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert [r["slices"] for r in report["stacks"]] == [1, 1, 1]
    assert not [r for r in report["stacks"] if "fused" in r["outputs"]]
    assert "0 of 3 z-stacks fused" in done.stdout, done.stdout
    printed = [line.removeprefix("warning: ") for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert printed and report["warnings"] == printed, done.stderr


def test_an_mda_ended_early_says_fused_only_where_the_fused_images_were_written(tmp_path, monkeypatch, capsys,
                                                                              default_sigint):
    """A MOCK of a full disk at every fused image (ENOSPC from its writer), and a real Ctrl-C once the first
    stack is on disk: the end line said 'what was acquired is saved and fused'."""
    import errno
    import os
    import threading

    import fusion.stack_stream as stack_stream
    import run_session

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(stack_stream, "write_image_tiff", no_space)
    out = tmp_path / "sessions"

    def ctrl_c_once_a_stack_is_on_disk():
        deadline = time.monotonic() + 120
        while not list(out.glob("*/p0-A1_c1-FITC.stack.ome.tif")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=ctrl_c_once_a_stack_is_on_disk)
    presser.start()
    status = run_session.main(["--profile", str(small_mda_profile(tmp_path, camera={"exposure_ms": 40})),
                               "--out", str(out)])
    presser.join()
    assert status == 130
    ended = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: the session ended")]
    assert len(ended) == 1 and "saved and fused" not in ended[0], ended
    assert "what was acquired is saved; 0 of its" in ended[0]


@pytest.mark.parametrize("change, message", [
    ({"mda": {"chanels": ["DAPI"]}},
     r"mda: unknown key 'chanels' in mda \(did you mean 'channels'\?\); allowed: autofocus_plan, axis_order, "
     r"channels, "),
    ({"mda": {"channels": [{"config": "DAPI", "exposre": 3}]}},
     r"unknown key 'exposre' in mda.channels.0 \(did you mean 'exposure'\?\)"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"rang": 4, "step": 1}}},
     r"unknown key 'rang' in mda.z_plan \(did you mean 'range'\?\); allowed: .*range"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1, "foo": 1}}}, r"unknown key 'foo' in mda.z_plan"),
    ({"mda": {"channels": ["DAPI"], "time_plan": {"interval": 1, "loop": 2}}},
     r"unknown key 'loop' in mda.time_plan \(did you mean 'loops'\?\)"),
    # A key of another kind of plan, which useq would drop; a yes or no for a number, which it takes for 1.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1, "top": 5}}},
     r"unknown key 'top' in mda.z_plan \(a ZRangeAround plan\); allowed: go_up, range, step"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": True, "step": 1}}},
     r"mda.z_plan.range: expected a number, got true"),
    # useq counted the positions of top: .inf with a traceback; a stage was sent to x: .inf.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"bottom": 0, "top": float("inf"), "step": 1}}},
     r"mda.z_plan.top: Input should be a finite number, got inf"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": float("nan")}}},
     r"mda.z_plan.step: Input should be a finite number, got nan"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1},
              "stage_positions": [{"x": float("inf"), "y": 0}]}},
     r"mda.stage_positions.0.x: Input should be a finite number, got inf"),
    ({"mda": {"channels": [{"config": "DAPI", "exposure": True}], "z_plan": {"range": 4, "step": 1}}},
     r"mda.channels.0.exposure: expected a number, got true"),
    # Nested: a position's own sequence, a multi-phase time plan's phases.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1},
              "stage_positions": [{"x": 0, "y": 0, "sequence": {"z_plan": {"rang": 3, "step": 1}}}]}},
     r"unknown key 'rang' in mda.stage_positions.0.sequence.z_plan \(did you mean 'range'\?\)"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1},
              "time_plan": {"phases": [{"interval": 1, "loops": 2}, {"interval": 2, "loop": 3}]}}},
     r"unknown key 'loop' in mda.time_plan.phases.1 \(did you mean 'loops'\?\)"),
    # A z-plan written as a list said five lines, one per kind of useq z-plan, each the same.
    ({"mda": {"channels": ["DAPI"], "z_plan": [1, 2]}},
     r"^[^\n]*bad.yaml: mda: mda.z_plan: a z_plan is a mapping of keys: \{top, bottom, step\} or "
     r"\{above, below, step\} or \{range, step\} or \{absolute: \[...\]\} or \{relative: \[...\]\}; got \[1, 2\]$"),
    ({"mda": {"channels": ["DAPI"], "time_plan": "1 s"}},
     r"^[^\n]*bad.yaml: mda: mda.time_plan: a time_plan is a mapping of keys: \{phases: \[...\]\} or "
     r"\{interval, duration\} or \{interval, loops\} or \{duration, loops\}; got '1 s'$"),
    # A z-plan of one position ran, fused nothing and warned that the sequence had no z-plan.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 0.5, "step": 1}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it gives one z position per stack \(-0.25 µm\): nothing to fuse; give a range or "
     r"top and bottom larger than the step, or two absolute positions at least"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"absolute": [5]}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it gives one z position per stack \(5 µm\): nothing to fuse"),
    # It said 'one z position per stack ( µm)'.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": -1}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it gives no z position \(a negative step\?\): nothing to fuse"),
    # A position's own z_plan: it ran, fused none of that position's stacks, and ended 0.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1},
              "stage_positions": [{"x": 0, "y": 0, "z": 15},
                                  {"x": 100, "y": 0, "z": 15, "sequence": {"z_plan": {"range": 4, "step": 0}}}]}},
     r"^[^\n]*bad.yaml: mda.stage_positions.1.sequence.z_plan: it gives one z position per stack \(-2 µm\): "
     r"nothing to fuse"),
    # Each problem once, of the kind of time plan meant (interval and loops): it said 'phases: Field required',
    # 'duration: Field required' twice and 'loops: Input should be greater than 0' twice.
    ({"mda": {"channels": ["DAPI"], "time_plan": {"interval": 0, "loops": 0}}},
     r"^[^\n]*bad.yaml: mda.time_plan.loops: Input should be greater than 0$"),
    # A phase of a multi-phase time plan: it said five lines, of phases and of the kinds of plan not meant
    # (mda.time_plan.interval: Field required, ...).
    ({"mda": {"channels": ["DAPI"], "time_plan": {"phases": [{"interval": 1, "loops": "x"}]}}},
     r"^[^\n]*bad.yaml: mda.time_plan.phases.0.loops: Input should be a valid integer, unable to parse string as an "
     r"integer$"),
    # pydantic's name for one kind of grid was taken for a key: mda.grid_plan.function-after[_validate_startat(),
    # RandomPoints].fov_width.
    ({"mda": {"channels": ["DAPI"], "grid_plan": {"rows": 2, "columns": 2, "fov_width": "wide"}}},
     r"^[^\n]*bad.yaml: mda.grid_plan.fov_width: Input should be a valid number, unable to parse string as a number$"),
    # More slices a stack than fusion takes (as a single stack's plan.z is refused): a step of 1e-7 µm ended in a
    # MemoryError as useq listed 380 million positions, 0.001 µm in minutes of silence, and one stack of 33,001 slices
    # was acquired until its fusion refused slice 32,768. Counted, not listed; the step to give is said.
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 38, "step": 1e-7}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it visits 380,000,001 positions; a stack is fused from 32,767 slices at most: "
     r"make the step 0.0012 µm or larger$"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 38, "step": 0.001}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it visits 38,001 positions; .* make the step 0.0012 µm or larger$"),
    ({"mda": {"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0, "z": 15}],
              "z_plan": {"range": 3.3, "step": 0.0001}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it visits 33,001 positions; .* make the step 0.00011 µm or larger$"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"range": 4, "step": 1},
              "stage_positions": [{"x": 0, "y": 0}, {"x": 0, "y": 0, "sequence": {
                  "z_plan": {"bottom": 0, "top": 10, "step": 0.0001}}}]}},
     r"^[^\n]*bad.yaml: mda.stage_positions.1.sequence.z_plan: it visits 100,001 positions; .* make the step "
     r"0.00031 µm or larger$"),
    ({"mda": {"channels": ["DAPI"], "z_plan": {"absolute": list(range(40000))}}},
     r"^[^\n]*bad.yaml: mda.z_plan: it visits 40,000 positions; a stack is fused from 32,767 slices at most: give "
     r"32,767 positions at most$"),
    ({"fusion": {"decision_channel": "GFP"}},
     r"decision_channel 'GFP' is not a channel of the mda plan \(DAPI, FITC, Cy5\)"),
    ({"plan": {"z": {"range": 4, "step": 1}}}, r"give plan \(one z-stack\) or mda .*, not both"),
    ({"camera": {"driver": "simulated"}, "focus": {"driver": "simulated"}}, "an mda plan runs on a Micro-Manager rig"),
])
def test_bad_mda_profiles_are_one_clear_error(tmp_path, capsys, change, message):
    import run_session

    data = yaml.safe_load(small_mda_profile(tmp_path).read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if key in data and key != "mda" else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)
    # The program's own entry, in this process (an exception that escaped would fail the test as a traceback would;
    # tests/test_sessions.py runs a bad profile through a separate `run_session.py` process).
    status = run_session.main(["--profile", str(path), "--out", str(tmp_path / "sessions")])
    stderr = capsys.readouterr().err
    assert status == 1 and stderr.startswith("error: ") and "Traceback" not in stderr
    assert "(top level)" not in stderr  # a whole-profile check names its keys itself


def test_relative_z_plan_is_centred_on_the_current_position():
    plan = useq.MDASequence(channels=["DAPI"], z_plan={"range": 4, "step": 2})
    centred = around_current_position(plan, 5.0, 6.0, 100.0)
    assert [e.z_pos for e in centred] == [98.0, 100.0, 102.0] and centred.stage_positions[0].x == 5.0
    positions = useq.MDASequence(stage_positions=[(0, 0), (1, 1, 50)], z_plan={"range": 2, "step": 2})
    assert [e.z_pos for e in around_current_position(positions, 0, 0, 10.0)] == [9.0, 11.0, 49.0, 51.0]
    absolute = useq.MDASequence(z_plan={"absolute": [1, 2]})
    assert around_current_position(absolute, 0, 0, 10.0) is absolute
    # A position's own relative plan: pymmcore-plus ran it around 0 (-2, 0, 2), wherever the stage was.
    own = useq.MDASequence(stage_positions=[useq.Position(x=0, y=0, sequence={"z_plan": {"range": 4, "step": 2}}),
                                            useq.Position(x=1, y=1, sequence={"z_plan": {"absolute": [1, 2]}}),
                                            useq.Position(x=2, y=2)])
    assert [e.z_pos for e in around_current_position(own, 0, 0, 10.0)] == [8.0, 10.0, 12.0, 1.0, 2.0, None]


def test_options_that_have_no_effect_are_recorded_in_an_mda_session_json(tmp_path):
    profile = small_mda_profile(tmp_path, mda={"stage_positions": [{"x": 0, "y": 0, "z": 15}],
                                               "z_plan": {"range": 4, "step": 2}})
    done = run_cli("--profile", profile, "--out", tmp_path / "sessions", "--view-linger-s", "1")
    assert done.returncode == 0, done.stderr
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert report["warnings"][0] == "--view-linger-s has no effect without --view (no live view is served)"
    printed = [line.removeprefix("warning: ") for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert report["warnings"] == printed, done.stderr


# -- an error that ends a thread of the device library's: recorded in session.json, naming the device --

def slide_with(request, switch_on):
    """The slide simulator's core, opened as a profile opens it; ``switch_on(camera, stage, core)`` is called as it
    opens (to switch a simulator's faults on). The opener the simulators register is back after the test."""
    import simulators.rigs  # noqa: F401  (registers the simulated openers)
    from acquisition.rig_registry import opener_for, register_opener

    real = opener_for("mda_core", "micromanager", True)

    def opener(context):
        opened = real(context)
        switch_on(context.shared["mm_camera"], context.shared["mm_stage"], opened.device)
        return opened

    register_opener("mda_core", "micromanager", opener, simulated=True)
    request.addfinalizer(lambda: register_opener("mda_core", "micromanager", real, simulated=True))


def run_in_process(monkeypatch, capsys, profile, out):
    """run_session.main on ``profile``: its exit status, session.json, and the warnings it printed."""
    import threading

    import run_session

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # main() sets its own: undone after
    status = run_session.main(["--profile", str(profile), "--out", str(out)])
    stderr = capsys.readouterr().err
    report = json.loads(next(out.glob("*/session.json")).read_text())
    return status, report, stderr


def test_a_camera_error_in_its_sequence_thread_is_a_warning_in_an_mda_session_json(tmp_path, request, monkeypatch,
                                                                                  capsys):
    # A burst (time plan without intervals) runs as one hardware sequence, in UniMMCore's acquisition thread, where
    # the camera's error ends it: Python printed it as a traceback of "Thread-3", and session.json had no word of it.
    slide_with(request, lambda camera, stage, core: camera.faults.schedule(
        3, lambda: setattr(camera.faults, "error_reply", 3)))
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0, "z": 15}],
                                     "z_plan": None, "time_plan": {"interval": 0, "loops": 8}})
    status, report, stderr = run_in_process(monkeypatch, capsys, profile, tmp_path / "sessions")
    assert status == 1 and report["acquired_slices"] == 3 and report["planned_slices"] == 8
    said = [w for w in report["warnings"] if "camera error 3" in w]
    assert len(said) == 1 and said[0].startswith("Micro-Manager camera SimCamera: an error in the device library's "
                                                 "own thread: RuntimeError: "), report["warnings"]
    # (Python's own hook prints "Exception in thread Thread-3:" and a traceback; pymmcore-plus logs to a stream of its
    # own, which an earlier test's capture may have closed: its "--- Logging error ---" is no concern here.)
    assert "Thread-" not in said[0] and "Exception in thread" not in stderr
    printed = [line.removeprefix("warning: ") for line in stderr.splitlines() if line.startswith("warning: ")]
    assert printed == report["warnings"]  # what is printed is what is recorded, once


def test_a_stage_error_that_ends_the_mda_runner_ends_the_session_and_is_recorded(tmp_path, request, monkeypatch,
                                                                               capsys):
    # The stage fails once the first stack is in: pymmcore-plus's runner thread ends with the stage's error. The
    # session said nothing of why 20 of its 40 frames came (ended_by null, no warning); Python printed a traceback.
    def stage_fails_after_the_first_stack(camera, stage, core):
        frames = []

        def frame_came(*args):
            frames.append(1)
            if len(frames) == 20:
                stage.faults.error_reply = 7

        core.mda.events.frameReady.connect(frame_came)

    slide_with(request, stage_fails_after_the_first_stack)
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI", "FITC"], "stage_positions": [{"x": 0, "y": 0, "z": 15}]})
    status, report, stderr = run_in_process(monkeypatch, capsys, profile, tmp_path / "sessions")
    assert status == 1 and report["acquired_slices"] == 20 and report["planned_slices"] == 40
    said = "pymmcore-plus's MDA runner: an error in the device library's own thread: RuntimeError: stage error 7"
    # The error that ended it is ended_by, and not a warning too (as a single-stack session's device error):
    # session.json said it twice, where the terminal said it once.
    assert report["ended_by"] == said and said not in report["warnings"], report["warnings"]
    assert f"error: the session ended early: {said}; what was acquired is saved" in stderr
    assert stderr.count("stage error 7") == 1, stderr
    assert "Exception in thread" not in stderr and "Thread-" not in said
    fused = [r["name"] for r in report["stacks"] if "fused" in r["outputs"]]
    assert fused == ["p0_c0-DAPI"], report["stacks"]  # the stack acquired before the stage failed is fused


def test_a_stage_error_before_the_first_frame_says_nothing_was_acquired_and_says_it_once(tmp_path, request,
                                                                                         monkeypatch, capsys):
    """The stage fails at the MDA's first move: the session said 'what was acquired is saved' of no frame at all, and
    printed the runner's error a second time as a warning. It says nothing was acquired, and says the error once."""
    slide_with(request, lambda camera, stage, core: core.mda.events.sequenceStarted.connect(
        lambda *args: setattr(stage.faults, "error_reply", 7)))
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0, "z": 15}]})
    status, report, stderr = run_in_process(monkeypatch, capsys, profile, tmp_path / "sessions")
    said = "pymmcore-plus's MDA runner: an error in the device library's own thread: RuntimeError: stage error 7"
    assert status == 1 and report["acquired_slices"] == 0 and report["ended_by"] == said
    assert f"error: the session ended before its first frame: {said}; nothing was acquired\n" in stderr, stderr
    assert "saved" not in stderr and stderr.count("stage error 7") == 1, stderr


# -- every z the MDA visits is checked against focus.limits before anything moves, as a single stack's plan is --

@pytest.mark.parametrize("limits, mda, said", [
    # A position's z with a relative z-plan: the stage went to 4981..5019 µm past focus.limits of ±100, without a word.
    ([-100, 100], {"stage_positions": [{"x": 0, "y": 0, "z": 5000}], "z_plan": {"range": 38, "step": 2}},
     "mda.stage_positions.0.z (5000 um) with mda.z_plan goes to 5019 um, outside the limits -100..100 um "
     "(focus.limits)"),
    # A position without z takes the stage's current z (40 µm here): its plan around it reaches -110.
    ([-100, 100], {"stage_positions": [{"x": 0, "y": 0}], "z_plan": {"range": 300, "step": 100}},
     "mda.z_plan around the stage's current z (40 um) goes to -110 um, outside the limits -100..100 um (focus.limits)"),
    ([-100, 100], {"z_plan": {"absolute": [1, 200]}},
     "mda.z_plan goes to 200 um, outside the limits -100..100 um (focus.limits)"),
    # A position's own sequence, with its own z-plan; a position's z alone, without a z-plan.
    ([-100, 100], {"stage_positions": [{"x": 0, "y": 0, "z": 15},
                                       {"x": 1000, "y": 0, "sequence": {"z_plan": {"absolute": [-5, -150]}}}],
                   "z_plan": {"range": 4, "step": 2}},
     "mda.stage_positions.1.sequence.z_plan goes to -150 um, outside the limits -100..100 um (focus.limits)"),
    # A position's own relative plan without a z: around the stage's current z (40 um), not around 0.
    ([-100, 100], {"stage_positions": [{"x": 0, "y": 0, "sequence": {"z_plan": {"range": 300, "step": 100}}}]},
     "mda.stage_positions.0.sequence.z_plan around the stage's current z (40 um) goes to -110 um, outside the "
     "limits -100..100 um (focus.limits)"),
    ([-100, 100], {"stage_positions": [{"x": 0, "y": 0, "z": 15}, {"x": 1000, "y": 0, "z": 500}], "z_plan": None,
                   "time_plan": {"interval": 0, "loops": 3}},
     "mda.stage_positions.1.z goes to 500 um, outside the limits -100..100 um (focus.limits)"),
    # Without focus.limits, the stage driver's default: a z of 1e9 ran into "Wait for device 'SimZ' timed out".
    (None, {"stage_positions": [{"x": 0, "y": 0, "z": 1e9}], "z_plan": {"range": 38, "step": 2}},
     "mda.stage_positions.0.z (1e+09 um) with mda.z_plan goes to 1e+09 um, outside the limits -10000..10000 um, the "
     "driver's default (no focus.limits given): keep mda.stage_positions.0.z (1e+09 um) with mda.z_plan inside "
     "them, or set focus.limits to the range the device really reaches"),
], ids=["position-z", "current-z", "absolute", "position-sequence", "own-plan-current-z", "no-z-plan",
         "default-limits"])
def test_an_mda_beyond_the_limits_is_refused_before_the_stage_moves(tmp_path, request, capsys, limits, mda, said):
    import run_session

    moves = []

    def record_moves(camera, stage, core):
        stage.set_position_um(40.0)  # (where the stage is when the session starts)
        real_move = stage.set_position_um
        stage.set_position_um = lambda z_um: (moves.append(z_um), real_move(z_um))

    slide_with(request, record_moves)
    profile = small_mda_profile(tmp_path, focus={"limits": limits}, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], **mda})
    status = run_session.main(["--profile", str(profile), "--out", str(tmp_path / "sessions")])
    stderr = capsys.readouterr().err
    assert status == 1 and stderr == f"error: Micro-Manager stage SimZ: {said}\n"
    assert moves == []  # the stage never moved
    assert not list((tmp_path / "sessions").glob("*"))  # no frame taken, no session folder left behind


def test_an_mda_within_the_limits_runs(tmp_path):
    profile = small_mda_profile(tmp_path, focus={"limits": [-20, 20]}, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0, "z": 15}],
                                     "z_plan": {"range": 4, "step": 2}})  # 13..17 µm
    done = run_cli("--profile", profile, "--out", tmp_path / "sessions")
    assert done.returncode == 0, done.stderr
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert report["acquired_slices"] == 3 and [r["z_um"] for r in report["stacks"]] == [[13.0, 15.0, 17.0]]


def test_an_mda_on_a_stage_reporting_a_position_that_is_not_a_number_is_named_as_such(tmp_path, request, capsys):
    # A relative z-plan centred on a stage that reports NaN: "mda.z_plan around the stage's current z (nan um) goes
    # to nan um, outside the limits", of a plan that was fine.
    import run_session

    def reports_nan(camera, stage, core):
        stage.get_position_um = lambda: float("nan")

    slide_with(request, reports_nan)
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0}],
                                     "z_plan": {"range": 4, "step": 2}})
    status = run_session.main(["--profile", str(profile), "--out", str(tmp_path / "sessions")])
    stderr = capsys.readouterr().err
    assert status == 1 and stderr == "error: Micro-Manager stage SimZ: reported a position that is not a number " \
                                     "(nan um)\n"


def test_an_mda_session_leaves_a_record_of_itself_from_its_start(tmp_path, request, monkeypatch, capsys):
    """As the MDA's first frame comes, session.json is there, saying the session has not ended (kill -9 then left
    none); the whole record replaces it at the end."""
    seen = []

    def look_at_the_record_at_the_first_frame(camera, stage, core):
        def frame_came(*args):
            if not seen:
                seen.extend(json.loads(path.read_text()) for path in (tmp_path / "sessions").glob("*/session.json"))

        core.mda.events.frameReady.connect(frame_came)

    slide_with(request, look_at_the_record_at_the_first_frame)
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], "stage_positions": [{"x": 0, "y": 0, "z": 15}],
                                     "z_plan": {"range": 12, "step": 3}})
    status, report, _ = run_in_process(monkeypatch, capsys, profile, tmp_path / "sessions")
    early, = seen
    assert early["ended_by"].startswith("the session did not end here: this record was written as its MDA started")
    assert early["planned_slices"] == 5 and early["stacks"] == []
    assert early["outputs"]["summary"] == str(Path(report["folder"]) / "mda_fusion.json")
    assert status == 0 and report["ended_by"] is None and len(report["stacks"]) == 1  # replaced at the end


def test_a_stack_that_fails_in_an_mda_session_is_one_error_line_not_also_a_warning(tmp_path, monkeypatch, capsys):
    """The handler warns of a failed stack (for a caller of its own), and the session prints the summary's errors:
    the one failure was said twice, as 'warning:' and 'error:'. A MOCK of a full disk at one stack's fused image
    (ENOSPC from its writer)."""
    import errno

    import fusion.stack_stream as stack_stream

    write = stack_stream.write_image_tiff

    def no_space_for_fitc(path, *args, **kwargs):
        if "FITC" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, *args, **kwargs)

    monkeypatch.setattr(stack_stream, "write_image_tiff", no_space_for_fitc)
    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI", "FITC"], "stage_positions": [{"x": 0, "y": 0, "z": 15}],
                                     "z_plan": {"range": 12, "step": 3}})
    status, report, stderr = run_in_process(monkeypatch, capsys, profile, tmp_path / "sessions")
    assert status == 1
    said = [line for line in stderr.splitlines() if "No space left on device" in line]
    assert len(said) == 1 and said[0].startswith("error: "), stderr
    assert len(report["errors"]) == 1 and not [w for w in report["warnings"] if "No space left" in w]


def test_an_mda_on_the_simulated_slide_sets_the_profiles_micromanager_properties(tmp_path):
    """An MDA on the simulated slide ran with micromanager.properties naming a property its camera does not have, and
    exited 0 without a word: the slide's core never set them (a regression round). They are set, as on any core."""
    data = yaml.safe_load(small_mda_profile(tmp_path).read_text())
    data["micromanager"]["properties"] = {"SimCamera": {"NoSuchProperty": "5"}}
    path = tmp_path / "props.yaml"
    path.write_text(yaml.safe_dump(data))
    done = run_cli("--profile", path, "--out", tmp_path / "sessions")
    assert done.returncode == 1
    assert "micromanager.properties: no property 'NoSuchProperty'" in done.stderr, done.stderr


def multi_camera_config(tmp_path) -> Path:
    """The demo configuration with a second camera and Micro-Manager's Multi Camera over both as the core's camera."""
    from tests.devices_fixtures import demo_config

    lines = Path(demo_config()).read_text().splitlines()
    lines.insert(lines.index("Device,Camera,DemoCamera,DCam") + 1, "Device,Camera2,DemoCamera,DCam\n"
                                                                   "Device,Multi,Utilities,Multi Camera")
    lines[lines.index("Property,Core,Camera,Camera")] = ("Property,Multi,Physical Camera 1,Camera\n"
                                                         "Property,Multi,Physical Camera 2,Camera2\n"
                                                         "Property,Core,Camera,Multi")
    config = tmp_path / "multi-camera.cfg"
    config.write_text("\n".join(lines) + "\n")
    return config


def multi_camera_properties(bits: tuple[int, int]) -> dict:
    """The two cameras at ``bits`` bits per sample (set by the profile: the configuration's startup preset sets the
    first's), cropped small (quick MDAs)."""
    return {camera: {"PixelType": "16bit", "BitDepth": depth, "OnCameraCCDXSize": 64, "OnCameraCCDYSize": 48}
            for camera, depth in zip(("Camera", "Camera2"), bits)}


def multi_camera_profile(tmp_path, bits: tuple[int, int]) -> Path:
    """A one-stack MDA (3 slices) on ``multi_camera_config``, the cameras at ``bits``."""
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump({
        "micromanager": {"config": str(multi_camera_config(tmp_path)), "properties": multi_camera_properties(bits)},
        "camera": {"driver": "micromanager", "exposure_ms": 1}, "focus": {"driver": "micromanager"},
        "mda": {"z_plan": {"range": 2, "step": 1}}, "fusion": {"method": "sf"}}, sort_keys=False))
    return path


def test_a_multi_camera_mda_completes_fusing_each_cameras_stack_at_its_own_bit_depth(tmp_path, monkeypatch, capsys):
    """A multi-camera MDA always reported failure (exit 1): it planned 3 frames and got 6 (the plan did not count
    the cameras), and its summary said stack p0 was never started (the plan had no camera index) although each
    camera's stack was fused. The plan counts a frame per event and camera now, and a stack per position and camera:
    the session completes and says per camera what was fused. And each camera's stack says its own camera's bit depth
    (the depth was read for the core's camera only, the Multi Camera: 11 bits said 12). Micro-Manager's Multi Camera
    over the demo config's camera at 11 bits and a second at 10."""
    import threading

    import run_session
    from tests.test_ome_metadata import validated_ome

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # main() sets its own: undone after
    status = run_session.main(["--profile", str(multi_camera_profile(tmp_path, (11, 10))),
                               "--out", str(tmp_path / "sessions")])
    said = capsys.readouterr()
    report = json.loads(next((tmp_path / "sessions").glob("*/session.json")).read_text())
    assert status == 0, said.err
    assert "session: 6 of 6 frames, 2 z-stacks fused" in said.out, said.out
    assert "cameras: Camera 1 of 1 z-stacks fused, Camera2 1 of 1 z-stacks fused" in said.out, said.out
    assert "not started" not in said.err, said.err
    assert report["planned_slices"] == report["acquired_slices"] == 6 and report["stacks_not_started"] == []
    assert report["cameras"] == {"Camera": {"stacks": 1, "fused": 1, "frames": 3},
                                 "Camera2": {"stacks": 1, "fused": 1, "frames": 3}}
    bits = {record["camera"]: validated_ome(record["outputs"]["stack"]).images[0].pixels.significant_bits
            for record in report["stacks"]}
    assert bits == {"Camera": 11, "Camera2": 10}


def test_a_multi_camera_mda_stopped_by_ctrl_c_says_per_camera_how_many_stacks_were_planned(tmp_path, monkeypatch,
                                                                                           capsys, default_sigint):
    """Ctrl-C once each camera's first of 6 stacks (6 time points, 1 s apart) is begun: the per-camera line said
    'Camera 1 of 1 z-stacks fused', leaving out the 5 stacks that never started. It counts each camera's planned
    stacks."""
    import os
    import threading

    import run_session

    path = multi_camera_profile(tmp_path, (12, 12))
    data = yaml.safe_load(path.read_text())
    data["mda"]["time_plan"] = {"interval": 1, "loops": 6}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "sessions"

    def ctrl_c_once_each_camera_began_a_stack():
        deadline = time.monotonic() + 120
        # (On its stack files: a first fusion in a process may take longer than the 5 s the MDA runs, compiling.)
        while len(list(out.glob("*/*t0_cam*.stack.ome.tif"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # main() sets its own: undone after
    presser = threading.Thread(target=ctrl_c_once_each_camera_began_a_stack)
    presser.start()
    status = run_session.main(["--profile", str(path), "--out", str(out)])
    presser.join()
    said = capsys.readouterr()
    report = json.loads(next(out.glob("*/session.json")).read_text())
    assert status == 130, said.err
    started = {camera: counted["stacks"] for camera, counted in report["cameras"].items()}
    assert started["Camera"] < 6 and report["stacks_not_started"], report  # (stopped before the end)
    line, = [text for text in said.out.splitlines() if text.startswith("  cameras: ")]
    assert line == "  cameras: " + ", ".join(f"{camera} {report['cameras'][camera]['fused']} of 6 z-stacks fused"
                                             for camera in ("Camera", "Camera2")), said.out


@pytest.mark.parametrize("second_camera, said", [
    # An 8bit camera beside a 16bit one: the MDA failed at its first frame with "SystemError: <built-in method
    # getImage ...> returned NULL without setting an exception", said twice, and "what was acquired is saved".
    ({"PixelType": "8bit", "BitDepth": 8},
     "differ in pixel type: Camera 16bit (2 bytes per pixel), Camera2 8bit (1 byte per pixel); Micro-Manager's Multi "
     "Camera takes one pixel type from all of them: give them one PixelType in micromanager.properties (BitDepth may "
     "differ)"),
    # Two frame sizes: each snap failed ("Cameras differ in image size" in pymmcore-plus's log), no error said.
    ({"OnCameraCCDXSize": 32}, "differ in frame size: Camera 64 px wide x 48 high, Camera2 32 px wide x 48 high; "
                               "Micro-Manager's Multi Camera takes one frame size from all of them: give them one "
                               "size (binning, ROI or sensor size) in micromanager.properties"),
])
def test_a_multi_camera_mda_over_unlike_cameras_is_refused_before_it_starts(tmp_path, capsys, second_camera, said):
    """Micro-Manager's Multi Camera over the demo config's camera and a second one whose frames are not alike: refused
    before the MDA starts, naming each camera's pixel type (or frame size); no session folder is left behind."""
    import run_session

    path = multi_camera_profile(tmp_path, (12, 12))
    data = yaml.safe_load(path.read_text())
    data["micromanager"]["properties"]["Camera2"].update(second_camera)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    status = run_session.main(["--profile", str(path), "--out", str(tmp_path / "sessions")])
    assert status == 1
    assert capsys.readouterr().err == f"error: Micro-Manager camera Multi: its physical cameras {said}; nothing was " \
                                      "acquired\n"
    assert not list((tmp_path / "sessions").glob("*"))  # no frame taken, no session folder left behind


# -- z steps the depth map (float32) cannot hold are refused before the MDA starts, as a single stack's plan is --

def test_an_mda_whose_z_plan_steps_finer_than_the_depth_map_holds_is_refused_before_it_starts(tmp_path, capsys):
    """On the demo configuration (its stage reaches ±300 µm, and goes to 250.00001 µm exactly): a z_plan of 1e-5 µm
    steps around 250 µm acquired its 9 frames, and then the stack's fusion was refused ('push z nearer 0, or None for
    every slice', advice for a caller of the engine). Refused before the MDA starts, naming the key and the least
    step the depth map holds there; no session folder is left behind."""
    import run_session

    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({
        "micromanager": {"config": "demo", "properties": {"Camera": {"OnCameraCCDXSize": 64, "OnCameraCCDYSize": 48}}},
        "camera": {"driver": "micromanager", "exposure_ms": 1}, "focus": {"driver": "micromanager"},
        "mda": {"stage_positions": [{"x": 0, "y": 0, "z": 250}], "z_plan": {"range": 0.00008, "step": 0.00001}},
        "fusion": {"method": "sf"}}, sort_keys=False))
    status = run_session.main(["--profile", str(path), "--out", str(tmp_path / "sessions")])
    assert status == 1
    assert capsys.readouterr().err == (
        "error: mda.stage_positions.0.z (250 um) with mda.z_plan: its slices' z (249.99998, 249.99999 µm: a step of "
        "1e-05 µm) cannot be told apart in the depth map, which holds z as float32 (about 7 significant digits): give "
        "it a step of at least 1.53e-05 µm (the depth map's at 250 µm); nothing was acquired\n")
    assert not list((tmp_path / "sessions").glob("*"))  # no frame taken, no session folder left behind


def test_an_mda_stepping_1e_4_um_at_1e4_um_is_refused_before_the_stage_moves(tmp_path, request, capsys):
    """The slide simulator's stage at 10000 µm (its first position is fine): steps of 1e-4 µm there are one z to the
    depth map. The stage went there, the stack was acquired and then its fusion refused; refused before it moves."""
    import run_session

    moves = []

    def record_moves(camera, stage, core):
        real_move = stage.set_position_um
        stage.set_position_um = lambda z_um: (moves.append(z_um), real_move(z_um))

    slide_with(request, record_moves)
    profile = small_mda_profile(tmp_path, focus={"limits": [-20000, 20000]}, fusion={"decision_channel": None},
                                mda={"channels": ["DAPI"], "z_plan": {"range": 4, "step": 2},
                                     "stage_positions": [{"x": 0, "y": 0, "z": 15},
                                                         {"x": 0, "y": 0, "z": 10000,
                                                          "sequence": {"z_plan": {"range": 0.0008, "step": 0.0001}}}]})
    status = run_session.main(["--profile", str(profile), "--out", str(tmp_path / "sessions")])
    assert status == 1 and capsys.readouterr().err == (
        "error: mda.stage_positions.1.z (10000 um) with mda.stage_positions.1.sequence.z_plan: its slices' z "
        "(9999.9996, 9999.9997, 9999.9998, ... µm: a step of 0.0001 µm) cannot be told apart in the depth map, which "
        "holds z as float32 (about 7 significant digits): give it a step of at least 0.000977 µm (the depth map's at "
        "10000 µm); nothing was acquired\n")
    assert moves == []  # the stage never moved
    assert not list((tmp_path / "sessions").glob("*"))


def test_a_stack_of_one_frame_is_said_as_one_slice_in_the_summary(tmp_path, capsys):
    """A channel acquired without a z-stack (do_stack: false) is one frame a position, kept and not fused: the summary
    said '1 slices'."""
    import run_session

    profile = small_mda_profile(tmp_path, fusion={"decision_channel": None},
                                mda={"stage_positions": [{"x": 0, "y": 0, "z": 15, "name": "A1"}],
                                     "channels": ["DAPI", {"config": "FITC", "do_stack": False}],
                                     "z_plan": {"range": 4, "step": 2}})
    assert run_session.main(["--profile", str(profile), "--out", str(tmp_path / "sessions")]) == 0
    out = capsys.readouterr().out
    assert "  p0-A1_c0-DAPI: 3 slices, fused" in out
    assert "  p0-A1_c1-FITC: 1 slice, not fused, its raw stack kept\n" in out
