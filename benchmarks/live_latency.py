"""How soon a live session's fused image is ready after its last slice, at 5 MP: RGB and mono, uint8 and uint16.

Pre-rendered slices (``benchmarks/_frames.py``; mono: their luminance; uint16: 12-bit values, x16 plus fixed
noise) are handed to a ``FusionWorker`` as a camera thread hands them, each once fusion has folded the one before
and a pause (``--pause-s``) has passed: fusion keeps up, and waits for no slice but the last. Timed per stack:
from handing over the last slice to ``finish()`` returning (the session's "fused +s"), split into the last slice's
fold and the finish; medians of ``--repeats`` stacks, after a warm-up stack of the same kind.

    python -m benchmarks.live_latency [--slices 9] [--repeats 5] [--kinds rgb8 mono8 rgb16 mono16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

KINDS = ("rgb8", "mono8", "rgb16", "mono16")


class _NoBuffer:
    """The worker reads nothing back: every slice waits in memory."""

    def read_slice(self, index: int) -> np.ndarray:
        raise AssertionError("no slice is read back in this benchmark")


def frames_of(kind: str, rgb: list[np.ndarray]) -> list[np.ndarray]:
    """The distinct rendered slices as ``kind``: rgb8 as rendered, mono as their luminance, 16-bit as 12-bit data."""
    frames = rgb if kind.startswith("rgb") else [np.ascontiguousarray(
        np.round(f @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)) for f in rgb]
    if kind.endswith("16"):
        rng = np.random.default_rng(0)
        frames = [f.astype(np.uint16) * 16 + rng.integers(0, 16, f.shape, np.uint16) for f in frames]
    return frames


def run_stack(frames: list[np.ndarray], n_slices: int, pause_s: float) -> dict:
    """One live stack: returns the seconds from the last slice handed over to the finished result, and its parts."""
    from fusion import FusionSettings, StreamingFusion
    from fusion.fusion_worker import FusionWorker

    engine = StreamingFusion(frames[0].shape, frames[0].dtype, FusionSettings())
    worker = FusionWorker(engine, _NoBuffer(), max_slices_in_memory=n_slices)
    for index in range(n_slices):
        if index:  # as a camera that fusion keeps up with: the slices before are fused, then a pause
            while len(worker.fusion_s) < index and worker.error is None:
                time.sleep(0.002)
            time.sleep(pause_s)
        handed = time.perf_counter()
        worker.submit(index, frames[index % len(frames)].copy(), float(index))
    worker.finish()
    folded = time.perf_counter()
    result = engine.finish()
    ready = time.perf_counter()
    assert result.depth is not None and result.decision is not None  # (made beside: reading them waits for them)
    return {"ready_s": ready - handed, "last_fold_s": folded - handed, "finish_s": ready - folded,
            "maps_s": time.perf_counter() - handed, "fold_s": statistics.median(worker.fusion_s.values()),
            "fused": result.fused}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=9, help="slices per stack (default: 9)")
    parser.add_argument("--repeats", type=int, default=5, help="stacks per kind, medians reported (default: 5)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--pause-s", type=float, default=0.1,
                        help="pause after a slice is fused before the next is handed over (default: 0.1)")
    args = parser.parse_args()

    import tifffile

    from benchmarks._frames import frames_file
    from benchmarks.measured_run import load_average, machine_line
    from fusion.allocator import keep_freed_memory

    keep_freed_memory()  # as run_session.py runs the engine
    cache = Path(tempfile.gettempdir()) / "ums-fusion-bench"
    cache.mkdir(exist_ok=True)
    rgb = list(tifffile.imread(frames_file(cache, "5MP")))
    height, width = rgb[0].shape[:2]
    print(f"{machine_line()}, load {load_average()}")
    print(f"{args.slices} slices of {width}x{height}, {args.repeats} stacks per kind (medians), each handed over once "
          f"the one before is fused and {args.pause_s:g} s have passed")
    print("fold s: a slice's fold; ready s: the last slice handed over -> finish() returned (its fold + the finish); "
          "maps: -> the depth and decision maps too")
    print(f"{'kind':>7} {'fold s':>7} {'ready s':>8} {'min':>6} {'max':>6} {'last fold':>9} {'finish':>7} "
          f"{'maps':>8}")
    for kind in args.kinds:
        frames = frames_of(kind, rgb)
        run_stack(frames, min(args.slices, 3), args.pause_s)  # (warm-up)
        runs = [run_stack(frames, args.slices, args.pause_s) for _ in range(args.repeats)]
        for run in runs[1:]:
            assert np.array_equal(run["fused"], runs[0]["fused"]), "the same stack fused differently"
        med = {key: statistics.median(r[key] for r in runs) for key in ("ready_s", "last_fold_s", "finish_s",
                                                                         "maps_s", "fold_s")}
        ready = [r["ready_s"] for r in runs]
        print(f"{kind:>7} {med['fold_s']:7.3f} {med['ready_s']:8.3f} {min(ready):6.3f} "
              f"{max(ready):6.3f} {med['last_fold_s']:9.3f} {med['finish_s']:7.3f} {med['maps_s']:8.3f}",
              flush=True)
    print(f"load after: {load_average()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
