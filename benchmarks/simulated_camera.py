"""The optics simulator at camera speed: milliseconds per frame beyond the exposure, and the
default profile's session.

    .venv/bin/python -m benchmarks.simulated_camera [--frames 17] [--sessions 3]

1. What the simulated camera computes for a frame besides waiting out its exposure
   (``DefocusRenderer.exposed``: the blur ladder blended and the camera noise added, a row at a
   time; a breathing lens renders and then exposes), over a sweep of focus positions, for
   the default profile's frame (768x1024 RGB) and for 1 MP (1024x1024, RGB and mono): median wall
   and CPU milliseconds per frame; and the one-off set-up of the blur ladder.
2. The default profile run by ``run_session.py`` in its own process, ``--sessions`` times: the
   session's seconds (session.json ``seconds.total``: first move to fused image), the median
   slice ``exposure_s`` (10 ms of exposure plus rendering), and the process's wall seconds.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as run_session.py: idle OpenMP threads sleep

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.measured_run import load_average, machine_line, run_measured
from simulators.optics import CameraNoise, DefocusRenderer, Optics
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

ROOT = Path(__file__).resolve().parents[1]

FRAMES = {"default profile 768x1024 RGB": ((768, 1024), True), "1 MP RGB": ((1024, 1024), True),
          "1 MP mono": ((1024, 1024), False)}


def frame_costs(n_frames: int) -> None:
    print(f"{'frame':>30} {'set-up s':>9} {'wall ms':>8} {'CPU ms':>7}   (per frame: render + noise)")
    for label, (shape, color) in FRAMES.items():
        specimen = VirtualSpecimen(load_texture("astronaut", shape, color=color), make_height_map("dome", shape, 40.0))
        started = time.perf_counter()
        renderer = DefocusRenderer(specimen, Optics(blur_px_per_um=0.3))
        setup_s = time.perf_counter() - started
        camera, rng = CameraNoise(), np.random.default_rng(0)
        renderer.exposed(camera, 0.0, rng)  # numba's first call: loading (or compiling) the kernels
        walls, cpus = [], []
        for focus_um in np.linspace(-4.0, 44.0, n_frames):
            wall, cpu = time.perf_counter(), time.process_time()
            renderer.exposed(camera, float(focus_um), rng)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        print(f"{label:>30} {setup_s:>9.2f} {statistics.median(walls) * 1e3:>8.1f} "
              f"{statistics.median(cpus) * 1e3:>7.1f}", flush=True)


def default_sessions(n_sessions: int) -> None:
    print(f"\n{'run':>4} {'session s':>9} {'exposure_s':>10} {'process wall s':>14} {'process CPU s':>13}  load")
    with tempfile.TemporaryDirectory(prefix="ums-camera-") as out:
        for run in range(1, n_sessions + 1):
            measured = run_measured([sys.executable, str(ROOT / "run_session.py"), "--out", out], cwd=ROOT)
            report = json.loads(max(Path(out).glob("*/session.json"), key=lambda p: p.stat().st_mtime).read_text())
            exposure_s = statistics.median(s["exposure_s"] for s in report["slices"])
            print(f"{run:>4} {report['seconds']['total']:>9.2f} {exposure_s:>10.3f} {measured.wall_s:>14.2f} "
                  f"{measured.cpu_s:>13.2f}  {load_average()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17, help="focus positions per frame size (default: 17)")
    parser.add_argument("--sessions", type=int, default=3, help="default-profile sessions (default: 3; 0: none)")
    args = parser.parse_args(argv)
    print(f"{machine_line()}, load {load_average()}")
    frame_costs(max(1, args.frames))
    if args.sessions > 0:
        default_sessions(args.sessions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
