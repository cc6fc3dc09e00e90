"""Writing a fusion's results: TIFFs that Fiji and napari open, and a JSON report.

Every file is written under a temporary name and renamed into place, so a reader (or a
resumed batch) never sees half a file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile


class OutputWriteError(OSError):
    """Raised when an output file cannot be written (a full disk, no permission); names the file.
    Nothing half-written is left behind."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def make_folder(folder: Path, what: str, exist_ok: bool = True) -> None:
    """``folder`` (and its parents) made; where it cannot be (below a file, a read-only or vanished
    parent), an OSError of one line naming it as ``what`` ("the output folder")."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as error:
        raise OSError(f"{folder}: cannot make {what}: {error.strerror or error}") from None


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def _written_atomically(path: Path):
    """Yields the temporary name to write; renames it to ``path`` at the end, or removes it on failure."""
    partial = _atomic_target(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(error, OSError) and not isinstance(error, OutputWriteError):
            advice = "; free some space there or write elsewhere" if error.errno == errno.ENOSPC else ""
            raise OutputWriteError(error.errno, f"cannot write {path.name} into {path.parent}: "
                                                f"{error.strerror or error}{advice}") from None
        raise


def write_image_tiff(path: Path, image: np.ndarray, description: str | None = None,
                     pixel_size_um: float | None = None) -> None:
    """(H, W) or (H, W, C) image as a TIFF with shaped axes metadata (RGB for 3 or 4 channels).

    ``pixel_size_um``, when known, goes into the TIFF resolution tags (pixels per centimetre),
    which Fiji and ``pixel_size_um_of`` read back.
    """
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    axes = "YXS" if colour else ("YXC" if image.ndim == 3 else "YX")
    resolution: dict[str, Any] = {} if not pixel_size_um else {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um),
                                               "resolutionunit": "CENTIMETER"}
    with _written_atomically(path) as partial:
        # One description: tifffile's shaped JSON, or the caller's (two would leave readers to pick one: Fiji takes
        # the last, PIL and tifffile the first).
        tifffile.imwrite(partial, image, photometric="rgb" if colour else "minisblack",
                         planarconfig="contig" if image.ndim == 3 else None,
                         metadata={"axes": axes} if description is None else None, description=description,
                         **resolution)


def write_depth_tiff(path: Path, depth: np.ndarray, unit: str, pixel_size_um: float | None = None) -> None:
    """float32 (H, W) depth map; ``unit`` ("um" or "slice index") goes into the description.
    NaN marks pixels with no texture to tell depth by (Fiji and napari show them as empty)."""
    write_image_tiff(path, depth.astype(np.float32),
                     description=json.dumps({"depth_unit": unit, "nan": "no texture: depth unknown"}),
                     pixel_size_um=pixel_size_um)


def pixel_size_um_of(page: tifffile.TiffPage) -> float | None:
    """The pixel size that ``write_image_tiff`` recorded (centimetre resolution tags), if any."""
    unit = page.tags.get("ResolutionUnit")
    x_resolution = page.tags.get("XResolution")
    if unit is None or x_resolution is None or unit.value != tifffile.RESUNIT.CENTIMETER:
        return None
    numerator, denominator = x_resolution.value
    return 1e4 * denominator / numerator if numerator else None


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
    text = json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    with _written_atomically(path) as partial:
        partial.write_text(text)
