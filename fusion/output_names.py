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
MDA_SUMMARY = "mda_fusion.json"  # a multi-dimensional session's report (fusion.mda)


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


def is_our_output(path: Path) -> bool:
    """Whether ``path`` is a fused image, depth map or focus curve that we wrote: named as we name them
    (``is_fused_output``) and known for one, by a report of ours beside it (a refusion's ``<name>.json``, a live
    session's, a multi-dimensional session's) or, for a depth map, by the ``depth_unit`` its description carries.
    A file only named so (someone else's ``x.fused.tif``) is a stack, or a slice, like any other."""
    if not is_fused_output(path) or not path.is_file():
        return False
    prefixed = next((path.name[: -len(suffix)] for suffix in (f".{FUSED}", f".{DEPTH}")
                     if path.name.endswith(suffix)), None)
    reports = [SESSION_REPORT] if prefixed is None else [f"{prefixed}.json", MDA_SUMMARY]
    return any(path.with_name(report).is_file() for report in reports) or _described_as_depth_map(path)


def _described_as_depth_map(path: Path) -> bool:
    """Whether a TIFF's description holds the ``depth_unit`` that ``fusion.outputs.write_depth_tiff`` writes."""
    import tifffile  # (only for files named as our depth maps, with no report beside them)

    try:
        with tifffile.TiffFile(path) as tiff:
            return "depth_unit" in (tiff.pages.first.imagej_description or tiff.pages.first.description or "")
    except (OSError, ValueError):  # not a TIFF (a PNG focus curve), or a damaged one
        return False
