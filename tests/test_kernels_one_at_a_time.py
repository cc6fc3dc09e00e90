"""Where numba's threading layer cannot run two parallel kernels at once (workqueue, OpenMP: macOS, Linux on ARM,
or a user's NUMBA_THREADING_LAYER), the threads of one process still run kernels beside each other: the simulated
camera renders while the fusion worker folds. fusion.parallel_kernels takes them one at a time there."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["simulated.yaml"])
def test_a_live_session_under_numbas_workqueue_layer_ends_with_its_fused_image(profile, tmp_path):
    # Before: "Numba workqueue threading layer is terminating: Concurrent access has been detected", exit 134,
    # no fused image (4 runs of 4).
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    run = subprocess.run([sys.executable, str(ROOT / "run_session.py"), "--profile", str(ROOT / "profiles" / profile),
                          "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Concurrent access" not in run.stderr
    (session,) = [folder for folder in tmp_path.iterdir() if folder.is_dir()]
    assert (session / "fused.tif").is_file() and (session / "stack.ome.tif").is_file()
