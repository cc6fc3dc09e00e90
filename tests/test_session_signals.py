"""SIGTERM (timeout, systemd, cluster schedulers) ends a session or a refusion as Ctrl-C does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tifffile

from tests.conftest import REPO_ROOT
from tests.test_sessions import start_session_process, wait_for_slices, write_slow_profile

pytestmark = [pytest.mark.slow, pytest.mark.hardware_sim]


def test_sigterm_saves_finalizes_fuses_and_returns_the_focus(tmp_path):
    out = tmp_path / "sessions"
    process = start_session_process(write_slow_profile(tmp_path), out)
    stack = wait_for_slices(out, 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM)" in stderr and "saved in" in stderr
    report = json.loads((stack.parent / "session.json").read_text())
    assert report["ended_by"] == "terminated (SIGTERM)" and report["errors"] == []  # the focus went back
    with tifffile.TiffFile(stack) as tiff:
        assert tiff.is_ome and tiff.series[0].shape[0] == report["acquired_slices"] >= 3
    assert (stack.parent / "fused.tif").is_file()


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
