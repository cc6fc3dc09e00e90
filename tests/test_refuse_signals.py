"""SIGTERM (timeout, systemd, cluster schedulers) ends a refusion as Ctrl-C does (for sessions: test_sessions)."""
from __future__ import annotations

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


def test_ctrl_c_while_starting_is_one_line_and_status_130(monkeypatch, capsys):
    # Ctrl-C while the entry point imports and reads its options (about a second): no traceback.
    # (Sent as a real signal, it would race the interpreter's own start-up; here the options
    # reader is what the interrupt stops.)
    import argparse
    import runpy

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    monkeypatch.setattr(sys, "argv", ["run_session.py", "--refuse", "x.tif", "--out", "out"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO_ROOT / "run_session.py"), run_name="__main__")
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted while starting: nothing was acquired or written"
