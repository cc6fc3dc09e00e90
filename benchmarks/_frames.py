"""Benchmark input: a few rendered slices in a TIFF, read one at a time as a camera would deliver them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from simulators.optics import CameraNoise, Optics, render_stack
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

SIZES = {"1MP": (1024, 1024), "4MP": (1728, 2304), "5MP": (1944, 2592)}


def frames_file(folder: Path, size: str, n_distinct: int = 8, color: bool = True) -> Path:
    """Render (once) n_distinct slices of a dome at ``size`` into folder; returns the TIFF."""
    path = folder / f"frames-{size}-{'rgb' if color else 'mono'}.tif"
    if not path.exists():
        shape = SIZES[size]
        specimen = VirtualSpecimen(load_texture("astronaut", shape, color=color),
                                   make_height_map("dome", shape, 40.0))
        stack = render_stack(specimen, np.linspace(-4, 44, n_distinct), Optics(blur_px_per_um=0.3, max_blur_px=8),
                             CameraNoise(bit_depth=8))
        tifffile.imwrite(path, np.stack(stack.slices), photometric="rgb" if color else "minisblack")
    return path
