"""Live-session overhead with the simulated devices: time beyond the devices' own, and result latency.

The devices' own time is move + settle + exposure (the simulated camera's exposure includes
rendering the specimen); everything else (buffering to disk, handing over to fusion) is
overhead. Fusion runs in its own thread.

    python -m benchmarks.session [--size 1024x1024] [--slices 32] [--exposure-ms 20]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import simulators.rigs  # noqa: F401  (registers the simulated rigs' openers)
from acquisition.profile import PlanSettings, load_profile
from acquisition.session import run_profile

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--exposure-ms", type=float, default=20.0)
    parser.add_argument("--profile", default=str(ROOT / "profiles" / "simulated.yaml"))
    args = parser.parse_args()
    height, width = (int(n) for n in args.size.split("x"))
    profile = load_profile(args.profile)
    specimen = profile.camera.specimen.model_copy(update={"height_px": height, "width_px": width})
    camera = profile.camera.model_copy(update={"specimen": specimen, "exposure_ms": args.exposure_ms})
    step_um = (specimen.depth_um + 8) / max(args.slices - 1, 1)
    plan = PlanSettings.model_validate({"z": {"bottom": -4, "top": -4 + step_um * (args.slices - 1), "step": step_um}})
    profile = profile.model_copy(update={"camera": camera, "plan": plan})
    with tempfile.TemporaryDirectory() as out:
        report = run_profile(profile, Path(out), progress=False).report
    seconds, slices = report.seconds, report.slices
    assert seconds is not None  # the session fused its slices
    mean = lambda key: sum(getattr(s, key) for s in slices) / len(slices) * 1000  # noqa: E731
    print(f"{report.acquired_slices} slices of {height}x{width} {'RGB' if specimen.color else 'mono'}, "
          f"exposure {args.exposure_ms:g} ms, composition {profile.fusion.composition}")
    print(f"total {seconds.total:.2f} s, devices {seconds.devices:.2f} s, "
          f"overhead {seconds.overhead_fraction * 100:.1f}% of the total")
    print(f"per slice (ms): move {mean('move_s'):.1f}, settle {mean('settle_s'):.1f}, "
          f"exposure+readout {mean('exposure_s'):.1f}, buffer write {mean('store_s'):.1f}, "
          f"fusion {mean('fusion_s'):.1f}")
    print(f"fused result ready {seconds.result_after_last_slice * 1000:.0f} ms after the last slice; "
          f"slices fusion read back from disk: {seconds.slices_read_back_by_fusion}")
    print(f"throughput {report.throughput_slices_per_s:.2f} slices/s; fused {report.psnr_db:.2f} dB vs "
          f"best slice {report.best_slice_psnr_db:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
