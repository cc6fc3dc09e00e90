"""Seconds of alignment per slice at 5 MP: registration (ECC on a pyramid) plus the warp.

Slices are rendered 5 MP frames, each moved by a small known similarity transform.

    python benchmarks/alignment.py [--size 5MP]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._frames import SIZES, frames_file  # noqa: E402
from fusion.alignment import AlignSettings, SliceAligner, describe, warp_to_reference  # noqa: E402
from fusion.focus_measures import to_gray  # noqa: E402
from simulators.motion import similarity  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="5MP", choices=list(SIZES))
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / "ums-fusion-bench"
    cache.mkdir(exist_ok=True)
    frames = tifffile.imread(frames_file(cache, args.size))
    shape = frames.shape[1:3]
    rng = np.random.default_rng(0)
    truths = [np.eye(3)] + [similarity(1 + 0.003 * k, tuple(rng.uniform(-10, 10, 2)), 0.0, shape)
                            for k in range(1, len(frames))]
    moved = [cv2.warpAffine(f, t[:2], (shape[1], shape[0]), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
             for f, t in zip(frames, truths)]
    aligner = SliceAligner(shape, AlignSettings())
    aligner.add(to_gray(moved[0][:64, :64]))  # warm-up of OpenCV
    aligner = SliceAligner(shape, AlignSettings())
    register_s, warp_s = [], []
    for pixels in moved:
        gray = to_gray(pixels)
        started = time.perf_counter()
        transform = aligner.add(gray)
        register_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        warp_to_reference(pixels, transform)
        warp_s.append(time.perf_counter() - started)
    errors = [abs(describe(e)["scale"] / describe(t)["scale"] - 1) * 100 for e, t in zip(aligner.transforms, truths)]
    print(f"{len(moved)} slices {shape[0]}x{shape[1]} RGB: registration {np.mean(register_s[1:]):.3f} s/slice, "
          f"warp {np.mean(warp_s[1:]):.3f} s/slice, total {np.mean(register_s[1:]) + np.mean(warp_s[1:]):.3f} s/slice; "
          f"max scale error {max(errors):.3f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
