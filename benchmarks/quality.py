"""Fusion quality against ground truth, beside every peer on the same stacks, in one run.

For each stack of ``benchmarks/quality_stacks.py`` (25 rendered stacks across specimen
families, optics and cameras) and each method (ours, and every peer that is installed: see
``benchmarks/peers.py``): PSNR and SSIM against the all-in-focus truth, and PSNR within
12 px of the truth's strong intensity edges (where halos live). The summary gives per stack
our default beside the best peer and the gain over it. Then the three real stacks of
../shared/data are fused by us and by the peers that align (focusweave, focus-stack) and
written side by side as crops to look at: numbers reward halos; eyes do not.

    python -m benchmarks.quality [--size 384x512] [--only NAME ...] [--no-ums] [--no-real] [--no-peers]
                                 [--truth ideal|best-focus] [--seed-offset N] [--work DIR]
                                 [--results benchmarks/results/quality.md]

``--seed-offset 100 --size 448x576`` renders the same kinds of stack with other noise and other
random surfaces at another size: a check that a default chosen on the usual stacks holds on others.

``--truth best-focus`` scores against the truth as the optics show it in focus (blurred by the
PSF at zero defocus): the best that any fusion of the slices can reach without inventing detail.
Against the ideal truth every method shares that blur's error, which narrows their differences.

Peers' outputs and rendered stacks are cached in --work (default /tmp/ums-fusion-bench/quality),
keyed by everything that shapes them; delete it to start afresh.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.peers import available_peers
from benchmarks.quality_stacks import SHARED_DATA, STACKS, available, best_focus_truth, render, spec_key
from fusion import FusionSettings, StreamingFusion
from fusion.focus_measures import to_gray
from fusion.metrics import edge_band, masked_psnr, psnr
from fusion.multiscale import PyramidWeighting

ROOT = Path(__file__).resolve().parents[1]

DEFAULT = "ours: pyramid (default)"
OURS = {
    DEFAULT: FusionSettings(),
    "ours: pyramid laplacian": FusionSettings(measure="laplacian"),
    "ours: blend (before)": FusionSettings(composition="blend"),
    "ours: pick (paper)": FusionSettings(composition="pick"),
    # The pyramid as it was before its powers grew with the level (one evidence and one band power).
    "ours: flat powers (before)": FusionSettings(pyramid=PyramidWeighting(evidence_power=4, band_power=12,
                                                                          evidence_pool_power=1)),
}
EDGE_BAND_PX = 12


def fuse_with_engine(slices, z_um, settings, moving=False):
    """The fused image."""
    return fusion_result(slices, z_um, settings, moving).fused


def fusion_result(slices, z_um, settings, moving=False):
    """The engine's whole result (fused image, depth map in µm, ...)."""
    if moving:  # a breathing lens: align as a lens profile does
        settings = dataclasses.replace(settings, align="auto", align_model="lens")
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, settings)
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    return engine.finish()


def depth_error(depth_um: np.ndarray, height_um: np.ndarray) -> tuple[float, float]:
    """(share of the frame with a depth, mean absolute error there in µm) of a depth map (NaN: none)."""
    defined = np.isfinite(depth_um)
    if not defined.any():
        return 0.0, float("nan")
    return float(defined.mean()), float(np.mean(np.abs(depth_um[defined] - height_um[defined])))


def ssim(image, truth, full_scale) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(image.astype(np.float64), truth.astype(np.float64), data_range=full_scale,
                                       channel_axis=2 if image.ndim == 3 else None))


def cached(path: Path, compute):
    """compute() once; later runs read the .npy (peers' outputs do not change between runs)."""
    if path.is_file():
        return np.load(path)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    np.save(partial, result)
    os.replace(partial, path)
    return result


def score_stacks(specs, shape, methods, peers, work: Path, truth_kind: str = "ideal") -> list[dict]:
    """``truth_kind``: "ideal" (the specimen itself) or "best-focus" (as the optics show it in focus)."""
    rows = []
    for spec in specs:
        started = time.perf_counter()
        stack = render(spec, shape, work / "stacks")
        truth = stack.truth if truth_kind == "ideal" else best_focus_truth(spec, stack.truth)
        moving = spec.breathing_per_um != 0
        band = edge_band(truth, spec.full_scale, EDGE_BAND_PX)
        row = {"spec": spec, "scores": {}, "seconds": {}, "depth": {},
               "best_slice": max(psnr(s, truth, spec.full_scale) for s in stack.slices)}
        for name, run in [*methods.items(), *peers.items()]:
            is_peer = name in peers
            method_started = time.perf_counter()
            try:
                if is_peer:
                    fused = cached(work / "peers" / spec_key(spec, shape) / f"{name.replace(' ', '_')}.npy",
                                   functools.partial(run, stack.slices, moving))
                else:
                    result = fusion_result(stack.slices, stack.z_um, run, moving)
                    fused = result.fused
                    if not moving:  # (a breathing stack's depth is in its first slice's frame, not the truth's)
                        row["depth"][name] = depth_error(result.depth, stack.height_um)
            except Exception as error:  # a peer that fails on a stack is a row entry, not the end
                print(f"  {spec.name}: {name} failed: {str(error).splitlines()[0][:160]}", flush=True)
                continue
            row["seconds"][name] = time.perf_counter() - method_started
            row["scores"][name] = (psnr(fused, truth, spec.full_scale), ssim(fused, truth, spec.full_scale),
                                   masked_psnr(fused, truth, band, spec.full_scale))
        peer_scores = {n: v for n, v in row["scores"].items() if n in peers}
        row["best_peer"] = max(peer_scores, key=lambda n: peer_scores[n][0]) if peer_scores else None
        ours = row["scores"][DEFAULT][0]
        best = peer_scores[row["best_peer"]][0] if peer_scores else float("nan")
        print(f"{spec.name:32s} ours {ours:6.2f}  best peer {best:6.2f} ({row['best_peer']})  gain {ours - best:+.2f}"
              f"  [{time.perf_counter() - started:.0f} s]", flush=True)
        rows.append(row)
    return rows


def summary_table(rows, peers) -> list[str]:
    lines = ["| stack | family | best slice | ours (default) | best peer | gain over best peer | SSIM ours / peer "
             f"| edge band ({EDGE_BAND_PX} px) ours / peer |",
             "|---|---|---|---|---|---|---|---|"]
    gains, band_gains = [], []
    for row in rows:
        ours = row["scores"][DEFAULT]
        peer_name = row["best_peer"]
        peer = row["scores"][peer_name]
        gains.append(ours[0] - peer[0])
        band_gains.append(ours[2] - peer[2])
        lines.append(f"| {row['spec'].name} | {row['spec'].family} | {row['best_slice']:.2f} | {ours[0]:.2f} "
                     f"| {peer[0]:.2f} ({peer_name}) | {ours[0] - peer[0]:+.2f} | {ours[1]:.4f} / {peer[1]:.4f} "
                     f"| {ours[2]:.2f} / {peer[2]:.2f} |")
    mean_ours = np.mean([r["scores"][DEFAULT][0] for r in rows])
    mean_best = np.mean([r["scores"][r["best_peer"]][0] for r in rows])
    lines.append(f"| **mean** | | {np.mean([r['best_slice'] for r in rows]):.2f} | **{mean_ours:.2f}** "
                 f"| {mean_best:.2f} | **{np.mean(gains):+.2f}** (min {min(gains):+.2f}, "
                 f"{sum(g >= 0 for g in gains)} of {len(gains)} stacks >= 0) | | band gain mean "
                 f"{np.mean(band_gains):+.2f} |")
    return lines


def matrix_table(rows, names) -> list[str]:
    short = [n.replace("openfocus ", "of ").replace("ours: ", "") for n in names]
    lines = ["| stack | " + " | ".join(short) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        cells = []
        for name in names:
            value = row["scores"].get(name)
            cells.append("-" if value is None else f"{value[0]:.2f}")
        lines.append(f"| {row['spec'].name} | " + " | ".join(cells) + " |")
    means = []
    for name in names:
        values = [row["scores"][name][0] for row in rows if name in row["scores"]]
        means.append(f"{np.mean(values):.2f}" if len(values) == len(rows) else "-")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    seconds = [f"{np.mean([row['seconds'][n] for row in rows if n in row['seconds']]):.1f}" for n in names]
    lines.append("| mean s (peers: first run) | " + " | ".join(seconds) + " |")
    return lines


def depth_table(rows, names) -> list[str]:
    """Our depth maps against the specimen's true height: the share of the frame given a depth (the rest is
    marked textureless) and the mean absolute error there, in µm and in z steps."""
    names = [n for n in names if any(n in row["depth"] for row in rows)]
    short = [n.replace("ours: ", "") for n in names]
    lines = ["| stack | z step µm | " + " | ".join(f"{n}: defined / MAE µm" for n in short) + " |",
             "|---|---|" + "---|" * len(names)]
    for row in rows:
        cells = [f"{row['depth'][n][0]:.2f} / {row['depth'][n][1]:.2f}" if n in row["depth"] else "-" for n in names]
        lines.append(f"| {row['spec'].name} | {row['spec'].step_um:g} | " + " | ".join(cells) + " |")
    means = []
    for name in names:
        values = [(row["depth"][name], row["spec"].step_um) for row in rows if name in row["depth"]]
        defined = np.mean([v[0][0] for v in values])
        steps = np.nanmean([v[0][1] / v[1] for v in values])
        means.append(f"{defined:.3f} / {steps:.3f} steps")
    lines.append("| **mean** (MAE in z steps) | | " + " | ".join(means) + " |")
    return lines


def family_table(rows, names) -> list[str]:
    families = sorted({row["spec"].family for row in rows})
    lines = ["| method | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for name in names:
        cells = []
        for family in families:
            values = [row["scores"][name][0] for row in rows if row["spec"].family == family and name in row["scores"]]
            cells.append(f"{np.mean(values):.2f}" if values else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _edge_rich_window(image, height_px: int, width_px: int) -> tuple[slice, slice]:
    """The window with the most strong edges (where halos would show), searched on a small copy."""
    import cv2

    gray = to_gray(image).astype(np.float32)
    step = 8
    small = cv2.resize(gray, (gray.shape[1] // step, gray.shape[0] // step), interpolation=cv2.INTER_AREA)
    magnitude = np.hypot(cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1))
    strong = (magnitude > np.percentile(magnitude, 95)).astype(np.float32)
    rows, cols = max(1, height_px // step), max(1, width_px // step)
    counts = cv2.boxFilter(strong, -1, (cols, rows), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    counts = counts[:max(1, small.shape[0] - rows + 1), :max(1, small.shape[1] - cols + 1)]
    top, left = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return slice(top * step, top * step + height_px), slice(left * step, left * step + width_px)


def real_stack_crops(out: Path, peers) -> list[str]:
    """Fuse the real stacks (ours: align auto; peers that align) and write side-by-side crops."""
    import cv2
    import imageio.v3 as iio

    from fusion.readers import open_stack

    lines = []
    aligning = {name: run for name, run in peers.items() if name in ("focusweave", "focus-stack")}
    for folder in sorted(p for p in SHARED_DATA.iterdir() if p.is_dir()):
        with open_stack(folder) as stack:
            slices = [pixels for pixels, _ in stack]
        started = time.perf_counter()
        ours = fuse_with_engine(slices, [None] * len(slices), FusionSettings(align="auto"))
        panels = {"ours": ours}
        timing = [f"ours {time.perf_counter() - started:.1f} s"]
        for name, run in aligning.items():
            started = time.perf_counter()
            try:
                panels[name] = run(slices, True)
                timing.append(f"{name} {time.perf_counter() - started:.1f} s")
            except Exception as error:
                print(f"  {folder.name}: {name} failed: {str(error).splitlines()[0][:160]}", flush=True)
        height, width = ours.shape[:2]
        crop = _edge_rich_window(ours, min(height, 700), min(width, 900))
        names = list(panels)
        tiles = [np.asarray(panels[n][crop]) for n in names]
        image = np.concatenate(tiles, axis=1)
        whole = np.concatenate([cv2.resize(np.asarray(panels[n]), (650, round(650 * height / width)),
                                           interpolation=cv2.INTER_AREA) for n in names], axis=1)
        iio.imwrite(out / f"{folder.name}-crop.png", image)
        iio.imwrite(out / f"{folder.name}-650px.png", whole)
        lines.append(f"- {folder.name}: {' | '.join(names)} -> {out / (folder.name + '-crop.png')} "
                     f"(full frames at 650 px: {folder.name}-650px.png); {', '.join(timing)}")
    return lines


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose and render the benchmark's stacks (``chosen_stacks``); benchmarks.quality_ceiling
    takes them too."""
    parser.add_argument("--size", default="384x512", help="HxW of the rendered stacks")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="render every stack with its seed plus this (other noise, other random surfaces): "
                             "stacks that a default was not chosen on")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ums-fusion-bench/quality"))


def chosen_stacks(args: argparse.Namespace, only: list[str] | None = None) -> tuple[tuple[int, int], list]:
    """(shape, specs) that ``add_stack_arguments``' options ask for: the stacks whose sources are here, their seeds
    offset, those named in ``only`` if given."""
    height_px, width_px = (int(n) for n in args.size.split("x"))
    specs = [dataclasses.replace(s, seed=s.seed + args.seed_offset) for s in STACKS
             if available(s) and (not only or s.name in only)]
    return (height_px, width_px), specs


def show_and_save(text: str, results: Path | None) -> None:
    """A benchmark's results on the terminal, and into ``results`` (a Markdown file) when given."""
    print("\n" + text)
    if results:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(text.rstrip("\n") + "\n")  # (one newline at the end, as before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stack_arguments(parser)
    parser.add_argument("--only", nargs="*", help="stack names to run (default: all)")
    parser.add_argument("--no-ums", action="store_true", help="skip the deep-feature measure (slow on a CPU)")
    parser.add_argument("--no-real", action="store_true", help="skip the real stacks in ../shared/data")
    parser.add_argument("--no-peers", action="store_true", help="ours only (quick checks while tuning)")
    parser.add_argument("--truth", choices=("ideal", "best-focus"), default="ideal",
                        help="score against the specimen itself (default) or as the optics show it at best focus "
                             "(blurred by the PSF at zero defocus, which every slice carries)")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the tables here as markdown (e.g. benchmarks/results/quality.md)")
    args = parser.parse_args()
    shape, specs = chosen_stacks(args, args.only)
    methods = dict(OURS)
    from fusion.deep.deep_measure import DEFAULT_WEIGHTS

    if DEFAULT_WEIGHTS.is_file() and not args.no_ums:
        methods["ours: ums pyramid"] = FusionSettings(measure="ums")
    peers, missing = ({}, []) if args.no_peers else available_peers()
    for line in missing:
        print(f"(not run) {line}")
    rows = score_stacks(specs, shape, methods, peers, args.work, args.truth)
    names = list(methods) + list(peers)
    out = ["# Fusion quality against ground truth", "",
           f"{datetime.date.today()}, {platform.node()} "
           f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
           f"command: `python -m benchmarks.quality {' '.join(sys.argv[1:])}`", "",
           f"{len(rows)} rendered stacks at {shape[0]}x{shape[1]} (benchmarks/quality_stacks.py"
           + (f", seeds + {args.seed_offset}" if args.seed_offset else "") + "). "
           "PSNR in dB against the all-in-focus truth"
           + (" as the optics show it at best focus (the truth blurred by the PSF at zero defocus)"
              if args.truth == "best-focus" else "") + ", full scale = the camera's bit depth. Peers not run: "
           + ("; ".join(missing) if missing else "none") + ".", ""]
    if peers:
        out += ["## Our default beside the best peer on each stack", ""] + summary_table(rows, peers) + [""]
    out += ["## PSNR of every method", ""] + matrix_table(rows, names) + [""]
    out += ["## Mean PSNR by family", ""] + family_table(rows, names) + [""]
    out += ["## Depth maps against the true height (ours)", ""] + depth_table(rows, list(methods)) + [""]
    if not args.no_real and SHARED_DATA.is_dir():
        crops = args.work / "real"
        crops.mkdir(parents=True, exist_ok=True)
        out += ["## Real stacks side by side (look at them)", ""] + real_stack_crops(crops, peers) + [""]
    text = "\n".join(out)
    show_and_save(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
