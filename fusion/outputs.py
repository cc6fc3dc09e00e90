"""Writing a fusion's results: TIFFs that Fiji and napari open, and a JSON report.

Every file is written under a temporary name and renamed into place, so a reader (or a
resumed batch) never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import tifffile


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_image_tiff(path: Path, image: np.ndarray, description: str | None = None) -> None:
    """(H, W) or (H, W, C) image as a TIFF with shaped axes metadata (RGB for 3 or 4 channels)."""
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    axes = "YXS" if colour else ("YXC" if image.ndim == 3 else "YX")
    partial = _atomic_target(path)
    tifffile.imwrite(partial, image, photometric="rgb" if colour else "minisblack",
                     planarconfig="contig" if image.ndim == 3 else None,
                     metadata={"axes": axes}, description=description)
    os.replace(partial, path)


def write_depth_tiff(path: Path, depth: np.ndarray, unit: str) -> None:
    """float32 (H, W) depth map; ``unit`` ("um" or "slice index") goes into the description."""
    write_image_tiff(path, depth.astype(np.float32), description=json.dumps({"depth_unit": unit}))


def json_safe(value):
    """``value`` with NaN and infinity as None (null) and numpy scalars as Python numbers, so that
    strict JSON parsers (JavaScript's, Go's, jq) accept the file."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, report: dict) -> None:
    """``report`` as strict JSON (no NaN or Infinity tokens), written atomically."""
    partial = _atomic_target(path)
    partial.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    os.replace(partial, path)
