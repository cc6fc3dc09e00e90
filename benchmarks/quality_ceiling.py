"""How much the quality benchmark leaves to win: our default and the best peer beside an oracle that knows
the specimen's true height at every pixel.

The oracle fuses the same noisy slices that every method gets: per pixel it takes the slice whose focus
is nearest the true height ("true-depth pick"), or blends the two slices either side of it in proportion
("true-depth blend"). It is a ceiling for any method that decides one depth per pixel from the slices; a
method can pass it only by averaging noise over more slices than one, or where the optics spill light
across depth edges so that no single slice holds the truth. Where ours, the best peer and the oracle sit
within a few hundredths of a dB of each other, a stack is at its noise floor: no better decision is left
to find there.

    python -m benchmarks.quality_ceiling [--size 384x512] [--seed-offset N] [--work DIR] [--results FILE]

Stacks whose lens breathes are left out (their slices zoom: a pixel's true height is in the first slice's
frame only). Uses the quality benchmark's stacks, peers and cache (``benchmarks.quality``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np

from benchmarks.peers import available_peers
from benchmarks.quality import DEFAULT, OURS, add_stack_arguments, chosen_stacks, score_stacks, show_and_save
from benchmarks.quality_stacks import render
from fusion.metrics import psnr
from simulators.optics import RenderedStack


def true_depth_fusions(stack: RenderedStack) -> tuple[np.ndarray, np.ndarray]:
    """(pick, blend): per pixel the slice focused nearest the true height, and the two either side of it
    blended linearly by where the height falls between their focus positions."""
    slices = np.stack([s.astype(np.float32) for s in stack.slices])
    z_um = np.asarray(stack.z_um, np.float64)
    below = np.clip(np.searchsorted(z_um, stack.height_um) - 1, 0, len(z_um) - 2)
    share = np.clip((stack.height_um - z_um[below]) / (z_um[below + 1] - z_um[below]), 0.0, 1.0).astype(np.float32)
    if slices.ndim == 4:  # colour: one choice for every channel of a pixel
        below, share = below[..., None], share[..., None]

    def take(index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(slices, index[None], axis=0)[0]

    pick = take(np.where(share < 0.5, below, below + 1))
    blend = take(below) * (1 - share) + take(below + 1) * share
    return pick, blend


def ceiling_table(rows, stacks: dict[str, RenderedStack]) -> list[str]:
    lines = ["| stack | family | ours (default) | best peer | true-depth pick | true-depth blend "
             "| ours - best oracle | best peer - best oracle |", "|---|---|---|---|---|---|---|---|"]
    ours_gaps, peer_gaps = [], []
    for row in rows:
        spec = row["spec"]
        pick, blend = true_depth_fusions(stacks[spec.name])
        truth = stacks[spec.name].truth
        oracle = [psnr(pick, truth, spec.full_scale), psnr(blend, truth, spec.full_scale)]
        ours = row["scores"][DEFAULT][0]
        peer = row["scores"][row["best_peer"]][0] if row["best_peer"] else float("nan")
        ours_gaps.append(ours - max(oracle))
        peer_gaps.append(peer - max(oracle))
        lines.append(f"| {spec.name} | {spec.family} | {ours:.2f} | {peer:.2f} ({row['best_peer']}) | {oracle[0]:.2f} "
                     f"| {oracle[1]:.2f} | {ours_gaps[-1]:+.2f} | {peer_gaps[-1]:+.2f} |")
    lines.append(f"| **mean** | | | | | | **{np.mean(ours_gaps):+.2f}** ({sum(g >= 0 for g in ours_gaps)} of "
                 f"{len(ours_gaps)} stacks at or above the oracle) | {np.mean(peer_gaps):+.2f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stack_arguments(parser)
    parser.add_argument("--results", type=Path, default=None, help="write the table here as markdown")
    args = parser.parse_args()
    shape, specs = chosen_stacks(args)
    specs = [spec for spec in specs if spec.breathing_per_um == 0]
    peers, missing = available_peers()
    rows = score_stacks(specs, shape, {DEFAULT: OURS[DEFAULT]}, peers, args.work)
    stacks = {spec.name: render(spec, shape, args.work / "stacks") for spec in specs}
    out = ["# How much is left to win: an oracle that knows the true height", "",
           f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores), "
           f"command: `python -m benchmarks.quality_ceiling {' '.join(sys.argv[1:])}`", "",
           f"{len(rows)} stacks of benchmarks/quality_stacks.py at {shape[0]}x{shape[1]} "
           "(the breathing lens left out), "
           "PSNR in dB against the ideal truth. Peers not run: " + ("; ".join(missing) if missing else "none") + ".",
           ""] + ceiling_table(rows, stacks)
    text = "\n".join(out)
    show_and_save(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
