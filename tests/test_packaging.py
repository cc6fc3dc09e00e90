"""A built wheel is the project as a user without a checkout gets it: it must carry the network
weights (or ``--method ums`` cannot run) and ``py.typed`` (or type checkers ignore our annotations)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("acquisition", "devices", "fusion", "simulators", "viewer", "napari_ums_fusion")
# What a fresh clone lacks: built or local files that must not leak into the wheel's build.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".peers-venv", "__pycache__", "*.egg-info", "build",
                                    "sessions", "checkpoints", "demo", ".pytest_cache", "tests", "benchmarks")


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The project built as a wheel, offline, from a copy of its sources."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("ums_fusion-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.slow
def test_the_wheel_carries_the_network_weights_unchanged(built_wheel):
    for name in ("ums_unetpp.pt", "ums_unetpp.json"):
        shipped = REPO_ROOT / "fusion" / "deep" / "weights" / name
        packed = f"fusion/deep/weights/{name}"
        assert packed in built_wheel.namelist(), f"{packed} is not in the wheel"
        assert hashlib.sha256(built_wheel.read(packed)).digest() == hashlib.sha256(shipped.read_bytes()).digest()


@pytest.mark.slow
def test_the_wheel_marks_every_package_typed(built_wheel):
    missing = [package for package in PACKAGES if f"{package}/py.typed" not in built_wheel.namelist()]
    assert not missing, f"no py.typed in {missing}"
