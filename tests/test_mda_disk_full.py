"""An MDA session whose output disk fills mid-sequence stops there, as a single-stack session does, says so in one line,
prints what it made, keeps what it acquired readable, and leaves no empty stack file.

Real parts: a small file system (tmpfs, where mounting is permitted) filled by another writer, the slide simulator's
UniMMCore run by pymmcore-plus's MDA runner, the program's own entry run in this process."""
from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import weakref

import pytest
import tifffile
import yaml

from tests.conftest import small_tmpfs
from tests.test_mda_sessions import PROFILES, slide_with, small_mda_profile

pytestmark = pytest.mark.hardware_sim

SLICES = 7  # per stack: 2 positions x 2 channels x 7 slices = 28 frames, in the order p0 DAPI, p0 FITC, p1 DAPI, ...
FRAME_BYTES = 120 * 160 * 2  # small_mda_profile's frames, 16-bit


def fill(disk) -> None:
    """Another program fills ``disk`` to its last byte."""
    with open(disk / "filler", "wb", buffering=0) as filler:
        for size in (1 << 16, 1 << 12, 1 << 9, 1 << 6, 1 << 3, 1):
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * size)


def wait_until_stored(disk, stack: str, slices: int) -> None:
    """Until ``slices`` frames of ``stack`` are in its file (the handler stores them on a thread of its own)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        files = list(disk.glob(f"*/{stack}.stack.ome.tif"))
        if files and files[0].stat().st_size >= slices * FRAME_BYTES:
            return
        time.sleep(0.005)
    raise AssertionError(f"{stack} did not get {slices} slices within 20 s")


@pytest.mark.parametrize("filled_at, stack_cut", [(SLICES + 1, 0),  # at the first frame of the second stack
                                                   (SLICES + 4, 3)])  # in the middle of it
def test_a_disk_that_fills_during_an_mda_stops_it_at_once(tmp_path, request, monkeypatch, capsys, filled_at,
                                                          stack_cut):
    # The MDA took all 28 frames, each after the disk filled printing "frame ... not stored"; left 0-byte stack files
    # for the stacks it began after; ended with only "cannot write session.json", and aborted ('FATAL: exception not
    # rethrown', exit 134) in 5 of 8 runs: the core was still alive when the interpreter finalised.
    import run_session

    taken: list[int] = []
    cores: list[weakref.ref] = []
    disk_holder: list = []

    def disk_fills_at_a_frame(camera, stage, core):
        cores.append(weakref.ref(core))

        def frame_came(*args):  # (pymmcore-plus's runner thread, before the handler sees the frame)
            taken.append(1)
            if len(taken) == filled_at:  # once the frames before it are stored: the stack cut where planned
                wait_until_stored(disk_holder[0], *(("p0-A1_c1-FITC", stack_cut) if stack_cut else
                                                    ("p0-A1_c0-DAPI", SLICES)))
                fill(disk_holder[0])

        core.mda.events.frameReady.connect(frame_came)

    slide_with(request, disk_fills_at_a_frame)
    positions = yaml.safe_load((PROFILES / "simulated-mda.yaml").read_text())["mda"]["stage_positions"][:2]
    profile = small_mda_profile(tmp_path, camera={"exposure_ms": 30},
                                mda={"stage_positions": positions, "channels": ["DAPI", "FITC"],
                                     "z_plan": {"range": 2 * (SLICES - 1), "step": 2}})
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # main() sets its own: undone after
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        disk_holder.append(disk)
        status = run_session.main(["--profile", str(profile), "--out", str(disk)])
        out, err = capsys.readouterr()
        assert status == 1, err
        # Stopped within a frame or two: pymmcore-plus ends the event under way.
        assert filled_at <= len(taken) <= filled_at + 2, (len(taken), err)
        assert cores and cores[0]() is None  # the core was freed before the session returned
        folder, = [path for path in disk.iterdir() if path.is_dir()]
        ended = [line for line in err.splitlines() if line.startswith("error: the session ended early: ")]
        assert len(ended) == 1, err
        assert re.match(rf"error: the session ended early: the disk is full: the frame at z=\S+ µm of stack "
                        rf"p0-A1_c1-FITC was not stored: .*{re.escape(str(folder))}.*; the MDA was stopped there; "
                        r"what was acquired is saved", ended[0]), ended[0]
        assert "Traceback" not in err and "not stored: [Errno" not in err
        # What was made, printed though session.json could not be written.
        assert f"session: {len(taken)} of 28 frames" in out and "  p0-A1_c0-DAPI: 7 slices, " in out, out
        assert f"error: cannot write session.json into {folder}" in err
        assert "planned z-stacks not started: p1-A2_c0-DAPI, p1-A2_c1-FITC" in err
        (disk / "filler").unlink()
        # No empty stack file; what was acquired is readable, in whole slices.
        assert all(path.stat().st_size > 0 for path in folder.iterdir()), sorted(folder.iterdir())
        assert len(tifffile.TiffFile(folder / "p0-A1_c0-DAPI.stack.ome.tif").pages) == SLICES
        partial = folder / "p0-A1_c1-FITC.stack.ome.tif"
        if stack_cut == 0:
            assert not partial.exists() and "  p0-A1_c1-FITC: 0 slices, nothing stored" in out
        else:
            with tifffile.TiffFile(partial) as stack:
                assert [page.asarray().shape for page in stack.pages] == [(120, 160)] * stack_cut
            assert f"  p0-A1_c1-FITC: {stack_cut} slices, " in out
        refused = run_session.main(["--refuse", str(folder), "--out", str(tmp_path / "refused")])
        assert refused == 0, capsys.readouterr().err
    assert not os.path.ismount(tmp_path / "disk")


def test_an_mda_followed_from_napari_stops_when_the_disk_fills(tmp_path):
    """napari-micromanager runs the MDA; the follower's handler cancels it at the first frame it cannot store
    (it went on exposing the remaining frames of the sweep for nothing)."""
    import useq

    from napari_ums_fusion.mda_follow import MDAFollower
    from tests.test_mda_handler import slide_core

    planned, filled_at = 20, 4
    taken: list[int] = []
    with slide_core(["DAPI"]) as (core, camera), small_tmpfs(tmp_path / "disk", "1m") as disk:
        camera.set_exposure(20.0)
        follower = MDAFollower(core, disk)

        def frame_came(*args):  # (the runner's thread, before the handler sees the frame)
            taken.append(1)
            if len(taken) == filled_at:
                fill(disk)

        core.mda.events.frameReady.connect(frame_came)
        try:
            core.mda.run(useq.MDASequence(channels=["DAPI"], z_plan={"range": 2 * (planned - 1), "step": 2}))
        finally:
            follower.stop()
        assert follower.handler.stopped_by is not None and "the disk is full" in follower.handler.stopped_by
        # Stopped within a few frames: the handler stores each frame as the core's signal gives it, before this test's
        # listener sees it (on the runner's thread), so the frame after the fill fails and the runner stops at its
        # next event; no bound on time.
        assert filled_at <= len(taken) <= filled_at + 4, len(taken)
        (disk / "filler").unlink()
