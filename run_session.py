#!/usr/bin/env python3
"""UMS-Fusion's one entry point.

    python run_session.py --refuse STACK [STACK ...] --out DIR [--method sf]

refuses saved stacks (TIFF/OME-TIFF, Micro-Manager and NDTiff datasets, folders of images).
Live sessions (--profile) arrive with the acquisition package.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusion.engine import COMPOSITIONS, FusionSettings
from fusion.errors import FusionError
from fusion.focus_measures import DEFAULT_WINDOW_PX, MEASURES
from fusion.refuse import refuse_stack


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_session.py", description="Fuse focus stacks into all-in-focus images.")
    parser.add_argument("--refuse", nargs="+", metavar="STACK", required=True,
                        help="saved stacks: TIFF/OME-TIFF files, NDTiff or Micro-Manager datasets, "
                             "or folders of TIFF/PNG/JPEG slices")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = FusionSettings(measure=args.method, window_px=args.window_px,
                                  composition=args.composition, sharpness=args.sharpness,
                                  mode_filter_px=args.mode_filter_px, feather_px=args.feather_px)
    except ValueError as error:
        parser.error(str(error))
    failures = 0
    for stack in args.refuse:
        try:
            report = refuse_stack(stack, args.out, settings)
        except (FusionError, OSError) as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        for warning in report["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"fused {report['name']}: {report['n_slices']} slices in "
              f"{report['seconds']['total']:.2f} s -> {report['outputs']['fused']}")
    if failures:
        print(f"{failures} of {len(args.refuse)} stacks failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
