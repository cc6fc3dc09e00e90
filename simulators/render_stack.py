"""Render a focus stack of a virtual specimen to an OME-TIFF, with its ground truth beside it.

    python -m simulators.render_stack OUT.ome.tif [--texture astronaut] [--surface dome] ...

writes OUT.ome.tif (z positions in the OME metadata), OUT.truth.tif (the all-in-focus
frame) and OUT.height.tif (surface height in micrometres, float32).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

from fusion.readers import stack_name
from simulators.optics import CameraNoise, Optics, RenderedStack, render_stack
from simulators.specimens import HEIGHT_MAPS, TEXTURES, VirtualSpecimen, load_texture, make_height_map


def write_rendered_stack(path: Path, stack: RenderedStack) -> dict[str, Path]:
    """The stack as an OME-TIFF (ZYX or ZYXS) with PositionZ per plane, and the ground truth."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack(stack.slices)
    colour = data.ndim == 4
    step_um = stack.z_um[1] - stack.z_um[0] if len(stack.z_um) > 1 else 1.0
    tifffile.imwrite(path, data, photometric="rgb" if colour else "minisblack",
                     metadata={"axes": "ZYXS" if colour else "ZYX", "PhysicalSizeZ": abs(step_um),
                               "Plane": {"PositionZ": stack.z_um}})
    stem = path.parent / stack_name(path)
    written = {"stack": path, "truth": stem.with_name(stem.name + ".truth.tif"),
               "height": stem.with_name(stem.name + ".height.tif")}
    tifffile.imwrite(written["truth"], stack.truth, photometric="rgb" if colour else "minisblack")
    tifffile.imwrite(written["height"], stack.height_um.astype(np.float32))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output OME-TIFF path")
    parser.add_argument("--texture", choices=TEXTURES, default="astronaut")
    parser.add_argument("--surface", choices=HEIGHT_MAPS, default="dome")
    parser.add_argument("--height-px", type=int, default=768)
    parser.add_argument("--width-px", type=int, default=1024)
    parser.add_argument("--depth-um", type=float, default=40.0, help="surface relief")
    parser.add_argument("--slices", type=int, default=15)
    parser.add_argument("--blur-px-per-um", type=float, default=0.3)
    parser.add_argument("--bit-depth", type=int, choices=(0, 8, 10, 12, 16), default=8)
    parser.add_argument("--gray", action="store_true", help="monochrome camera")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = (args.height_px, args.width_px)
    specimen = VirtualSpecimen(load_texture(args.texture, shape, color=not args.gray),
                               make_height_map(args.surface, shape, args.depth_um,
                                               np.random.default_rng(args.seed)))
    margin_um = args.depth_um * 0.1
    z_um = np.linspace(-margin_um, args.depth_um + margin_um, args.slices)
    stack = render_stack(specimen, z_um, Optics(blur_px_per_um=args.blur_px_per_um),
                         CameraNoise(bit_depth=args.bit_depth), seed=args.seed)
    written = write_rendered_stack(args.out, stack)
    print(f"rendered {args.slices} slices of {args.texture} on a {args.surface}: "
          + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
