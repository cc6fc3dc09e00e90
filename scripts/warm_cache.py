"""Compile and cache the numba kernels that a first session or refusion needs (setup.sh runs this).

numba compiles a kernel the first time it is called with new argument types and, the kernels
being ``cache=True``, writes the machine code beside its source: ``fusion/__pycache__`` and
``simulators/__pycache__`` (``*.nbi`` index, ``*.nbc`` code; ``NUMBA_CACHE_DIR`` moves them).
Without this the first run after setup spends 10-15 s compiling. So this runs, on tiny data, what
users run first, through the real entry point: a simulated live session, and refusions of 8-bit
colour, 12- and 16-bit mono, 16-bit separate channels, moving and PNG-folder stacks, with each
composition. A kernel whose source changes is compiled again on its next use, and cached again.

    .venv/bin/python scripts/warm_cache.py
"""
from __future__ import annotations

import contextlib
import os
import io
import tempfile
import time
from pathlib import Path

import numpy as np

import run_session

REPO_ROOT = Path(__file__).resolve().parents[1]

SHAPE = (256, 320)  # large enough to be aligned (at least 192 px on the short side), quick to fuse


def small_profile(folder: Path) -> Path:
    """The default profile with a small specimen and a short plan."""
    import yaml

    profile = yaml.safe_load((REPO_ROOT / "profiles" / "simulated.yaml").read_text())
    profile["camera"]["specimen"].update(height_px=SHAPE[0], width_px=SHAPE[1])
    profile["plan"] = {"z": {"bottom": 0, "top": 40, "step": 10}}
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def rendered_stacks(folder: Path) -> list[Path]:
    """Small stacks of each kind a refusion meets first."""
    import cv2
    import tifffile

    from simulators.motion import moving_sweep
    from simulators.optics import CameraNoise, Optics, RenderedStack, render_stack
    from simulators.render_stack import write_rendered_stack
    from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

    stacks = []
    for name, color, bit_depth in (("rgb8", True, 8), ("mono12", False, 12), ("mono16", False, 16)):
        specimen = VirtualSpecimen(load_texture("astronaut", SHAPE, color=color), make_height_map("dome", SHAPE, 20.0))
        stack = render_stack(specimen, np.linspace(-2, 22, 5), Optics(0.3), CameraNoise(bit_depth=bit_depth))
        stacks.append(write_rendered_stack(folder / f"{name}.ome.tif", stack)["stack"])
    # Three 16-bit channels as Fiji saves a hyperstack (ZCYX): separate channels, measured on their evened grey.
    sweep = np.stack(stack.slices)  # (the mono16 one)
    tifffile.imwrite(folder / "channels16.tif", np.stack([sweep, sweep // 2, sweep // 8], axis=1), imagej=True,
                     metadata={"axes": "ZCYX"})
    stacks.append(folder / "channels16.tif")
    moving = moving_sweep("astronaut", "dome", SHAPE, 5, zoom=0.02, max_shift_px=4.0)
    stacks.append(write_rendered_stack(folder / "moving.ome.tif", RenderedStack(
        moving.slices, moving.z_um, moving.truth, moving.height_um))["stack"])
    pngs = folder / "png-folder"
    pngs.mkdir()
    for index, pixels in enumerate(moving.slices):
        cv2.imwrite(str(pngs / f"slice_{index}.png"), pixels[:, :, ::-1])
    stacks.append(pngs)
    return stacks


def run_quietly(argv: list[str]) -> None:
    """run_session with these arguments; its output only if it fails."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        status = run_session.main(argv)
    if status != 0:
        raise RuntimeError(f"run_session.py {' '.join(argv)} failed ({status}):\n{output.getvalue()}")


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ums-warm-") as temporary:
        folder = Path(temporary)
        run_quietly(["--profile", str(small_profile(folder)), "--out", str(folder / "sessions")])
        stacks = rendered_stacks(folder)
        for stack in stacks:
            run_quietly(["--refuse", str(stack), "--out", str(folder / "fused")])
        for composition in ("blend", "pick"):
            run_quietly(["--refuse", str(stacks[0]), "--out", str(folder / composition), "--composition", composition])
    elsewhere = os.environ.get("NUMBA_CACHE_DIR")  # numba then writes there, not beside the sources
    cached = [elsewhere] if elsewhere else \
        sorted({str(path.parent.relative_to(REPO_ROOT)) for path in REPO_ROOT.glob("*/__pycache__/*.nbc")})
    print(f"numba kernels compiled and cached in {', '.join(cached)} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
