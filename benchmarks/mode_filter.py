"""Seconds for the majority (mode) filter on a full-resolution decision map.

    python -m benchmarks.mode_filter [--height 1944 --width 2592]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fusion.decision import clean_decision, default_mode_filter_px


def decision_map(shape, n_slices, rng):
    """Smooth depth with speckle: what an argmax over a real stack looks like."""
    from scipy import ndimage

    coarse = ndimage.zoom(rng.random((shape[0] // 64 + 1, shape[1] // 64 + 1)), 64, order=1)
    labels = (coarse[: shape[0], : shape[1]] * n_slices).astype(np.int16).clip(0, n_slices - 1)
    speckle = rng.random(shape) < 0.1
    labels[speckle] = rng.integers(0, n_slices, int(speckle.sum()))
    return labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1944)
    parser.add_argument("--width", type=int, default=2592)
    args = parser.parse_args()
    shape = (args.height, args.width)
    rng = np.random.default_rng(0)
    clean_decision(decision_map((64, 64), 4, rng), 4, 9)  # compile outside the timings
    print(f"mode filter on {shape[0]}x{shape[1]} ({shape[0] * shape[1] / 1e6:.1f} MP); "
          f"default window {default_mode_filter_px(shape)} px")
    print(f"{'slices':>6} {'window px':>9} {'seconds':>8}")
    for n_slices in (8, 32, 128):
        labels = decision_map(shape, n_slices, rng)
        for window_px in (31, default_mode_filter_px(shape), 121):
            started = time.perf_counter()
            clean_decision(labels, n_slices, window_px)
            print(f"{n_slices:>6} {window_px:>9} {time.perf_counter() - started:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
