"""Slices per second and peak memory of the streaming engine, by stack depth and frame size.

Each configuration runs in a fresh process so that its peak resident memory is its own.
Slices come from a small rendered TIFF, read one at a time (reading is not timed), and are
pushed with no file behind them, as in a live session: the engine spills them to its
temporary TIFF.

    python -m benchmarks.throughput [--sizes 1MP 5MP] [--depths 8 32 128] [--compositions pyramid blend]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    """Linux: restart the high-water mark (VmHWM) so the peak is the engine's run, not the imports."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def run_one(frames: Path, n_slices: int, composition: str) -> dict:
    """Child process: push n_slices frames, then finish; report timings and peak RSS."""
    import numpy as np
    import tifffile

    from fusion import FusionSettings, StreamingFusion
    from fusion.allocator import keep_freed_memory

    keep_freed_memory()  # as run_session.py and the batch workers run the engine (fusion/allocator.py)

    with tifffile.TiffFile(frames) as tiff:
        n_distinct = len(tiff.pages)
        first = tiff.pages[0].asarray()
        # Warm up the numba kernels on a small frame, outside the timings.
        warm = StreamingFusion((64, 64) + first.shape[2:], first.dtype, FusionSettings(composition=composition))
        for _ in range(2):
            warm.push(np.ascontiguousarray(first[:64, :64]))
        warm.finish()
        del warm
        _reset_peak_rss()
        rss_before_mb = _status_mb("VmRSS")
        engine = StreamingFusion(first.shape, first.dtype, FusionSettings(composition=composition))
        push_s = 0.0
        for index in range(n_slices):
            pixels = tiff.pages[index % n_distinct].asarray()
            started = time.perf_counter()
            engine.push(pixels, float(index))
            assert engine.n_slices == index + 1  # folded in (a push may return before, beside an alignment)
            last_push_s = time.perf_counter() - started
            push_s += last_push_s
            del pixels
        started = time.perf_counter()
        engine.finish()
        finish_s = time.perf_counter() - started
    return {"slices": n_slices, "push_s": push_s, "slices_per_s": n_slices / push_s, "finish_s": finish_s,
            "after_last_s": last_push_s + finish_s,
            "peak_rss_mb": _status_mb("VmHWM"), "rss_after_imports_mb": rss_before_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1MP", "5MP"])
    parser.add_argument("--depths", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--compositions", nargs="+", default=["pyramid", "blend"],
                        choices=["pyramid", "blend", "pick"], help="side by side, in one run")
    parser.add_argument("--mono", action="store_true", help="monochrome frames instead of RGB")
    parser.add_argument("--child", nargs=3, metavar=("FRAMES", "N", "COMPOSITION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), int(args.child[1]), args.child[2])))
        return 0

    from benchmarks._frames import SIZES, frames_file

    cache = Path(tempfile.gettempdir()) / "ums-fusion-bench"
    cache.mkdir(exist_ok=True)
    print(f"{'mono' if args.mono else 'RGB'} uint8, default measure (sf); blend/pick: 31x31 window, "
          f"mode filter min(H,W)/20")
    print("peak MB: resident high-water mark during push+finish; base MB: resident before the engine; "
          "ready s: the fused result after the last slice is handed over (its push + finish: a live "
          "session's delay when fusion keeps up with the camera)")
    print(f"{'composition':>11} {'size':>5} {'slices':>6} {'slices/s':>9} {'finish s':>9} {'ready s':>8} "
          f"{'peak MB':>8} {'base MB':>8}")
    for size in args.sizes:
        frames = frames_file(cache, size, color=not args.mono)
        for composition in args.compositions:
            peaks = {}
            for depth in args.depths:
                child = [sys.executable, "-m", "benchmarks.throughput", "--child", str(frames), str(depth), composition]
                done = subprocess.run(child,
                                      capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                row = json.loads(done.stdout.strip().splitlines()[-1])
                peaks[depth] = row["peak_rss_mb"]
                print(f"{composition:>11} {size:>5} {depth:>6} {row['slices_per_s']:>9.2f} {row['finish_s']:>9.3f} "
                      f"{row['after_last_s']:>8.3f} {row['peak_rss_mb']:>8.0f} {row['rss_after_imports_mb']:>8.0f}",
                      flush=True)
            if len(peaks) > 1:
                low, high = min(peaks), max(peaks)
                print(f"{composition:>11} {size}: peak memory at {high} slices / at {low} slices = "
                      f"{peaks[high] / peaks[low]:.2f}  ({SIZES[size][0]}x{SIZES[size][1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
