"""numba runs the engine's kernels under TBB where the project's dependencies put it (fusion.numba_layer)."""
import os
import subprocess
import sys

import pytest

from fusion.numba_layer import tbb_library_path

PRINT_LAYER = ("import fusion, numba; from fusion.kernels import luminance_f32; import numpy; "
               "luminance_f32(numpy.zeros((2, 2, 3), numpy.uint8)); print(numba.threading_layer())")


def layer_in_a_fresh_process(**environment: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_THREADING_LAYER"} | environment
    done = subprocess.run([sys.executable, "-c", PRINT_LAYER], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(tbb_library_path() is None, reason="TBB is a dependency on Linux and Windows x86-64 only")
def test_the_installed_tbb_is_numbas_layer_so_the_engine_overlaps_its_work():
    # pip puts libtbb in the environment's lib folder, where the loader does not look: numba fell back to OpenMP.
    assert layer_in_a_fresh_process() == "tbb"


def test_a_layer_the_user_chose_is_kept():
    assert layer_in_a_fresh_process(NUMBA_THREADING_LAYER="omp") == "omp"


@pytest.mark.skipif(tbb_library_path() is None, reason="TBB is a dependency on Linux and Windows x86-64 only")
def test_asking_numba_for_tbb_finds_the_installed_one():
    assert layer_in_a_fresh_process(NUMBA_THREADING_LAYER="tbb") == "tbb"
