"""Fusion quality against ground truth on rendered stacks, and no-reference sharpness on real ones.

For each rendered stack (textures x surfaces, colour 8-bit and mono 12-bit, shot and read
noise) and each method: PSNR and SSIM against the all-in-focus truth, the share of pixels
whose depth is within one slice spacing of the true height, and seconds. Two optical
regimes: "sparse" (neighbouring slices clearly blurred) and "dense" (oversampled in z, noisier).
enfuse's focus-stacking mode is included when `enfuse` is on the PATH. Two upper bounds close
each table: composing from the true height map (pick the nearest slice; blend neighbours),
which no focus measure can beat: they show how much any better measure could still gain.

    python benchmarks/quality.py [--size 384x512] [--no-real]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion import FusionSettings, StreamingFusion  # noqa: E402
from fusion.compose import to_dtype  # noqa: E402
from fusion.metrics import average_gradient, psnr, spatial_frequency  # noqa: E402
from simulators.optics import CameraNoise, Optics, render_stack  # noqa: E402
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map  # noqa: E402

METHODS = {
    "sf blend (default)": FusionSettings(),
    "sf pick+mode (paper)": FusionSettings(composition="pick"),
    "sf pick+feather": FusionSettings(composition="pick", feather_px=3.0),
    "laplacian pick": FusionSettings(measure="laplacian", composition="pick", mode_filter_px=0),
    "naive argmax": FusionSettings(measure="laplacian", window_px=1, composition="pick", mode_filter_px=0),
}
STACKS = [  # texture, surface, colour, bit depth
    ("astronaut", "dome", True, 8), ("gravel", "steps", False, 12), ("coffee", "irregular", True, 8),
    ("brick", "plane", False, 12), ("chelsea", "steps", True, 8), ("grass", "dome", False, 12),
]
REGIMES = {  # blur per um, camera full well (e-), read noise (e-), z step (um)
    "sparse": (0.4, 20000.0, 5.0, 4.0),
    "dense": (0.15, 3000.0, 8.0, 4.0),
}
DEPTH_UM = 40.0


def render_ground_truth_stack(texture: str, surface: str, colour: bool, bits: int, shape: tuple[int, int],
                              regime: str):
    """One of the benchmark's rendered stacks (STACKS x REGIMES) at ``shape``."""
    blur, full_well, read_noise, step_um = REGIMES[regime]
    specimen = VirtualSpecimen(load_texture(texture, shape, colour), make_height_map(surface, shape, DEPTH_UM))
    z_um = np.arange(-step_um, DEPTH_UM + step_um + 1e-6, step_um)
    return render_stack(specimen, z_um, Optics(blur_px_per_um=blur),
                        CameraNoise(full_well_e=full_well, read_noise_e=read_noise, bit_depth=bits))


def fuse_with_engine(slices, z_um, settings):
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, settings)
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    result = engine.finish()
    return result.fused, result.depth


def fuse_with_enfuse(slices, z_um):
    """enfuse's focus-stacking mode (hard mask on local contrast); no depth map."""
    with tempfile.TemporaryDirectory() as folder:
        names = []
        for index, pixels in enumerate(slices):
            names.append(str(Path(folder) / f"s{index:03d}.tif"))
            tifffile.imwrite(names[-1], pixels)
        out = str(Path(folder) / "fused.tif")
        subprocess.run(["enfuse", "--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1",
                        "--hard-mask", "-o", out, *names], check=True, capture_output=True)
        fused = tifffile.imread(out)
    if fused.ndim == 3 and fused.shape[2] > slices[0].shape[-1] if slices[0].ndim == 3 else fused.ndim == 3:
        fused = fused[..., : (slices[0].shape[2] if slices[0].ndim == 3 else 1)].squeeze()
    return fused.astype(slices[0].dtype), None


def fuse_knowing_the_height(slices, z_um, height_um, spread_steps):
    """Upper bounds no measure can beat: compose from the true height map. spread_steps 0:
    pick the slice nearest in z; otherwise average slices weighted by a Gaussian in z of
    that many slice spacings (averages noise away where the z sampling is dense)."""
    stack = np.stack(slices).astype(np.float64)
    distance = np.abs(height_um[None] - np.asarray(z_um, float)[:, None, None])
    if spread_steps == 0:
        weight = (distance == distance.min(axis=0, keepdims=True)).astype(np.float64)
    else:
        weight = np.exp(-0.5 * (distance / (spread_steps * abs(z_um[1] - z_um[0]))) ** 2)
    weight /= weight.sum(axis=0, keepdims=True)
    fused = (stack * (weight[..., None] if stack.ndim == 4 else weight)).sum(axis=0)
    return to_dtype(fused, slices[0].dtype)


def ssim(image, truth, full_scale):
    from skimage.metrics import structural_similarity

    return structural_similarity(image.astype(np.float64), truth.astype(np.float64), data_range=full_scale,
                                 channel_axis=2 if image.ndim == 3 else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="384x512", help="HxW of the rendered stacks")
    parser.add_argument("--no-real", action="store_true", help="skip the real stacks in ../shared/data")
    parser.add_argument("--no-ums", action="store_true", help="skip the deep-feature measure (slow on a CPU)")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.size.split("x"))
    methods_settings = dict(METHODS)
    from fusion.deep_measure import DEFAULT_WEIGHTS

    if DEFAULT_WEIGHTS.is_file() and not args.no_ums:
        methods_settings["ums blend"] = FusionSettings(measure="ums")
        methods_settings["ums pick+mode"] = FusionSettings(measure="ums", composition="pick")
    methods = {name: (lambda s, z, settings=settings: fuse_with_engine(s, z, settings))
               for name, settings in methods_settings.items()}
    if shutil.which("enfuse"):
        methods["enfuse --hard-mask"] = fuse_with_enfuse
    else:
        print("(enfuse not installed: apt-get install enfuse to compare with it)")

    for regime, (blur, full_well, read_noise, step_um) in REGIMES.items():
        print(f"\n== {regime}: blur {blur} px/um, z step {step_um} um, full well {full_well:.0f} e-, "
              f"read noise {read_noise} e-, {shape[0]}x{shape[1]}")
        print(f"{'method':22s} " + " ".join(f"{t[:7] + '/' + s[:5]:>14s}" for t, s, _, _ in STACKS)
              + f" {'mean dB':>8s} {'SSIM':>6s} {'depth':>6s} {'s':>6s}")
        table = {name: [] for name in methods}
        bounds = {"bound: true-height pick": 0, "bound: true-height blend": 0.5}
        bound_rows = {name: [] for name in bounds}
        best_slice = []
        for texture, surface, colour, bits in STACKS:
            stack = render_ground_truth_stack(texture, surface, colour, bits, shape, regime)
            full_scale = 2.0 ** bits - 1
            best_slice.append(max(psnr(s, stack.truth, full_scale) for s in stack.slices))
            for name, spread in bounds.items():
                fused = fuse_knowing_the_height(stack.slices, stack.z_um, stack.height_um, spread)
                bound_rows[name].append(psnr(fused, stack.truth, full_scale))
            for name, method in methods.items():
                started = time.perf_counter()
                fused, depth = method(stack.slices, stack.z_um)
                seconds = time.perf_counter() - started
                within = (np.abs(depth - stack.height_um) <= step_um).mean() if depth is not None else np.nan
                table[name].append((psnr(fused, stack.truth, full_scale), ssim(fused, stack.truth, full_scale),
                                    within, seconds))
        for name, rows in table.items():
            values = np.array(rows)
            print(f"{name:22s} " + " ".join(f"{row[0]:>14.2f}" for row in rows)
                  + f" {values[:, 0].mean():>8.2f} {values[:, 1].mean():>6.3f} {np.nanmean(values[:, 2]) if not np.isnan(values[:, 2]).all() else float('nan'):>6.2f}"
                  f" {values[:, 3].mean():>6.2f}")
        print(f"{'best single slice':22s} " + " ".join(f"{v:>14.2f}" for v in best_slice)
              + f" {np.mean(best_slice):>8.2f}")
        for name, values in bound_rows.items():  # what a perfect focus decision would reach
            print(f"{name:22s} " + " ".join(f"{v:>14.2f}" for v in values) + f" {np.mean(values):>8.2f}")

    data = ROOT.parent / "shared" / "data"
    if not args.no_real and data.is_dir():
        from fusion.readers import open_stack

        print("\n== real stacks (no ground truth; SF and AG reward noise and seams too: look at the images)")
        print(f"{'stack':22s} {'method':22s} {'SF':>7s} {'AG':>7s} {'s':>6s}")
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            with open_stack(folder) as stack:
                slices = [pixels for pixels, _ in stack]
            sharpness = [(spatial_frequency(s), average_gradient(s)) for s in slices]
            print(f"{folder.name:22s} {'best single slice':22s} {max(s for s, _ in sharpness):>7.2f} "
                  f"{max(a for _, a in sharpness):>7.2f}")
            for name, method in methods.items():
                started = time.perf_counter()
                fused, _ = method(slices, [None] * len(slices))
                seconds = time.perf_counter() - started
                print(f"{'':22s} {name:22s} {spatial_frequency(fused):>7.2f} {average_gradient(fused):>7.2f} "
                      f"{seconds:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
