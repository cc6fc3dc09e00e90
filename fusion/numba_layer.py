"""Let numba choose TBB as its threading layer where pip installed it (the project's dependency on Linux and Windows).

pip puts TBB's library in the environment's ``lib`` folder, where the loader does not look, so numba would fall
back to OpenMP; under OpenMP, parallel kernels run from two threads at once crashed the process now and then
(``fusion/overlap.py``), so the engine runs its maps, folds and alignment in turn there. Loading the library
globally before numba's first parallel kernel lets numba's TBB layer find it by name. ``fusion`` imports this
before anything else, and the simulators' kernels import ``fusion``; ``NUMBA_THREADING_LAYER`` still decides where
set.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# The library's name as numba's TBB layer asks for it (interface 12: TBB 2021 and later).
_LIBRARY_NAMES = {"linux": "libtbb.so.12", "win32": "tbb12.dll"}
# The values of NUMBA_THREADING_LAYER under which numba would take TBB if it found it (numba's docs).
_LAYERS_THAT_MAY_BE_TBB = ("default", "safe", "threadsafe", "tbb")


def tbb_library_path() -> Path | None:
    """Where pip put TBB's library in this environment; None where it is not there."""
    name = _LIBRARY_NAMES.get(sys.platform)
    if name is None:
        return None
    folder = Path(sys.prefix) / ("Library/bin" if sys.platform == "win32" else "lib")
    candidates = [folder / name, Path(sys.prefix) / name]  # (Windows wheels put it at the prefix's top)
    return next((path for path in candidates if path.is_file()), None)


def load_tbb() -> bool:
    """Load TBB's library so that numba finds it, unless numba was told a layer; whether it is loaded."""
    if os.environ.get("NUMBA_THREADING_LAYER", "default").lower() not in _LAYERS_THAT_MAY_BE_TBB:
        return False
    path = tbb_library_path()
    if path is None:
        return False
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError:  # a library of another architecture, or a broken install: numba falls back as before
        return False
    return True


load_tbb()
