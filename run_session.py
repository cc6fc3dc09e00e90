#!/usr/bin/env python3
"""UMS-Fusion's one entry point.

    python run_session.py [--profile profiles/simulated.yaml] [--out DIR]

runs a live stack-and-fuse session on the rig the profile describes (the simulated one by
default) into DIR/<timestamp>/;

    python run_session.py --refuse STACK [STACK ...] --out DIR [--method sf]
                          [--workers N | --scheduler tcp://HOST:PORT] [--resume]

refuses saved stacks (TIFF/OME-TIFF, Micro-Manager and NDTiff datasets, folders of images),
several at once on dask.distributed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from acquisition.profile import ProfileError, load_profile
from devices.errors import DeviceError
from fusion.batch import expand_stack_arguments, format_table, refuse_many, write_summary
from fusion.alignment import ALIGN_MODES, MODELS
from fusion.engine import COMPOSITIONS, FusionSettings
from fusion.errors import FusionError
from fusion.focus_measures import DEFAULT_WINDOW_PX, MEASURES


DEFAULT_PROFILE = Path(__file__).resolve().parent / "profiles" / "simulated.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_session.py", description="Fuse focus stacks into all-in-focus images.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--profile", type=Path, help=f"a rig profile (YAML); default {DEFAULT_PROFILE}")
    mode.add_argument("--refuse", nargs="+", metavar="STACK",
                      help="saved stacks: TIFF/OME-TIFF files, NDTiff or Micro-Manager datasets, "
                           "folders of TIFF/PNG/JPEG slices, globs, or @list.txt (one per line)")
    parser.add_argument("--out", type=Path,
                        help="folder for the outputs (live sessions: default the profile's output.folder)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="an existing dask scheduler (default: a local cluster for several stacks)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local cluster size (default: one worker per core)")
    parser.add_argument("--resume", action="store_true",
                        help="skip stacks whose outputs in --out are complete")
    defaults = FusionSettings()
    parser.add_argument("--method", choices=sorted(MEASURES), default=defaults.measure,
                        help="focus measure (default: %(default)s)")
    parser.add_argument("--composition", choices=COMPOSITIONS, default=defaults.composition,
                        help="blend: focus-weighted average; pick: copy each pixel from its "
                             "chosen slice (default: %(default)s)")
    parser.add_argument("--window-px", type=int, default=DEFAULT_WINDOW_PX,
                        help="focus measure window (default: %(default)s)")
    parser.add_argument("--sharpness", type=float, default=defaults.sharpness,
                        help="blend exponent: higher is closer to pick (default: %(default)s)")
    parser.add_argument("--mode-filter-px", type=int, default=None,
                        help="majority filter width on the decision map; 0 turns it off "
                             "(default: about min(H, W) / 20)")
    parser.add_argument("--feather-px", type=float, default=0.0,
                        help="with --composition pick, blend across seams (Gaussian sigma)")
    parser.add_argument("--align", choices=ALIGN_MODES, default="off",
                        help="experimental: register slices to the first before fusing; auto warps only "
                             "slices that moved by more than a quarter pixel. Off by default: on stacks "
                             "that do not move it can see motion that is not there (default: %(default)s)")
    parser.add_argument("--align-model", choices=MODELS, default="similarity",
                        help="similarity (scale, rotation, shift), scale_shift (tunable lenses) or affine")
    return parser


def run_live(args) -> int:
    """A live session: exit 0 when every planned slice was acquired and fused."""
    from acquisition.session import run_profile

    profile_path = args.profile or DEFAULT_PROFILE
    try:
        profile = load_profile(profile_path)
        out_root = args.out or Path(profile.output.folder)
        outcome = run_profile(profile, out_root)
    except (ProfileError, DeviceError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = outcome.report
    print(f"session: {report['acquired_slices']} of {report['planned_slices']} slices in {outcome.folder}")
    for name in ("fused", "depth", "stack", "focus_curve"):
        if name in report["outputs"]:
            print(f"  {name}: {report['outputs'][name]}")
    if "psnr_db" in report:
        print(f"  fused vs ground truth: {report['psnr_db']:.2f} dB (best single slice {report['best_slice_psnr_db']:.2f} dB)")
    if report["dropped_frames"]:
        print(f"  dropped frames: {len(report['dropped_frames'])} (see session.json)", file=sys.stderr)
    if outcome.ended_by:
        print(f"error: the session ended early: {outcome.ended_by}; the {report['acquired_slices']} slices acquired "
              f"are saved in {report['outputs'].get('stack', 'no stack (nothing was acquired)')} and fused",
              file=sys.stderr)
    for problem in report["errors"]:
        print(f"error: {problem}", file=sys.stderr)
    if outcome.interrupted:
        return 130
    return 0 if outcome.completed else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.refuse is None:
        return run_live(args)
    if args.out is None:
        parser.error("--refuse needs --out DIR")
    try:
        settings = FusionSettings(measure=args.method, window_px=args.window_px,
                                  composition=args.composition, sharpness=args.sharpness,
                                  mode_filter_px=args.mode_filter_px, feather_px=args.feather_px,
                                  align=args.align, align_model=args.align_model)
    except ValueError as error:
        parser.error(str(error))
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    started = time.perf_counter()
    try:
        stacks = expand_stack_arguments(args.refuse)
        outcomes = refuse_many(stacks, args.out, settings, scheduler=args.scheduler,
                               n_workers=args.workers, resume=args.resume)
    except (FusionError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Outputs are written atomically: what finished is complete, the rest is redone.
        print(f"interrupted: run the same command with --resume to finish the stacks left in {args.out}",
              file=sys.stderr)
        return 130
    summary = write_summary(args.out, outcomes, time.perf_counter() - started, args.scheduler)
    print(format_table(outcomes))
    print(f"summary: {summary}")
    failures = [outcome for outcome in outcomes if outcome.status == "failed"]
    for outcome in failures:
        print(f"error: {outcome.error}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(outcomes)} stacks failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
