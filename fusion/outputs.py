"""Writing a fusion's results: TIFFs that Fiji and napari open, and a JSON report.

Every file is written under a temporary name and renamed into place, so a reader (or a
resumed batch) never sees half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tifffile


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_image_tiff(path: Path, image: np.ndarray, description: str | None = None,
                     pixel_size_um: float | None = None) -> None:
    """(H, W) or (H, W, C) image as a TIFF with shaped axes metadata (RGB for 3 or 4 channels).

    ``pixel_size_um``, when known, goes into the TIFF resolution tags (pixels per centimetre),
    which Fiji and ``pixel_size_um_of`` read back.
    """
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    axes = "YXS" if colour else ("YXC" if image.ndim == 3 else "YX")
    resolution = {} if not pixel_size_um else {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um),
                                               "resolutionunit": "CENTIMETER"}
    partial = _atomic_target(path)
    tifffile.imwrite(partial, image, photometric="rgb" if colour else "minisblack",
                     planarconfig="contig" if image.ndim == 3 else None,
                     metadata={"axes": axes}, description=description, **resolution)
    os.replace(partial, path)


def write_depth_tiff(path: Path, depth: np.ndarray, unit: str, pixel_size_um: float | None = None) -> None:
    """float32 (H, W) depth map; ``unit`` ("um" or "slice index") goes into the description."""
    write_image_tiff(path, depth.astype(np.float32), description=json.dumps({"depth_unit": unit}),
                     pixel_size_um=pixel_size_um)


def pixel_size_um_of(page: tifffile.TiffPage) -> float | None:
    """The pixel size that ``write_image_tiff`` recorded (centimetre resolution tags), if any."""
    unit = page.tags.get("ResolutionUnit")
    x_resolution = page.tags.get("XResolution")
    if unit is None or x_resolution is None or unit.value != tifffile.RESUNIT.CENTIMETER:
        return None
    numerator, denominator = x_resolution.value
    return 1e4 * denominator / numerator if numerator else None


def write_json(path: Path, report: dict) -> None:
    partial = _atomic_target(path)
    partial.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(partial, path)
