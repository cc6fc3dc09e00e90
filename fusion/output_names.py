"""What a run's output files are called: the one place that names them.

A live session writes into its own folder: ``stack.ome.tif``, ``fused.tif``, ``depth.tif``,
``focus_curve.png`` and ``session.json``. A refusion, or each z-stack of a multi-dimensional
session, writes beside others in one folder, each file prefixed with the stack's name:
``<name>.fused.tif``, ``<name>.depth.tif``, ``<name>.json``, ``<name>.stack.ome.tif``.
"""
from __future__ import annotations

from pathlib import Path

STACK = "stack.ome.tif"
FUSED = "fused.tif"
DEPTH = "depth.tif"
FOCUS_CURVE = "focus_curve.png"
SESSION_REPORT = "session.json"


def session_outputs(folder: Path) -> dict[str, Path]:
    """The files a live session writes into its ``folder``, by kind."""
    return {"stack": folder / STACK, "fused": folder / FUSED, "depth": folder / DEPTH,
            "focus_curve": folder / FOCUS_CURVE, "report": folder / SESSION_REPORT}


def refusion_outputs(out_dir: Path, name: str) -> dict[str, Path]:
    """The three files a refusion writes for stack ``name``."""
    return {"fused": out_dir / f"{name}.{FUSED}", "depth": out_dir / f"{name}.{DEPTH}",
            "report": out_dir / f"{name}.json"}


def stack_outputs(out_dir: Path, name: str) -> dict[str, Path]:
    """The files a multi-dimensional session writes for its z-stack ``name``."""
    return {"fused": out_dir / f"{name}.{FUSED}", "depth": out_dir / f"{name}.{DEPTH}",
            "stack": out_dir / f"{name}.{STACK}"}


def is_fused_output(path: Path) -> bool:
    """Whether ``path`` is named as a fused image, depth map or focus curve we write (not a slice:
    a folder refused with --out inside itself holds them the second time round)."""
    name = path.name
    return name in (FUSED, DEPTH, FOCUS_CURVE) or name.endswith((f".{FUSED}", f".{DEPTH}"))
