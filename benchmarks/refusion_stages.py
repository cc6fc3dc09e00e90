"""Where a refusion's CPU seconds go, by stage: ``run_session.py --refuse`` run in this process with every stage on
one thread at a time, so that the process's CPU clock between a stage's start and end is that stage's own.

    .venv/bin/python -m benchmarks.refusion_stages STACK [--repeats 3]

Serial on purpose: numba on one thread (its workqueue layer: no two kernels at once, so no overlap of alignment and
composition, no two-thread folds) and the slices read on the calling thread (no read-ahead). The total is then about
a default run's CPU seconds (the default's threads overlap the same work; they add little CPU), and each stage's
share is exact where timers on threads running side by side would blur them. Nested stages count once, in the
innermost. Numba's first call of each kernel (loading it from its cache) is counted apart from its stage, and the
very first apart again: it also loads numba's own registries (0.6 CPU s here, scipy.linalg's import among them).
Prints the median of each stage over the repeats, each repeat in a fresh process (start-up included).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTED_CPU_S = time.process_time()


class StageClock:
    """CPU seconds per stage label; a stage inside another counts in the inner one only."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._inner: list[float] = []   # per open stage: CPU seconds of the stages inside it

    def timed(self, label: str, function):
        def run(*args, **kwargs):
            started = time.process_time()
            self._inner.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                spent, inner = time.process_time() - started, self._inner.pop()
                self.seconds[label] = self.seconds.get(label, 0.0) + spent - inner
                if self._inner:
                    self._inner[-1] += spent
        return run


def _first_call_apart(clock: StageClock, first_label: str, label: str, function):
    """``function`` timed under ``first_label`` on its first call and under ``label`` after."""
    first, rest = clock.timed(first_label, function), clock.timed(label, function)
    called = False

    def run(*args, **kwargs):
        nonlocal called
        if called:
            return rest(*args, **kwargs)
        called = True
        return first(*args, **kwargs)
    return run


def _read_on_this_thread(read_slice, n_slices: int, depth: int = 2):
    """``fusion.read_ahead.read_ahead`` without its thread."""
    for index in range(n_slices):
        yield index, read_slice(index), 0.0


def profile_once(stack: str, out: str) -> dict[str, float]:
    """One serial refusion of ``stack`` in this process: CPU seconds per stage (run it in a fresh process)."""
    os.environ["NUMBA_NUM_THREADS"] = "1"
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    clock = StageClock()
    started = time.process_time()
    import numba.core.dispatcher as dispatcher

    import fusion.align.alignment as alignment
    import fusion.align.defocus_refine as defocus_refine
    import fusion.engine as engine
    import fusion.multiscale as multiscale
    import fusion.pyramid_composition as pyramid_composition
    import fusion.readers.base as readers
    import fusion.refuse as refuse
    clock.seconds["imports"] = time.process_time() - started + STARTED_CPU_S
    # numba's first kernel load also loads its own registries (importing scipy.linalg for its BLAS check).
    loads = (dispatcher.Dispatcher, "_compile_for_args")   # (numba's own)
    setattr(*loads, _first_call_apart(clock, "numba: first load (its registries)",
                                      "numba kernels loaded (first calls)", getattr(*loads)))
    for owner, name, label in [
            (readers.SavedStack, "read_slice", "decode"),
            (engine.StreamingFusion, "__init__", "engine set-up"),
            (engine, "to_gray", "grey (luminance)"),
            (alignment.SliceAligner, "add", "align: register"),
            (alignment, "_make_level", "align: register, levels (resize)"),
            (defocus_refine, "refine", "align: register, defocus refinement"),
            (engine, "warp_to_reference", "align: warp"),
            (pyramid_composition.PyramidComposition, "add", "compose: pyramid fold"),
            (multiscale, "_smooth", "compose: smoothing (band energy, evidence)"),
            (engine.StreamingFusion, "_finish", "finish (image, decision, depth)"),
            (refuse, "write_image_tiff", "write fused TIFF"),
            (refuse, "write_depth_tiff", "write depth TIFF")]:
        setattr(owner, name, clock.timed(label, getattr(owner, name)))
    refuse.read_ahead = _read_on_this_thread
    sys.argv = ["run_session.py", "--refuse", stack, "--out", out]
    sys.path.insert(0, str(ROOT))
    import run_session
    clock.timed("rest", run_session.main)()
    clock.seconds["process total"] = time.process_time()
    return dict(clock.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refusion_stages", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="a saved stack (a folder of images, a TIFF)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes; medians are printed (default: 3)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # (a repeat's own process)
    args = parser.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="ums-stages-") as out:
            print(json.dumps(profile_once(args.stack, out)))
        return 0
    runs = []
    for _ in range(args.repeats):
        child = subprocess.run([sys.executable, "-m", "benchmarks.refusion_stages", args.stack, "--one"], cwd=ROOT,
                               capture_output=True, text=True, check=True)
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    labels = sorted({label for run in runs for label in run}, key=lambda label: -max(r.get(label, 0.0) for r in runs))
    print(f"{args.stack}: CPU s per stage, serial, median of {args.repeats} processes")
    for label in labels:
        print(f"  {label:46s} {statistics.median(run.get(label, 0.0) for run in runs):6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
