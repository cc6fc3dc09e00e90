"""Stacks per second for a batch refusion on a LocalCluster, with 1 and 2 workers.

32 stacks of 16 slices at 1 MP (RGB uint8) by default, written once to a temporary folder.

    python -m benchmarks.batch [--stacks 32] [--slices 16] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import tifffile

from benchmarks._frames import frames_file
from fusion.batch import refuse_many

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=32)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / "ums-fusion-bench"
    cache.mkdir(exist_ok=True)
    frames = tifffile.imread(frames_file(cache, "1MP"))
    work = Path(tempfile.mkdtemp(prefix="ums-fusion-batch-"))
    try:
        stacks = []
        for index in range(args.stacks):
            path = work / f"stack{index:03d}.tif"
            order = [(index + k) % len(frames) for k in range(args.slices)]
            tifffile.imwrite(path, frames[order], photometric="rgb", metadata={"axes": "ZYXS"})
            stacks.append(path)
        print(f"{args.stacks} stacks of {args.slices} slices, {frames.shape[1]}x{frames.shape[2]} RGB uint8")
        print(f"{'workers':>7} {'seconds':>8} {'stacks/s':>9} {'speed-up':>9}")
        baseline = None
        for n_workers in args.workers:
            out = work / f"out{n_workers}"
            started = time.perf_counter()
            outcomes = refuse_many(stacks, out, n_workers=n_workers, progress=False)
            seconds = time.perf_counter() - started
            failed = [o for o in outcomes if o.status != "done"]
            if failed:
                print(f"{len(failed)} stacks failed: {failed[0].error}", file=sys.stderr)
                return 1
            rate = len(stacks) / seconds
            baseline = baseline or rate
            print(f"{n_workers:>7} {seconds:>8.2f} {rate:>9.2f} {rate / baseline:>9.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
