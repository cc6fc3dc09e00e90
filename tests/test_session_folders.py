"""Where a live session's folder goes: its own, whatever runs beside it, and an --out that cannot hold it is said
before anything moves."""
import os
import subprocess
import sys
from pathlib import Path

from acquisition.session import new_session_folder
from tests.conftest import REPO_ROOT


def test_two_sessions_starting_in_the_same_second_each_get_their_own_folder(tmp_path, monkeypatch):
    """Another session made the folder between this one's look and its mkdir: 15 in 600 such starts failed with
    "cannot make the session folder: File exists"."""
    real_mkdir, raced = Path.mkdir, []

    def another_session_first(self, *args, **kwargs):
        if self.parent == tmp_path and not raced:
            raced.append(self)
            real_mkdir(self)  # (the other session, a moment earlier)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", another_session_first)
    folder = new_session_folder(tmp_path)
    assert folder.is_dir() and folder != raced[0] and raced[0].is_dir()  # the next name in that second


def test_an_out_that_is_a_link_to_nowhere_says_so(tmp_path):
    """It said "cannot make the session folder: File exists" of a link to an unmounted disk."""
    link = tmp_path / "sessions"
    os.symlink(tmp_path / "usb-disk" / "sessions", link)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--out", str(link)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: --out {link}: cannot make that folder: {link} is a link to {tmp_path / 'usb-disk' / 'sessions'}, "
        "which does not exist (a disk that is not mounted?)"]
