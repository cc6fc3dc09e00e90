"""Speed of the deep-feature measure ("ums") by device, feature width, batch size and precision,
and what the feature width costs in quality.

Speed: slices per second of the measure alone, and of the whole engine push (measure plus the
default composition), on rendered RGB frames, a line per configuration as it is measured. Defaults by
device: on a CUDA GPU 4 MP frames (the GPU target's size), widths 0 (full) 960 480 320, batches 1 4;
on a CPU 1 MP frames, widths 480 320, batch 1 (about a minute on 2 cores; full resolution at 4 MP
takes minutes a configuration there, and GBs).
Quality (--quality): PSNR against the ground truth of the quality benchmark's rendered stacks
(benchmarks/quality_stacks.py) at 768x1024, by family, for each feature width of the deep measure
(0 = full resolution), next to the pixel spatial frequency, both with the default composition.

    python -m benchmarks.ums_speed [--size 4MP] [--device auto] [--widths 0 960 480 320]
                                   [--batches 1 4] [--precisions auto] [--quality]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from benchmarks._frames import SIZES, frames_file
from fusion import FusionSettings, StreamingFusion
from fusion.deep.deep_measure import DeepSpatialFrequency
from fusion.focus_measures import to_gray
from fusion.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]


def speed(size: str, device: str, widths: list[int], batches: list[int], precisions: list[str], repeats: int) -> None:
    import torch

    cache = Path(tempfile.gettempdir()) / "ums-fusion-bench"
    cache.mkdir(exist_ok=True)
    frames = tifffile.imread(frames_file(cache, size))
    grays = [to_gray(f) for f in frames]
    height, width = grays[0].shape
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() and device in ("auto", "cuda") else \
        f"CPU ({torch.get_num_threads()} threads)"
    print(f"ums measure, {height}x{width} ({size}) slices, on {name}", flush=True)
    print(f"{'feature width':>14} {'batch':>6} {'precision':>10} {'measure slices/s':>17}", flush=True)
    for feature_width in widths:
        for precision in precisions:
            for batch in batches:
                measure = DeepSpatialFrequency(device=device, feature_width_px=feature_width or width,
                                               precision=precision)
                measure.measure_batch(grays[:batch])  # load, warm up kernels
                _synchronize(torch)
                started = time.perf_counter()
                done = 0
                for _ in range(repeats):
                    for first in range(0, len(grays) - batch + 1, batch):
                        measure.measure_batch(grays[first:first + batch])
                        done += batch
                _synchronize(torch)
                rate = done / (time.perf_counter() - started)
                print(f"{feature_width or width:>14} {batch:>6} {precision:>10} {rate:>17.2f}", flush=True)
    # The whole push: measure, then the default composition (numba, on the CPU cores).
    engine = StreamingFusion(frames[0].shape, frames[0].dtype, FusionSettings(measure="ums", device=device))
    engine.push(frames[0])
    started = time.perf_counter()
    for pixels in list(frames[1:]) * repeats:
        engine.push(pixels)
    rate = (len(frames) - 1) * repeats / (time.perf_counter() - started)
    print(f"engine push with ums (default width {DeepSpatialFrequency.feature_width_px}, batch 1, default "
          f"composition): {rate:.2f} slices/s", flush=True)


def _synchronize(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def quality(widths: list[int], device: str, precisions: list[str], shape: tuple[int, int] = (768, 1024)) -> None:
    """Mean PSNR by stack family over the quality benchmark's stacks (benchmarks/quality_stacks.py),
    pixel spatial frequency beside the deep measure at each width and precision."""
    from benchmarks.quality_stacks import STACKS, available, render

    specs = [spec for spec in STACKS if available(spec)]
    cache = Path(tempfile.gettempdir()) / "ums-fusion-bench" / "quality-stacks"
    print(f"\nquality by feature width: mean PSNR (dB) over {len(specs)} stacks of {shape[0]}x{shape[1]}, by family")
    # label -> the deep measure's (width, precision), or None for the pixel spatial frequency
    candidates = {"sf": None, **{f"ums {width or 'full'} {precision}": (width or shape[1], precision)
                                 for width in widths for precision in precisions}}
    scores: dict[str, dict[str, list[float]]] = {}  # family -> label -> PSNR per stack
    for spec in specs:
        stack = render(spec, shape, cache)
        family = scores.setdefault(spec.family, {label: [] for label in candidates})
        for label, deep in candidates.items():
            settings = FusionSettings() if deep is None else FusionSettings(measure="ums", device=device)
            engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, settings)
            if deep is not None:  # the engine's deep measure, at this width and precision
                measure = engine._measure
                assert isinstance(measure, DeepSpatialFrequency)
                measure.feature_width_px, measure.precision = deep
            for pixels, z in zip(stack.slices, stack.z_um):
                engine.push(pixels, z)
            family[label].append(psnr(engine.finish().fused, stack.truth, spec.full_scale))
    for name, family in scores.items():
        print(f"  {name}: " + ", ".join(f"{label} {np.mean(values):.2f}" for label, values in family.items()))


def _on_gpu(device: str) -> bool:
    """Whether the measure will run on a CUDA GPU: the defaults are sized for it, else for a CPU."""
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), help="frame size (default: 4MP on a GPU, 1MP on a CPU)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--widths", nargs="+", type=int,
                        help="feature widths in px; 0 = full resolution (default: 0 960 480 320 on a GPU, "
                             "480 320 on a CPU)")
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: 1 4 on a GPU, 1 on a CPU)")
    parser.add_argument("--precisions", nargs="+", default=["auto"], help="auto, float32, float16, bfloat16")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="also measure what the feature width costs in PSNR")
    args = parser.parse_args()
    on_gpu = _on_gpu(args.device)
    args.size = args.size or ("4MP" if on_gpu else "1MP")
    args.widths = args.widths or ([0, 960, 480, 320] if on_gpu else [480, 320])
    args.batches = args.batches or ([1, 4] if on_gpu else [1])
    speed(args.size, args.device, args.widths, args.batches, args.precisions, args.repeats)
    if args.quality:
        quality(args.widths, args.device, args.precisions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
