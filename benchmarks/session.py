"""The three acquisition modes on the same simulated specimen: stepped, hardware-sequenced, lens stream.

Stepped and sequenced run on the simulated Micro-Manager rig (UniMMCore Python stage and camera;
``simulated-micromanager.yaml`` and ``simulated-sequenced.yaml``); the stream (and, for
reference, the stepped lens) on the Optotune simulator with the optics camera, its sweep the
same z-positions in diopters. Same specimen, exposure, slices and step everywhere. Prints, per
mode: slices acquired of planned, acquisition seconds and slices/s (and x the stepped stage),
the fused result's delay after the last slice, PSNR of the fused image and of the best slice.

    python -m benchmarks.session                                   # the shipped profiles' rig: 13 slices, 10 ms
    python -m benchmarks.session --slices 100 --settle-ms 50       # a real rig's timing: 50 ms settle per step
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import simulators.rigs  # noqa: F401  (registers the simulated rigs' openers)
from acquisition.profile import Profile, load_profile
from acquisition.session import run_profile
from benchmarks.measured_run import load_average, machine_line

ROOT = Path(__file__).resolve().parents[1]

UM_PER_DPT = 10.0


def with_rig(profile: Profile, args, step_um: float, bottom_um: float, **plan) -> Profile:
    data = profile.model_dump(exclude_none=True)
    data["camera"]["specimen"].update(height_px=args.height, width_px=args.width, texture="coffee",
                                      surface="irregular", depth_um=30.0)
    data["camera"]["exposure_ms"] = args.exposure_ms
    # (the same images at any exposure: the simulated camera collects light over it, full at this exposure)
    data["camera"].setdefault("noise", {})["full_scale_exposure_ms"] = args.exposure_ms
    data["camera"].setdefault("optics", {})["um_per_dpt"] = UM_PER_DPT
    if plan.get("stream"):
        # A stream's settle_ms is its settling model (the lens reaches a power this long after a command), not a
        # wait: below the lens's own (the profile's) it takes frames exposed while the lens moved for still ones.
        data["focus"]["settle_ms"] = max(args.settle_ms, data["focus"]["settle_ms"])
    else:
        data["focus"]["settle_ms"] = args.settle_ms
    data["fusion"]["align"] = "off"  # the lens does not breathe here: compare acquisition, not registration
    top_um = bottom_um + step_um * (args.slices - 1)
    if data["focus"]["unit"] == "dpt":
        data["plan"] = {"sweep": {"start": bottom_um / UM_PER_DPT, "stop": top_um / UM_PER_DPT,
                                  "step": step_um / UM_PER_DPT}, **plan}
    else:
        data["plan"] = {"z": {"bottom": bottom_um, "top": top_um, "step": step_um}, **plan}
    return Profile.model_validate(data)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.session", description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=13, help="slices per stack (default: 13)")
    parser.add_argument("--height", type=int, default=480, help="frame height in px (default: 480)")
    parser.add_argument("--width", type=int, default=640, help="frame width in px (default: 640)")
    parser.add_argument("--exposure-ms", type=float, default=10.0, help="camera exposure (default: 10 ms)")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="the profile's settle wait per step (stepped modes; the lens stream's settling "
                             "model is the larger of this and its profile's)")
    args = parser.parse_args()
    if args.slices < 2:
        parser.error("--slices: a stack needs 2 slices at least")
    step_um = 36.0 / (args.slices - 1)  # from 3 µm below the 30 µm specimen to 3 µm above it
    profiles = ROOT / "profiles"
    modes = [
        ("stepped stage (Micro-Manager)", with_rig(load_profile(profiles / "simulated-micromanager.yaml"), args,
                                                   step_um, -3.0, hardware_sequencing="off")),
        ("sequenced stage (Micro-Manager)", with_rig(load_profile(profiles / "simulated-sequenced.yaml"), args,
                                                     step_um, -3.0, hardware_sequencing="on")),
        ("stepped lens (Optotune)", with_rig(load_profile(profiles / "simulated-etl.yaml"), args, step_um, -3.0)),
        ("lens stream (Optotune)", with_rig(load_profile(profiles / "simulated-etl-stream.yaml"), args,
                                            step_um, -3.0, stream=True)),
    ]
    print(f"{machine_line()}, load {load_average()}")
    print(f"{args.slices} slices of {args.width}x{args.height} RGB every {step_um:.3g} µm, exposure "
          f"{args.exposure_ms:g} ms, settle wait {args.settle_ms:g} ms per step when stepping")
    print(f"{'mode':34s} {'slices':>8s} {'acq s':>7s} {'slices/s':>9s} {'x stepped':>9s} {'fused +s':>9s} "
          f"{'done s':>7s} {'PSNR dB':>8s} {'best dB':>8s} {'flagged':>8s}")
    stepped_rate = None
    for name, profile in modes:
        with tempfile.TemporaryDirectory() as out:
            report = run_profile(profile, Path(out), progress=False).report.to_json()
        rate = report.get("throughput_slices_per_s") or 0.0
        stepped_rate = stepped_rate or rate
        after_s = report["seconds"]["result_after_last_slice"]
        flagged = report.get("acquisition", {}).get("flagged_frames", "")
        print(f"{name:34s} {report['acquired_slices']:>3d}/{report['planned_slices']:<4d} "
              f"{report['seconds_acquisition']:7.3f} {rate:9.1f} {rate / stepped_rate:9.2f} {after_s:9.3f} "
              f"{report['seconds_acquisition'] + after_s:7.3f} {report['psnr_db']:8.2f} "
              f"{report['best_slice_psnr_db']:8.2f} {flagged!s:>8s}")
        if report["ended_by"] or report["dropped_frames"]:
            print(f"  ended by: {report['ended_by']}; dropped: {len(report['dropped_frames'])}")
    print("acq s: first move to last slice handed to fusion; fused +s: the fused result after the last slice; "
          "done s: their sum (CPU fusion on this machine).")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
