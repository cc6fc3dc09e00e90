"""What keeps the first run after setup as fast as the next: cached kernels, lazy imports."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher

from tests.conftest import REPO_ROOT

HEAVY_MODULES = ("numba", "cv2", "scipy", "torch", "dask", "distributed", "pydantic", "useq", "matplotlib", "skimage")


def modules_with_kernels() -> list[str]:
    """Every project module that compiles numba kernels."""
    names = []
    for package in ("fusion", "simulators"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):  # (subpackages too: fusion/align's)
            if "@njit" in path.read_text():
                names.append(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    return names


@pytest.mark.parametrize("module_name", modules_with_kernels())
def test_every_kernel_is_cached_on_disk(module_name):
    module = importlib.import_module(module_name)
    # (a parallel kernel is wrapped in fusion.parallel_kernels.one_at_a_time: its dispatcher is __wrapped__)
    unwrapped = {name: value if isinstance(value, CPUDispatcher) else getattr(value, "__wrapped__", value)
                 for name, value in vars(module).items()}
    kernels = {name: value for name, value in unwrapped.items()
               if isinstance(value, CPUDispatcher) and value.__module__ == module_name}
    assert kernels
    for name, kernel in kernels.items():
        if kernel.targetoptions.get("inline") == "always":
            continue  # compiled into its callers, and cached with them
        assert not isinstance(kernel._cache, NullCache), f"{module_name}.{name}: @njit(..., cache=True) missing"


def test_importing_the_entry_point_loads_nothing_heavy():
    code = f"import run_session, sys; print([m for m in {HEAVY_MODULES!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
