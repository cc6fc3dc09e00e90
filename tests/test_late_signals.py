"""Stop signals at the edges of the program's life: while Python still imports numpy, SciPy and numba, and once a
whole session is saved and the program is on its way out (acquisition.stop_signals; the middle: test_sessions).

Each case runs ``run_session.py`` as a program, through a small launcher that makes the signal come at one exact
point (an import, an exit hook, the interpreter's last teardown), not after a delay that would race it.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, with_default_sigint

SAID = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)",
        signal.SIGHUP: "hung up (SIGHUP)"}

# Ctrl-C as this module's import begins (Python raises KeyboardInterrupt where the main thread is, and an import is
# where it spends the first second): every other import of the package stops halfway.
INTERRUPT_AT_IMPORT = """
import runpy, sys

class InterruptAt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, InterruptAt())
sys.argv = ["run_session.py", *{args!r}]
runpy.run_path("run_session.py", run_name="__main__")
"""

# A signal once the session is saved and said, in an exit hook: one registered as the session starts, as a library
# would, runs before the program's own. The launcher's own hook, the first registered, runs last of all: it says what
# each stop signal's handler is then, which is what it stays through the interpreter's last teardown (Python puts its
# own handlers back to the default, death, there; an ignored signal it leaves ignored), and sends one more.
SIGNAL_AT_THE_END = """
import atexit, os, runpy, signal, sys
import acquisition.stop_signals as stop_signals

SIGNAL = signal.Signals({signal_number})
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
arm = stop_signals.stop_on_signals

def stop_on_signals():
    arm()
    atexit.register(signal.raise_signal, SIGNAL)

def last_of_all():
    ignored = [signal.getsignal(number) is signal.SIG_IGN for number in STOPS]
    os.write(1, f"ignored at the end: {{ignored}}\\n".encode())
    signal.raise_signal(SIGNAL)

stop_signals.stop_on_signals = stop_on_signals
atexit.register(last_of_all)
sys.argv = ["run_session.py", *{args!r}]
runpy.run_path("run_session.py", run_name="__main__")
"""


def run_launcher(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=with_default_sigint)


def tiny_profile(tmp_path: Path) -> Path:
    """The default rig with a small specimen and three slices: a whole session in a second or two."""
    data = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    data["camera"]["specimen"].update(height_px=96, width_px=128)
    data["plan"] = {"z": {"bottom": 0, "top": 4, "step": 2}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# (SciPy's part of start-up is its core now: the engine no longer imports scipy.ndimage, which a live session imports
# once it runs, where a Ctrl-C is its own "before the session started", as test_sessions tests.)
@pytest.mark.parametrize("module", ["numpy._core._internal", "numpy.linalg", "scipy._lib._ccallback",
                                   "numba.core.config"])
def test_ctrl_c_while_python_imports_numpy_scipy_or_numba_is_one_line_and_status_130(tmp_path, module):
    # The interrupt branch imported the fusion package to name the stop signals: numpy or SciPy, half loaded, were
    # imported again and failed (ImportError: cannot load module more than once, a RecursionError in numpy's
    # __getattr__, NameError: _ndimage_api): 40 lines of traceback and exit status 1.
    done = run_launcher(INTERRUPT_AT_IMPORT.format(
        module=module, args=["--profile", str(tiny_profile(tmp_path)), "--out", str(tmp_path / "out")]))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted while starting: nothing was acquired or written"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_as_the_program_ends_after_a_whole_session_is_one_warning_and_status_0(tmp_path, signal_number):
    # SIGTERM in an exit hook printed "Exception ignored in atexit callback" and a traceback ending in Terminated; a
    # Ctrl-C as session.json appeared came mostly in the interpreter's last half second, where Python had put the
    # handlers back to the default: the process died by it (-2, 130 to a shell), saying nothing.
    out = tmp_path / "out"
    done = run_launcher(SIGNAL_AT_THE_END.format(
        signal_number=int(signal_number), args=["--profile", str(tiny_profile(tmp_path)), "--out", str(out)]))
    assert done.returncode == 0, done.stderr
    assert "session: 3 of 3 slices" in done.stdout
    assert done.stdout.splitlines()[-1] == "ignored at the end: [True, True, True]"
    assert done.stderr.strip() == f"warning: {SAID[signal_number]} as the program was ending: it cut nothing short"
    assert [path.name for path in out.glob("*/session.json")] == ["session.json"]


def test_the_stop_signals_are_the_same_where_the_fusion_package_is_not_loaded():
    from acquisition.stop_signals import STOP_SIGNALS
    from fusion.held_signals import STOP_SIGNALS as HELD

    assert STOP_SIGNALS == HELD
