"""What a session says when a device fails: the device it names, the counts it gives, the warnings and
timings session.json keeps. Real parts: the simulated Micro-Manager rigs (UniMMCore Python devices) the
shipped profiles use, sessions written to real folders."""
from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import yaml

from acquisition.profile import Profile, load_profile
from acquisition.rig import open_rig
from acquisition.session import Session, new_session_folder
from acquisition.session_events import SessionListener
from tests.conftest import REPO_ROOT, small_profile, small_tmpfs

pytestmark = pytest.mark.hardware_sim

PROFILES = REPO_ROOT / "profiles"


def small(name: str, **changes) -> Profile:
    """Shipped profile ``name``, small, with ``changes`` ("camera.timeout_s": 0.3)."""
    return small_profile(load_profile(PROFILES / f"{name}.yaml"), **changes)


def run_session(tmp_path, profile: Profile, listeners=None):
    """A session in this process (``listeners`` following it); its outcome and session.json as written."""
    rig = open_rig(profile)
    try:
        outcome = Session(profile, rig, new_session_folder(tmp_path), listeners).run(progress=False)
    finally:
        rig.close()
    return outcome, json.loads((outcome.folder / "session.json").read_text())


# -- a stage that fails in a hardware-sequenced stack is the stage's failure, as in a stepped one --

def test_a_silent_stage_in_a_sequenced_stack_ends_the_session_naming_the_stage(tmp_path):
    # The stage's settle waits ran the camera's give_up_after_s clock: the session ended "camera SimCamera: no frame
    # for 1.2 s (1 lost in a row)", though no frame was ever asked for, with every try's error the stage's.
    profile = small("simulated-sequenced", faults={"focus": {"silent": True}},
                    **{"focus.settle_timeout_s": 0.3, "camera.give_up_after_s": 1.0})
    started_s = time.monotonic()
    outcome, written = run_session(tmp_path, profile)
    took_s = time.monotonic() - started_s
    assert took_s < 22, f"took {took_s:.1f} s"  # 5x the ~4.3 s it takes idle, the rig's opening included
    stage = outcome.report.ended_by
    assert stage is not None and stage.startswith("Micro-Manager stage SimZ: still moving after 0.3 s"), stage
    assert written["ended_by"] == stage
    # Each position's run failed at the stage's move (a try and plan.retries' 2), and three lost in a row end it.
    assert [(r["slice"], r["what"]) for r in written["retries"]] == [(k, "move") for k in range(3) for _ in range(3)]
    assert all(r["error"] == stage for r in written["retries"])
    assert [(d["planned_index"], d["error"]) for d in written["dropped_frames"]] == [(k, stage) for k in range(3)]
    assert written["acquired_slices"] == 0


# -- the give-up message counts what failed --

def test_giving_up_on_a_sequenced_camera_counts_the_tries_that_failed(tmp_path):
    # The camera runs late from its fifth frame: each try (a sequence run) fails, until give_up_after_s ends it.
    # The message said "(0 lost in a row)" after two tries had failed.
    profile = small("simulated-sequenced", faults={"camera": {"delay_s": 1.0, "after_slices": 4}},
                    **{"camera.timeout_s": 0.3, "camera.give_up_after_s": 2.0})
    outcome, written = run_session(tmp_path, profile)
    ended_by = outcome.report.ended_by
    assert ended_by is not None and "gave up after camera.give_up_after_s = 2 s" in ended_by, ended_by
    failed = [r for r in written["retries"] if r["slice"] == 4]  # every try since the fourth slice came
    assert written["acquired_slices"] == 4 and len(failed) == len(written["retries"]) >= 1
    tries = f"{len(failed)} {'try' if len(failed) == 1 else 'tries'} failed"
    assert f"({tries}, 0 positions lost in a row)" in ended_by, ended_by


# -- a camera error in the device library's own thread: named, recorded, and carried by the retry --

def test_a_camera_error_in_the_sequence_thread_is_a_warning_in_session_json_naming_the_camera(tmp_path, capsys,
                                                                                             monkeypatch):
    # UniMMCore runs the camera's sequence in its own thread, where the camera's error ends it: the terminal said
    # "warning: Thread-1: RuntimeError: ...camera error 3", session.json's warnings were empty, and its retry
    # record said only that the sequence ended early.
    import run_session

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # main() sets its own: undone after
    profile = small("simulated-sequenced", faults={"camera": {"error_reply": 3, "times": 1, "after_slices": 6}})
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True)))
    assert run_session.main(["--profile", str(path), "--out", str(tmp_path / "out")]) == 0  # retried, whole
    written = json.loads(next((tmp_path / "out").glob("*/session.json")).read_text())
    said = [w for w in written["warnings"] if "camera error 3" in w]
    assert len(said) == 1 and said[0].startswith("Micro-Manager camera SimCamera: ") and "Thread-" not in said[0]
    printed = [line.removeprefix("warning: ") for line in capsys.readouterr().err.splitlines()
               if line.startswith("warning: ")]
    assert printed == written["warnings"]  # what is printed is what is recorded, once
    assert [(r["slice"], r["what"]) for r in written["retries"]] == [(6, "sequence")]
    assert "the camera ended the sequence after 6 of 13 frames" in written["retries"][0]["error"]
    assert "(device replied 'camera error 3')" in written["retries"][0]["error"]


# -- a full disk: session.json keeps the session's timings --

class FillsTheDisk(SessionListener):
    """Another program that fills the disk as the session starts (past its check that the stack fits), leaving
    ``room_bytes`` free."""

    def __init__(self, disk, room_bytes: int):
        self.disk, self.room_bytes = disk, room_bytes

    def session_started(self, session, planned_slices: int) -> None:
        (self.disk / "another-program.bin").write_bytes(bytes(shutil.disk_usage(self.disk).free - self.room_bytes))


# Room where the stack fills the disk before its last slice, and the room its end leaves takes session.json
# (a stream's is longer: it lists its flagged frames) but not the fused image.
@pytest.mark.parametrize(("name", "room_bytes"), [("simulated-sequenced", 300 << 10),
                                                  ("simulated-etl-stream", 600 << 10)])
def test_a_full_disk_leaves_the_timings_in_session_json(tmp_path, name, room_bytes):
    # The fused image finds no room: the timings were set only after the images were written, so session.json
    # lacked seconds and throughput_slices_per_s.
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        outcome, written = run_session(disk, small(name), [FillsTheDisk(disk, room_bytes)])
        assert "fused" not in written["outputs"] and written["errors"], written["errors"]  # the disk was full
        acquired = written["acquired_slices"]
        assert 0 < acquired < written["planned_slices"]
        assert written["throughput_slices_per_s"] == pytest.approx(acquired / written["seconds_acquisition"],
                                                                   rel=0.01)
        seconds = written["seconds"]
        assert seconds["total"] >= written["seconds_acquisition"] and 0 < seconds["devices"] <= seconds["total"]
        assert written["focus_scores"] is not None and len(written["focus_scores"]) == acquired
