"""SIGTERM (timeout, systemd, cluster schedulers) ends a refusion as Ctrl-C does (for sessions: test_sessions)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_sigterm_during_refusion_says_how_to_resume(tmp_path):
    # A stack that is a named pipe: opening it waits for a writer that never comes, so the
    # refusion is certainly still running when the signal arrives.
    waiting = tmp_path / "waiting.tif"
    os.mkfifo(waiting)
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", str(waiting),
                                "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=REPO_ROOT)
    # Wait until the process is blocked opening the pipe (the kernel says so), not for some time.
    deadline = time.monotonic() + 120
    while process.poll() is None and _wchan(process.pid) != "wait_for_partner":
        assert time.monotonic() < deadline, "the refusion never opened the stack"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM): run the same command with --resume" in stderr
    assert "Traceback" not in stderr


def _wchan(pid: int) -> str:
    """Where in the kernel process ``pid`` waits ("wait_for_partner": opening a named pipe)."""
    try:
        with open(f"/proc/{pid}/wchan") as wchan:
            return wchan.read().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("options, said", [
    (["--refuse", "x.tif", "--out", "out"], "nothing was fused or written"),
    (["--ref=x.tif", "--out", "out"], "nothing was fused or written"),  # (argparse's abbreviation)
    (["--profile", "simulated.yaml"], "nothing was acquired or written"),
])
def test_ctrl_c_while_starting_is_one_line_and_status_130(monkeypatch, capsys, options, said):
    # Ctrl-C while the entry point imports and reads its options (about a second): no traceback, and words for
    # what was starting (a refusion acquires nothing).
    # (Sent as a real signal, it would race the interpreter's own start-up; here the options
    # reader is what the interrupt stops.)
    import argparse
    import runpy

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    monkeypatch.setattr(sys, "argv", ["run_session.py", *options])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO_ROOT / "run_session.py"), run_name="__main__")
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip() == f"interrupted while starting: {said}"


@pytest.mark.parametrize("resume", [False, True])
def test_a_refusion_killed_while_writing_leaves_nothing_that_the_next_run_keeps(tmp_path, resume):
    """SIGKILL (the OOM killer, kill -9) mid-write leaves the run's hidden staging folder: the next run of the
    stack into that folder writes its own outputs, none of the dead run's, and leaves no staging folder."""
    import numpy as np
    import tifffile

    from fusion.batch import refuse_many
    from tests.test_refuse_bad_inputs import write_stack
    from tests.test_refuse_outputs import cli_with_trap

    out = tmp_path / "out"
    out.mkdir()
    stack = write_stack(tmp_path / "s.tif", 6, seed=1)
    # The depth map's temporary file is a named pipe: writing it waits for a reader that never comes, so the
    # run is certainly killed with its fused image written into its staging folder and its depth map not.
    process = subprocess.Popen(cli_with_trap(".s.depth.tif.partial", "fifo", "--refuse", stack, "--out", out),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    deadline = time.monotonic() + 120
    while process.poll() is None and _wchan(process.pid) != "wait_for_partner":
        assert time.monotonic() < deadline, "the refusion never reached its depth map"
        time.sleep(0.01)
    process.kill()
    process.wait(timeout=60)
    [staging] = (out / ".s.partial").iterdir()  # the dead run's own
    assert (staging / "s.fused.tif").is_file() and not (out / "s.fused.tif").exists()
    (staging / ".s.depth.tif.partial").unlink()
    (staging / ".s.depth.tif.partial").write_bytes(b"II*\0")  # as a write cut short leaves it
    (staging / "s.json").write_text('{"stale": true}')  # (even a report of the dead run's, there)

    write_stack(stack, 6, seed=2)  # another stack of that name since: a stale file would show
    outcome = refuse_many([stack], out, resume=resume, progress=False)[0]
    assert outcome.status == "done", outcome.error
    reference = refuse_many([stack], tmp_path / "reference", progress=False)[0]
    assert reference.status == "done"
    assert sorted(p.name for p in out.iterdir()) == ["s.depth.tif", "s.fused.tif", "s.json"]
    for name in ("s.fused.tif", "s.depth.tif"):
        np.testing.assert_array_equal(tifffile.imread(out / name), tifffile.imread(tmp_path / "reference" / name))
    assert json.loads((out / "s.json").read_text())["n_slices"] == 6
