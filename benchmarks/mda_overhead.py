"""What the MDA fusion handler adds to a pymmcore-plus MDA's wall time, on the demo configuration.

The same sequence runs alternately without and with ``fusion.mda.StreamingFusionHandler``
(after one warm-up of each, so that numba's compilation is not counted); the median wall
times and the overhead are printed. The target (issue 17): no more than 10% at 512 x 512.

    python -m benchmarks.mda_overhead [--size 512] [--positions 2] [--channels 2] [--slices 20]
                                      [--repeats 3] [--exposure-ms 10] [--method sf]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fusion.mda import StreamingFusionHandler

ROOT = Path(__file__).resolve().parents[1]

CHANNELS = ("DAPI", "FITC", "Cy5", "Rhodamine")


def demo_core(size_px: int, exposure_ms: float):
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    core.loadSystemConfiguration()  # the demo configuration (mm-test-adapters)
    core.setProperty("Camera", "OnCameraCCDXSize", size_px)
    core.setProperty("Camera", "OnCameraCCDYSize", size_px)
    core.setExposure(exposure_ms)
    return core


def sequence(positions: int, channels: int, slices: int, axis_order: str):
    import useq

    return useq.MDASequence(
        stage_positions=[(100.0 * p, 0.0, 0.0) for p in range(positions)],
        channels=list(CHANNELS[:channels]),
        z_plan={"range": slices - 1, "step": 1.0}, axis_order=axis_order)


def timed_run(core, seq, output) -> float:
    started = time.perf_counter()
    core.mda.run(seq, output=output)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="camera frame width and height (px)")
    parser.add_argument("--positions", type=int, default=2)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exposure-ms", type=float, default=10.0)
    parser.add_argument("--method", default="sf")
    parser.add_argument("--composition", default="blend")
    parser.add_argument("--axis-order", default="tpcz")
    args = parser.parse_args()
    core = demo_core(args.size, args.exposure_ms)
    seq = sequence(args.positions, args.channels, args.slices, args.axis_order)
    frames = args.positions * args.channels * args.slices
    without: list[float] = []
    with_handler: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        def handler():
            return StreamingFusionHandler(Path(out) / f"run{len(with_handler)}", method=args.method,
                                          composition=args.composition)

        timed_run(core, seq, None)          # warm-up: adapters, caches
        timed_run(core, seq, handler())     # warm-up: numba compiles the kernels
        for _ in range(args.repeats):
            without.append(timed_run(core, seq, None))
            last = handler()
            with_handler.append(timed_run(core, seq, last))
    base, fused = statistics.median(without), statistics.median(with_handler)
    print(f"demo configuration, {args.size}x{args.size} {core.getImageBitDepth()}-bit, "
          f"exposure {args.exposure_ms:g} ms, "
          f"{args.positions} positions x {args.channels} channels x {args.slices} slices = {frames} frames, "
          f"axis order {args.axis_order}, method {args.method}/{args.composition}")
    print(f"MDA alone:        median {base:.3f} s  ({', '.join(f'{t:.3f}' for t in without)})")
    print(f"MDA with fusion:  median {fused:.3f} s  ({', '.join(f'{t:.3f}' for t in with_handler)})")
    print(f"overhead: {(fused / base - 1) * 100:+.1f}% of the MDA's wall time (target: at most +10%); "
          f"{len(last.summary['stacks'])} stacks fused, {len(last.summary['failed'])} failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
