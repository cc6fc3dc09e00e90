"""The automatic z-range on every simulated specimen: does the fine stack cover the true heights,
with how many slices, and where it falls short, what the fused image loses.

For each of the simulator's textures on each height map (30 µm deep, 480x640 RGB, blur 0.3 px/µm,
the default camera noise) the pre-sweep of ``profiles/simulated-autorange.yaml`` runs (every 6 µm
from -30 to 80 µm, frames binned 4 x 4, stopping once the focus curve has fallen back); the fine
stack then takes every 3 µm over the range found plus one step either side. Printed per specimen:
the range found, the stack, its slices against those the true range needs at the same step, and
whether it covers the true range. Where it does not, both the auto-range stack and a stack over
the whole true range (same step) are fused and scored against the truth: the PSNR difference is
what the shortfall costs the user.

    .venv/bin/python -m benchmarks.auto_range [--textures coffee,chelsea] [--surfaces plane,dome]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from acquisition.auto_range import AutoRangeError, PreSweepAnalysis, binned, coarse_positions, fine_positions
from benchmarks.measured_run import load_average, machine_line
from fusion import FusionSettings, StreamingFusion
from fusion.metrics import psnr
from simulators.optics import CameraNoise, DefocusRenderer, Optics, render_stack
from simulators.specimens import HEIGHT_MAPS, TEXTURES, VirtualSpecimen, load_texture, make_height_map

SHAPE = (480, 640)
DEPTH_UM, SEARCH_UM, COARSE_STEP_UM, STEP_UM, BINNING, MARGIN_STEPS = 30.0, (-30.0, 80.0), 6.0, 3.0, 4, 1
OPTICS = Optics(blur_px_per_um=0.3)


def pre_sweep(specimen: VirtualSpecimen, search_um: tuple[float, float] = SEARCH_UM) -> PreSweepAnalysis:
    """The profile's pre-sweep on the simulated specimen (also used by tests/test_auto_range.py)."""
    renderer, noise, rng = DefocusRenderer(specimen, OPTICS), CameraNoise(), np.random.default_rng(1)
    analysis = PreSweepAnalysis()
    for z_um in coarse_positions(search_um, COARSE_STEP_UM):
        analysis.add(z_um, binned(noise.expose(renderer.render(z_um), rng), BINNING))
        if analysis.has_fallen_back():
            break
    return analysis


def slices_needed(lo_um: float, hi_um: float) -> int:
    return math.ceil((hi_um - lo_um) / STEP_UM - 1e-9) + 1


def fused_psnr_db(specimen: VirtualSpecimen, z_um: list[float]) -> float:
    stack = render_stack(specimen, z_um, OPTICS, CameraNoise(), seed=2)
    engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, FusionSettings(align="off"))
    for pixels, z in zip(stack.slices, stack.z_um):
        engine.push(pixels, z)
    return psnr(engine.finish().fused, stack.truth)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.auto_range", description=__doc__.splitlines()[0])
    parser.add_argument("--textures", default=",".join(TEXTURES), help="comma-separated (default: all)")
    parser.add_argument("--surfaces", default=",".join(HEIGHT_MAPS), help="comma-separated (default: all)")
    args = parser.parse_args()
    textures, surfaces = args.textures.split(","), args.surfaces.split(",")
    print(f"{machine_line()}, load {load_average()}")
    print(f"{SHAPE[1]}x{SHAPE[0]} RGB, {DEPTH_UM:g} µm deep; pre-sweep every {COARSE_STEP_UM:g} µm over "
          f"{SEARCH_UM[0]:g}..{SEARCH_UM[1]:g} µm binned {BINNING}x{BINNING}; fine stack every {STEP_UM:g} µm, "
          f"margin {MARGIN_STEPS} step")
    print(f"{'specimen':28s} {'found µm':>13s} {'stack µm':>13s} {'slices':>7s} {'need':>5s} {'ratio':>6s} "
          f"{'frames':>6s} {'covers':>7s}")
    covered, within_budget, ratios, short = 0, 0, [], []
    started_s = time.perf_counter()
    for texture in textures:
        for surface in surfaces:
            specimen = VirtualSpecimen(load_texture(texture, SHAPE),
                                       make_height_map(surface, SHAPE, DEPTH_UM, np.random.default_rng(0)))
            true_lo, true_hi = float(specimen.height_um.min()), float(specimen.height_um.max())
            need = slices_needed(true_lo, true_hi)
            analysis = pre_sweep(specimen)
            try:
                lo, hi = analysis.range_um()
            except AutoRangeError as error:
                print(f"{texture + '/' + surface:28s} no range: {error}")
                continue
            positions = fine_positions(lo, hi, STEP_UM, MARGIN_STEPS)
            covers = positions[0] <= true_lo and positions[-1] >= true_hi
            ratio = len(positions) / need
            covered += covers
            within_budget += ratio <= 1.3
            ratios.append(ratio)
            if not covers:
                short.append((texture, surface, specimen, positions, true_lo, true_hi))
            print(f"{texture + '/' + surface:28s} {lo:6.1f}..{hi:5.1f} {positions[0]:6.1f}..{positions[-1]:5.1f} "
                  f"{len(positions):7d} {need:5d} {ratio:6.2f} {len(analysis.z_um):6d} {'yes' if covers else 'NO':>7s}")
    count = len(ratios)
    print(f"\ncovers the true range: {covered}/{count}; at most 30% more slices than needed: {within_budget}/{count}; "
          f"slices/needed mean {np.mean(ratios):.2f}, max {np.max(ratios):.2f}")
    if short:
        print("\nWhere the stack falls short of the true range, the fused image against a stack over the whole "
              "true range (same step):")
        print(f"{'specimen':28s} {'short by µm':>12s} {'auto dB':>8s} {'full dB':>8s} {'lost dB':>8s}")
        for texture, surface, specimen, positions, true_lo, true_hi in short:
            full = fine_positions(true_lo, true_hi, STEP_UM, 0)
            auto_db, full_db = fused_psnr_db(specimen, positions), fused_psnr_db(specimen, full)
            short_by = max(positions[0] - true_lo, true_hi - positions[-1])
            print(f"{texture + '/' + surface:28s} {short_by:12.1f} {auto_db:8.2f} {full_db:8.2f} "
                  f"{full_db - auto_db:8.2f}")
    print(f"\n{time.perf_counter() - started_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
