"""Shared fixtures: rendered stacks with a known ground truth, and the real stacks in shared/."""
from __future__ import annotations

import contextlib
import os

# Before torch and numba load their OpenMP runtime: idle OpenMP threads sleep instead of spinning.
# On a busy 2-core machine spinning threads starve each other (8 small training steps: 51 s, 3.7 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

import simulators.rigs  # noqa: F401  (the simulated rigs' openers, as run_session.py registers them)
from simulators.optics import CameraNoise, Optics, RenderedStack, render_stack
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # napari's tests need no display
# pymmcore-plus gives a new core Qt signals where a QApplication exists (a napari test made one), else psygnal's.
# A test's own listener on an MDA's signals then ran on the MDA runner's thread or, queued, on the test's (blocked
# there until the MDA ended), by the order the tests ran in. The tests' cores take psygnal's, as a session's headless
# core does; the napari tests ask for Qt's (``qt_signalled_cores``), as napari-micromanager's core has them.
os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def small_profile(profile, **changes):
    """``profile`` (an acquisition.profile.Profile) with a 96x128 px specimen, to keep sessions quick (a simulated
    camera's: a real one's profile may not give one), and ``changes`` by dotted key ("camera.timeout_s": 0.5;
    faults={...})."""
    data = profile.model_dump(exclude_none=True)
    if profile.camera_simulator() is not None:
        data["camera"]["specimen"].update(height_px=96, width_px=128)
    for path, value in changes.items():
        *parents, key = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return type(profile).model_validate(data)


def rendered(texture="astronaut", surface="dome", color=True, bit_depth=8, shape=(192, 256),
             depth_um=30.0, step_um=3.0, blur_px_per_um=0.3, seed=0) -> RenderedStack:
    """A small focus sweep over a virtual specimen, from just below to just above it."""
    specimen = VirtualSpecimen(load_texture(texture, shape, color=color),
                               make_height_map(surface, shape, depth_um, np.random.default_rng(seed)))
    z_um = np.arange(-step_um, depth_um + step_um + 1e-6, step_um)
    return render_stack(specimen, z_um, Optics(blur_px_per_um=blur_px_per_um),
                        CameraNoise(bit_depth=bit_depth), seed=seed)


@pytest.fixture(scope="session")
def rgb_stack() -> RenderedStack:
    return rendered()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real stacks are not at {SHARED_DATA} (README, 'Tests': where they come from)")
    return SHARED_DATA


def with_default_sigint() -> None:
    """For ``subprocess.Popen(preexec_fn=...)`` of a child a test interrupts: where the tests were
    started in the background (``pytest &``), the shell made SIGINT ignored, and children inherit
    that; Python turns SIGINT into KeyboardInterrupt only when it starts with the default. SIGHUP too:
    under ``nohup`` it is ignored, and the program leaves it so (acquisition.stop_signals)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture
def default_sigint():
    """SIGINT raises KeyboardInterrupt in this process while the test runs, as in a terminal
    (started in the background, the tests inherit it ignored: see ``with_default_sigint``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def qt_signalled_cores(monkeypatch):
    """Cores made in the test get Qt signals, as napari-micromanager's core does (its QApplication exists)."""
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "qt")


@pytest.fixture
def one_torch_thread():
    """torch's OpenMP threads spin while they wait: on a busy 2-core machine two of them make
    small tensors many times slower than one (8 training steps at load 7: 27 s, 1.6 s); large
    ones (a whole slice through the network) still gain from two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """``folder`` (made) as a file system of ``size`` ("300k", "2m"): a tmpfs, which only root may mount; the
    test is skipped where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def usage_error(capsys, *args) -> str:
    """The stderr of the program's entry, run in this process on ``args``, which must end in a usage error (exit
    status 2, as argparse exits). Checked before anything runs, so a separate process (2 s of imports) adds nothing;
    an exception other than the exit fails the test as a traceback would."""
    import run_session

    with pytest.raises(SystemExit) as exited:
        run_session.main([*map(str, args)])
    assert exited.value.code == 2
    return capsys.readouterr().err
