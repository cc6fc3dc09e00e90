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
import atexit
import contextlib
import errno
import logging
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Collection, Iterable
from pathlib import Path

# Before numba and torch load their OpenMP runtime: idle OpenMP threads sleep instead of spinning,
# so fusion's parallel kernels do not take the CPU from acquisition (or from anything else running).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from acquisition.stop_signals import (INTERRUPTED, exit_status_after_stop, ignore_stop_signals, stop_on_signals,
                                     stops_said_after_the_end)

# Each mode imports what it needs when it runs (a live session no dask, a refusion no pydantic):
# importing everything up front cost 1.8 s before the first thing happened.


DEFAULT_PROFILE = Path(__file__).resolve().parent / "profiles" / "simulated.yaml"
# The live view's options, given or not (None: not given, so that one given without --view is named in a warning).
VIEW_DEFAULTS = {"port": 8765, "view_host": "127.0.0.1", "view_linger_s": 3.0}
# A local cluster of more worker processes than this per core only takes memory (each one is a Python
# process of ~150 MB with numba and OpenCV loaded): fusion is CPU-bound.
MAX_WORKERS_PER_CORE = 4
MAX_VIEW_LINGER_S = 3600.0  # an hour to look at the result; Ctrl-C ends the lingering sooner
# An interrupted run's page stays up this long at most, whatever --view-linger-s says: for the page to show the
# interruption (it asks for news every 0.1 s), not for the user to wait on after a Ctrl-C.
INTERRUPTED_LINGER_S = 3.0


def port_number(text: str) -> int:
    """A TCP port for the live view: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0 takes any free one)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535; 0 takes any free one)")
    return port


def linger_seconds(text: str) -> float:
    """How long the live view stays up after the end: a finite number of seconds, 0 to ``MAX_VIEW_LINGER_S``."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_VIEW_LINGER_S:  # (NaN fails it too)
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds from 0 to {MAX_VIEW_LINGER_S:g}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    from fusion.align.alignment import ALIGN_MODES, MODELS
    from fusion.engine import COMPOSITIONS, FusionSettings
    from fusion.focus_measures import DEFAULT_WINDOW_PX, MEASURES

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
                        help="local cluster size: worker processes (default: one per core; never more than the "
                             f"stacks to fuse; at most {MAX_WORKERS_PER_CORE} per core)")
    parser.add_argument("--resume", action="store_true",
                        help="skip stacks whose outputs in --out are complete and were made with the same settings")
    parser.add_argument("--view", action="store_true",
                        help="show a live view in the browser (serves http://127.0.0.1:PORT/ while it runs)")
    parser.add_argument("--port", type=port_number, default=None,
                        help=f"live view port, 0 to 65535 (0: any free port) (default: {VIEW_DEFAULTS['port']})")
    parser.add_argument("--view-host", default=None,
                        help="live view interface; anything but loopback exposes the page to the network "
                             f"(default: {VIEW_DEFAULTS['view_host']})")
    parser.add_argument("--view-linger-s", type=linger_seconds, default=None,
                        help="keep the live view up this long after the end, so the page shows the result: "
                             f"0 to {MAX_VIEW_LINGER_S:g} s (default: {VIEW_DEFAULTS['view_linger_s']:g})")
    # Fusion settings: left out, a refusion takes FusionSettings' defaults and a live session its
    # profile's fusion: section; given, they override either.
    defaults = FusionSettings()
    fusion = parser.add_argument_group("fusion (override the profile's fusion: section in a live session)")
    fusion.add_argument("--method", choices=sorted(MEASURES), default=None,
                        help=f"focus measure (default: {defaults.measure})")
    fusion.add_argument("--composition", choices=COMPOSITIONS, default=None,
                        help="pyramid: multi-scale soft fusion, halo-free; blend: focus-weighted average "
                             "at full resolution; pick: copy each pixel from its chosen slice, as the paper "
                             f"does (default: {defaults.composition})")
    fusion.add_argument("--device", default=None,
                        help=f"torch device for --method ums: cuda, cuda:N, mps, cpu, or auto (CUDA when present) "
                             f"(default: {defaults.device})")
    fusion.add_argument("--weights", default=None, metavar="FILE",
                        help="weights file for --method ums, as python -m fusion.deep.train --export writes "
                             "(default: the shipped fusion/deep/weights/ums_unetpp.pt)")
    fusion.add_argument("--window-px", type=int, default=None,
                        help=f"focus measure window of blend and pick (default: {DEFAULT_WINDOW_PX})")
    fusion.add_argument("--sharpness", type=float, default=None,
                        help=f"blend exponent: higher is closer to pick (default: {defaults.sharpness:g})")
    fusion.add_argument("--mode-filter-px", type=int, default=None,
                        help="majority filter width on the decision map; 0 turns it off "
                             "(default: about min(H, W) / 20)")
    fusion.add_argument("--feather-px", type=float, default=None,
                        help=f"with --composition pick, blend across seams (Gaussian sigma) "
                             f"(default: {defaults.feather_px:g})")
    fusion.add_argument("--align", choices=ALIGN_MODES, default=None,
                        help="register slices to the first and warp those that moved: auto warps only slices "
                             "that moved by more than half a pixel, on warps every slice, off skips registration "
                             "(faster: about 0.25 s per 5 MP slice on 2 cores) (default, fusion/align/defaults.py: "
                             "auto for --refuse; the profile's, else off on a stage and on for a tunable lens)")
    fusion.add_argument("--align-model", choices=MODELS, default=None,
                        help="similarity (scale, rotation, shift), scale_shift, affine, or lens (one zoom about "
                             "the centre growing linearly with focus, fitted over the sweep) "
                             f"(default: {defaults.align_model}; lens for a tunable lens)")
    return parser


@contextlib.contextmanager
def live_view(args, title: str, mode: str, lingering: contextlib.ExitStack):
    """A LiveViewState served while the block runs (or None without --view); the page stays up after it (the
    lingering, ``linger_then_stop``) once ``lingering`` closes, when the run has printed its last line: the terminal's
    summary came only after the lingering, and the run looked hung meanwhile."""
    if not args.view:
        yield None
        return
    from viewer.server import LiveViewServer
    from viewer.state import LiveViewState

    state = LiveViewState(title, mode)
    try:
        server = LiveViewServer(state, args.view_host, args.port).start()
    except OSError as error:
        raise OSError(f"the live view cannot listen on {args.view_host}:{args.port}: {error}; "
                      f"{view_listen_advice(error)}") from error
    print(f"live view: {server.url}", flush=True)
    try:
        yield state
    except BaseException as error:
        if state.status in ("starting", "running"):  # ended before the session could say: the terminal's words
            state.end(*ended_before_the_end(error, mode))
        raise
    finally:
        if state.status in ("starting", "running"):
            state.end("failed", "stopped before the end")
        lingering.callback(linger_then_stop, server, state, args.view_linger_s, mode)


def linger_then_stop(server, state, linger_s: float, mode: str) -> None:
    """The page stays up ``linger_s`` more, so that it shows the result, and then the server stops; after a stop
    signal, ``INTERRUPTED_LINGER_S`` at most (a Ctrl-C'd run stayed up the whole --view-linger-s: a second
    Ctrl-C was needed)."""
    run = "refusion" if mode == "refuse" else "session"
    try:
        with contextlib.suppress(KeyboardInterrupt):  # a stop while lingering ends the lingering only
            if state.status == "interrupted" and linger_s > INTERRUPTED_LINGER_S:
                linger_s = INTERRUPTED_LINGER_S
                print(f"live view: the {run} was interrupted; the page stays up {linger_s:g} s more at "
                      f"{server.url}, for it to show where the {run} stopped (not the --view-linger-s, which is for "
                      "a run that ends by itself)", flush=True)
            elif linger_s > 0:  # (the terminal was silent while the page stayed up: it looked hung)
                print(f"live view: the {run} has ended ({state.status}); the page stays up {linger_s:g} s more at "
                      f"{server.url} (ctrl-c closes it sooner)", flush=True)
            time.sleep(max(0.0, linger_s))
    finally:
        server.stop()


def view_listen_advice(error: OSError) -> str:
    """What to change where the live view cannot listen: --view-host where the host is the problem (a name not
    known here, an address not this machine's), --port where the port is (taken, or privileged)."""
    if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        return (f"give a --view-host that names this machine (default {VIEW_DEFAULTS['view_host']}; 0.0.0.0 "
                "listens on every interface)")
    return "choose another --port (0 takes any free one)"


def ended_before_the_end(error: BaseException, mode: str) -> tuple[str, str]:
    """The live view's status and message for what ended a run before the session or the batch told it: what the
    terminal says of the same error (run_live, run_refuse), so that the page says what failed."""
    from devices.errors import DeviceError
    from fusion.errors import FusionError

    if isinstance(error, KeyboardInterrupt):
        said = str(error) or INTERRUPTED
        if mode == "refuse":  # (as stopped_refusion says)
            return "interrupted", f"{said}: run the same command with --resume to finish the stacks left"
        return "interrupted", f"{said} before the session started; nothing was acquired"
    if isinstance(error, (DeviceError, FusionError, ValueError, OSError)):  # (a ProfileError is a ValueError)
        return "failed", f"error: {error}"
    return "failed", f"unexpected {type(error).__name__}: {error}"


def check_output_folder(folder: Path, named: str) -> None:
    """An OSError that says which option gave ``folder`` where it cannot be made or written, before any
    work; nothing is made here (a run that fails later, a device missing, leaves no empty folder)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # (exists() follows the link: a broken one read as a folder to make)
            raise OSError(f"{named} {folder}: cannot make that folder: {existing} is a link to "
                          f"{os.readlink(existing)}, which does not exist (a disk that is not mounted?)")
        existing = existing.parent
    if not existing.is_dir():
        raise OSError(f"{named} {folder}: cannot make that folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"{named} {folder}: cannot make or write that folder: {existing} is not writable")


def run_live(args, said: list[str], lingering: contextlib.ExitStack) -> int:
    """A live session: exit 0 when every planned slice was acquired and fused (1 when one was lost).

    ``said``: the warnings printed so far (options with no effect), which session.json records too. ``lingering``:
    closed once this has returned (``live_view``)."""
    import simulators.rigs  # noqa: F401  (registers the simulated rigs' openers: acquisition.rig_registry)
    from acquisition.profile import ProfileError, load_profile, with_fusion_overrides
    from acquisition.session import run_profile
    from devices.errors import DeviceError

    profile_path = args.profile or DEFAULT_PROFILE
    try:
        loaded = load_profile(profile_path)
        profile = with_fusion_overrides(loaded, fusion_overrides(args))
        said = said + print_warnings(unused_option_warnings(args, profile.fusion_settings()))
        if loaded.fusion.device is not None and args.device is None:  # (--device replaced it: warned above)
            said += print_warnings([unused_device_warning(f"{profile_path}: fusion.device", loaded.fusion.device,
                                                          "fusion.method", profile.fusion_settings().measure)])
        said += print_warnings(unused_profile_fusion_warnings(profile_path, loaded, args, profile.fusion_settings()))
        out_root = args.out or Path(profile.output.folder)
        check_output_folder(out_root, "--out" if args.out else f"{profile_path}: output.folder")
        if profile.mda is not None:
            return run_mda(args, profile, out_root, said)
        with live_view(args, profile.name, "session", lingering) as view:
            outcome = run_profile(profile, out_root, view=view, warnings_before=said)
    except (ProfileError, DeviceError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:  # before the first slice: the devices were still opening
        print(f"{str(interrupt) or 'interrupted (Ctrl-C)'} before the session started; nothing was acquired",
              file=sys.stderr)
        return interrupted_status()
    print_session_summary(outcome, said)
    if outcome.interrupted:
        return interrupted_status()
    # Every position visited is not every slice kept: a stack with holes is not a success to a script.
    return 0 if outcome.completed and not outcome.report.dropped_frames else 1


def print_session_summary(outcome, said: Collection[str] = ()) -> None:
    """What a live session made and where, on stdout; what went wrong, on stderr (its warnings but those in
    ``said``, printed as it started)."""
    report = outcome.report  # an acquisition.session_report.SessionReport
    print(f"session: {report.acquired_slices} of {report.planned_slices} slices in {outcome.folder}")
    for name in ("fused", "depth", "stack", "focus_curve"):
        if name in report.outputs:
            print(f"  {name}: {report.outputs[name]}")
    if report.psnr_db is not None:
        print(f"  fused vs ground truth: {report.psnr_db:.2f} dB "
              f"(best single slice {report.best_slice_psnr_db:.2f} dB)")
    lost = report.lost_slices_said()  # (none acquired: the line below says so)
    if lost:
        print(f"error: {lost}", file=sys.stderr)
    if outcome.ended_by and report.acquired_slices == 0:
        print(f"error: the session ended before its first slice: {outcome.ended_by}; nothing was acquired",
              file=sys.stderr)
    elif outcome.ended_by:
        acquired = f"the {report.acquired_slices} slices acquired are" if report.acquired_slices > 1 \
            else "the one slice acquired is"
        # "and fused" only where the fused image is on disk (a full disk can stop it; the errors below say so).
        fused = " and fused" if "fused" in report.outputs else "; no fused image was written (see below)"
        print(f"error: the session ended early: {outcome.ended_by}; {acquired} saved in "
              f"{report.outputs.get('stack', 'no stack')}{fused}", file=sys.stderr)
    print_warnings([warning for warning in report.warnings or [] if warning not in said])
    for problem in report.errors:
        print(f"error: {problem}", file=sys.stderr)


def interrupted_status() -> int:
    """The shell's exit status for a program ended by a signal: 130 after Ctrl-C, 143 after SIGTERM, 129 after
    SIGHUP."""
    return exit_status_after_stop()


def run_mda(args, profile, out_root: Path, said: list[str]) -> int:
    """A multi-dimensional session (the profile's mda plan): exit 0 when every frame was acquired and fused.
    ``said``: as run_live's."""
    from acquisition.mda_session import run_mda_profile
    from fusion.output_names import SESSION_REPORT

    if args.view:
        raise ValueError("--view shows single-stack sessions; for an mda plan open the session folder in napari")
    outcome = run_mda_profile(profile, out_root, warnings_before=said)
    report = outcome.report  # an acquisition.session_report.MDASessionReport
    fused, stacks = len(report.stacks_fused()), len(report.stacks)
    # Only stacks whose fused image was written count as fused (a one-slice stack, a full disk: not).
    print(f"session: {report.acquired_slices} of {report.planned_slices} frames, "
          f"{fused if fused == stacks else f'{fused} of {stacks}'} z-stacks fused in {outcome.folder} "
          f"({report.seconds['total']:.1f} s)")
    if len(report.cameras) > 1:  # (a Multi Camera's: each physical camera took stacks of its own)
        planned = planned_per_camera(report)
        print("  cameras: " + ", ".join(f"{camera} {said['fused']} of {planned[camera]} z-stacks fused"
                                        for camera, said in report.cameras.items()))
    for record in report.stacks:
        camera = f" ({record['camera']})" if len(report.cameras) > 1 and record.get("camera") else ""
        slices = record.get("slices", "?")
        print(f"  {record['name']}{camera}: {slices} {'slice' if slices == 1 else 'slices'}, {stack_said(record)}")
    # (a full disk may have left no session.json: then these lines are all there is)
    see = SESSION_REPORT if (outcome.folder / SESSION_REPORT).is_file() else "above"
    for name, count in report.missing_slices.items():
        print(f"  {name}: {count} {'slice' if count == 1 else 'slices'} missing (see {see})", file=sys.stderr)
    not_started = report.stacks_not_started
    if not_started:
        shown = ", ".join(not_started[:5]) + (f" and {len(not_started) - 5} more" if len(not_started) > 5 else "")
        print(f"  {len(not_started)} planned z-stacks not started: {shown}", file=sys.stderr)
    if outcome.ended_by and not report.acquired_slices:
        print(f"error: the session ended before its first frame: {outcome.ended_by}; nothing was acquired",
              file=sys.stderr)
    elif outcome.ended_by:
        saved = ("saved and fused" if fused == stacks > 0 else f"saved; {fused} of its {stacks} z-stacks fused "
                 f"(see {see})" if stacks else "saved; no z-stack was fused")
        print(f"error: the session ended early: {outcome.ended_by}; what was acquired is {saved}", file=sys.stderr)
    print_warnings([warning for warning in report.warnings if warning not in said])
    for problem in report.errors:
        print(f"error: {problem}", file=sys.stderr)
    if outcome.interrupted:
        return interrupted_status()
    return 0 if outcome.completed else 1


def planned_per_camera(report) -> dict[str, int]:
    """Each camera's planned z-stacks (an MDASessionReport's ``cameras``): those it took and those that never started
    (a Ctrl-C), told apart by the ``cam`` index in their names."""
    from fusion.mda_stacks import camera_index

    camera_of = {record.get("indices", {}).get("cam"): record["camera"] for record in report.stacks
                 if record.get("camera")}
    planned = {camera: said["stacks"] for camera, said in report.cameras.items()}
    for name in report.stacks_not_started:
        camera = camera_of.get(camera_index(name))
        if camera in planned:
            planned[camera] += 1
    return planned


def stack_said(record: dict) -> str:
    """What an MDA session made of one z-stack, for its line in the summary (its files are named after it)."""
    outputs = record.get("outputs", {})
    if "fused" in outputs:
        return (f"fused {record['psnr_db']:.2f} dB vs best slice {record['best_slice_psnr_db']:.2f} dB"
                if "psnr_db" in record else "fused")
    return "not fused, its raw stack kept" if "stack" in outputs else "nothing stored"


def show_outcome(view, out_dir: Path, outcome) -> None:
    """A finished stack on the live view: its row, and its fused image and depth map."""
    from fusion.output_names import refusion_outputs
    from fusion.readers.tiff import fused_tiff_is_colour, read_image_tiff

    fused = depth = colour = None
    if outcome.status in ("done", "skipped"):
        paths = refusion_outputs(Path(out_dir), outcome.name)
        try:
            fused, depth = read_image_tiff(paths["fused"]), read_image_tiff(paths["depth"])
            colour = fused_tiff_is_colour(paths["fused"])  # 3 fluorescence channels are no RGB picture
        except (OSError, ValueError) as error:  # the page is a view: it must never stop the batch
            print(f"warning: the live view cannot show {paths['fused']}: {error}", file=sys.stderr)
    view.stack_done({"name": outcome.name, "slices": outcome.slices, "status": outcome.status,
                     "seconds": None if outcome.seconds is None else round(outcome.seconds, 2)}, fused, depth,
                    fused_colour=colour)


# The warnings this program said itself (not a stack's, which its report keeps): a refusion's summary.json records
# them (a stack given twice, outputs passed over, options with no effect).
SAID_WARNINGS: list[str] = []


def _warning_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings for people: what happened, without the source line that raised it."""
    SAID_WARNINGS.append(str(message))
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _thread_error_in_one_line(args) -> None:
    """An error in a device library's own thread (a camera's sequence thread) outside a session (which records it
    in session.json) is one line naming the device where the thread says which; a traceback would only alarm."""
    from devices.library_threads import ThreadError

    print(f"warning: {ThreadError.from_hook(args).said()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    SAID_WARNINGS.clear()  # this run's own: a second main() in one process must not report the first's
    parser = build_parser()
    args = parser.parse_args(argv)
    said = print_warnings(with_view_defaults(args))
    warnings.showwarning = _warning_in_one_line
    threading.excepthook = _thread_error_in_one_line
    from fusion.allocator import keep_freed_memory  # here: importing fusion loads OpenCV and numba
    keep_freed_memory()  # slices' temporaries reuse the same pages (fusion/allocator.py)
    # A damaged TIFF is reported as one "error: <path>: ..." line by our readers; tifffile's own
    # log lines about the same damage would only add noise (library users keep their logging).
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    # timeout, systemd and schedulers stop with SIGTERM, a terminal or ssh session that closes with SIGHUP:
    # end as Ctrl-C does (a session saves what it acquired, a batch its summary and its cluster's close).
    stop_on_signals()
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder (made if missing)")
    if args.refuse is None:
        given = [option for option, value in (("--workers", args.workers is not None), ("--resume", args.resume),
                                              ("--scheduler", args.scheduler is not None)) if value]
        if given:
            parser.error(f"{', '.join(given)}: only with --refuse (a live session fuses its one stack as it comes)")
        with contextlib.ExitStack() as lingering:  # (a live view lingers as it closes: after the run's last line)
            return run_live(args, said, lingering)
    with contextlib.ExitStack() as lingering:
        return run_refuse(parser, args, lingering)


# Options of the single-scale compositions: the pyramid (the default) has no window, exponent or seams.
SINGLE_SCALE_OPTIONS = {"window_px": "--window-px", "sharpness": "--sharpness", "feather_px": "--feather-px"}


def print_warnings(said: Iterable[str | None]) -> list[str]:
    """Each warning (None: none) on stderr; returns those printed, for a session to record."""
    printed = [warning for warning in said if warning is not None]
    SAID_WARNINGS.extend(printed)
    for warning in printed:
        print(f"warning: {warning}", file=sys.stderr)
    return printed


def unused_option_warnings(args, settings) -> list[str]:
    """A warning for each fusion option given where ``settings`` (a FusionSettings) do not use it (the settings
    that ``FusionSettings.that_count`` leaves out: --resume does not fuse again for them)."""
    from fusion.engine import SINGLE_SCALE_SETTINGS

    said: list[str | None] = [
        f"{option} applies to --composition {' and '.join(SINGLE_SCALE_SETTINGS[key])}; the {settings.composition} "
        "composition does not use it" for key, option in SINGLE_SCALE_OPTIONS.items()
        if getattr(args, key) is not None and settings.composition not in SINGLE_SCALE_SETTINGS[key]]
    if args.align_model is not None and settings.align == "off":
        said.append("--align-model has no effect: alignment is off (--align auto or on uses it)")
    if args.device is not None:
        said.append(unused_device_warning("--device", args.device, "--method", settings.measure))
    if args.weights is not None and settings.measure != "ums":
        said.append(f"--weights has no effect: it applies to --method ums; the {settings.measure} measure has none")
    return [warning for warning in said if warning is not None]


def unused_profile_fusion_warnings(profile_path, loaded, args, settings) -> list[str]:
    """As ``unused_option_warnings``, for the profile's fusion: keys that the command line did not replace: each
    named as ``<profile>: fusion.<key>``."""
    from fusion.engine import SINGLE_SCALE_SETTINGS

    fusion = loaded.fusion  # (the profile as read, before the command line's options)
    said = [f"{profile_path}: fusion.{key} applies to fusion.composition {' and '.join(used_by)}; the "
            f"{settings.composition} composition does not use it" for key, used_by in SINGLE_SCALE_SETTINGS.items()
            if getattr(fusion, key) is not None and getattr(args, key) is None and settings.composition not in used_by]
    if fusion.align_model is not None and args.align_model is None and settings.align == "off":
        said.append(f"{profile_path}: fusion.align_model has no effect: alignment is off (fusion.align auto or on "
                    "uses it)")
    if fusion.weights is not None and args.weights is None and settings.measure != "ums":
        said.append(f"{profile_path}: fusion.weights has no effect: it applies to fusion.method ums; the "
                    f"{settings.measure} measure has none")
    return said


def unused_device_warning(given_as: str, device: str, method_key: str, measure: str) -> str | None:
    """The warning where a torch device is given (``given_as``: the option or the profile key) for a focus
    measure that runs without torch: only the deep measure ("ums") has a device; None otherwise. "auto", the
    default, asks for none in particular (the shipped profile template spells it out)."""
    if measure != "ums" and device != "auto":
        return (f"{given_as} has no effect: it applies to {method_key} ums; the {measure} measure runs without "
                "torch, on the CPU")
    return None


def with_view_defaults(args) -> list[str]:
    """The live view's options that were not given set to their defaults; returns a warning for each given
    without --view, as they have no effect."""
    said = []
    for key, default in VIEW_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
        elif not args.view:
            said.append(f"--{key.replace('_', '-')} has no effect without --view (no live view is served)")
    return said


def run_refuse(parser: argparse.ArgumentParser, args, lingering: contextlib.ExitStack) -> int:
    """Offline refusion of saved stacks: exit 0 when every stack was fused. ``lingering``: closed once this has
    returned (``live_view``)."""
    from fusion.batch import refuse_many
    from fusion.stack_arguments import expand_stack_arguments
    from fusion.errors import FusionError

    if args.out is None:
        parser.error("--refuse needs --out DIR")
    settings = refuse_settings(parser, args)
    print_warnings(unused_option_warnings(args, settings))
    check_workers(parser, args)
    started = time.perf_counter()
    stacks: list[Path] = []
    finished: list = []  # outcomes as they come: a Ctrl-C's summary keeps them
    try:
        check_output_folder(args.out, "--out")
        stacks = expand_stack_arguments(args.refuse)
        if args.scheduler is not None:
            from fusion.scheduler_check import check_scheduler

            check_scheduler(args.scheduler)
        with live_view(args, f"refusing {len(stacks)} stacks into {args.out}", "refuse", lingering) as view:
            if view is not None:
                view.begin(len(stacks), "um", {})

            def arrived(outcome) -> None:
                finished.append(outcome)
                if view is not None:
                    show_outcome(view, args.out, outcome)

            outcomes = refuse_many(stacks, args.out, settings, scheduler=args.scheduler, n_workers=args.workers,
                                   resume=args.resume, on_outcome=arrived)
            summary = summarise_refusion(args, outcomes, time.perf_counter() - started, view)
    except (FusionError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        return stopped_refusion(args, str(interrupt), stacks, finished, settings, time.perf_counter() - started)
    return print_refusion_end(outcomes, summary, args.scheduler)


def summarise_refusion(args, outcomes, seconds: float, view) -> Path | OSError:
    """summary.json written, and the live view told the end; where summary.json cannot be written (a full disk),
    the error, for ``print_refusion_end`` to say after the stacks' rows and errors, which are no less true."""
    from fusion.batch import LOST, stack_warning_lines, workers_gone_line, write_summary

    summary: Path | OSError
    try:
        summary = write_summary(args.out, outcomes, seconds, args.scheduler, run_warnings=SAID_WARNINGS)
    except OSError as error:
        summary = error
    if view is not None:  # (as the terminal says them: print_refuse_problems)
        errors = [f"error: {o.error or ''}" for o in outcomes if o.status in ("failed", LOST)]
        failed = len(errors)
        gone = workers_gone_line(outcomes)
        errors += [f"error: {gone}"] if gone is not None else []
        errors += [f"error: {summary}"] if isinstance(summary, OSError) else []
        stacks = f"{failed} of {len(outcomes)} stacks failed" if failed < len(outcomes) else \
            f"{'the stack' if failed == 1 else f'all {failed} stacks'} failed: nothing was fused"
        view.end("failed" if errors else "done", "\n".join(([stacks] if failed else []) + errors),
                 {"summary": str(summary)} if isinstance(summary, Path) else {},
                 warnings=[f"warning: {line}" for line in stack_warning_lines(outcomes)])
    return summary


def print_refusion_end(outcomes, summary: Path | OSError, scheduler: str | None) -> int:
    """A finished refusion's table and summary file on stdout, its stacks' warnings and errors on stderr, then why
    summary.json could not be written, where it could not (last: the line a user reads first); the exit status:
    0 when every stack was fused and summary.json written."""
    from fusion.batch import format_table

    print(format_table(outcomes))
    if isinstance(summary, Path):
        print(f"summary: {summary}")
    failures = print_refuse_problems(outcomes, scheduler)
    if isinstance(summary, OSError):
        print(f"error: {summary}", file=sys.stderr)
        return 1
    return 1 if failures else 0


def stopped_refusion(args, reason: str, stacks: list[Path], finished: list, settings, seconds: float) -> int:
    """A refusion stopped by a signal: its summary (which stacks finished, which did not), and how to finish."""
    from fusion.batch import write_interrupted_summary

    # Outputs are written atomically: what finished is complete, the rest is redone.
    said = f"{reason or 'interrupted'}: run the same command with --resume to finish the stacks left in {args.out}"
    if stacks:
        try:
            summary = write_interrupted_summary(args.out, stacks, finished, settings, seconds, args.scheduler,
                                                run_warnings=SAID_WARNINGS)
            said += f" ({summary} says which finished)"
        except OSError as error:
            print(f"warning: cannot write the summary: {error}", file=sys.stderr)
    print(said, file=sys.stderr)
    return interrupted_status()


def check_workers(parser: argparse.ArgumentParser, args) -> None:
    """--workers from 1 to ``MAX_WORKERS_PER_CORE`` per core (a usage error otherwise), and only for a local
    cluster (a warning where --scheduler names one: its workers are the cluster's own)."""
    if args.workers is None:
        return
    cores = os.cpu_count() or 1
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.workers > MAX_WORKERS_PER_CORE * cores:
        parser.error(f"--workers {args.workers} is more than this machine can use: at most "
                     f"{MAX_WORKERS_PER_CORE * cores} ({MAX_WORKERS_PER_CORE} per core, {cores} cores); each worker "
                     "is a process of its own that holds memory")
    if args.scheduler is not None:
        print("warning: --workers has no effect with --scheduler: the cluster there has its own workers",
              file=sys.stderr)


# The command line's fusion options, by the profile's key (the fusion: section) and by FusionSettings' field.
FUSION_OPTIONS = {"method": "measure", "composition": "composition", "window_px": "window_px",
                  "sharpness": "sharpness", "mode_filter_px": "mode_filter_px", "feather_px": "feather_px",
                  "align": "align", "align_model": "align_model", "device": "device", "weights": "weights"}


def fusion_overrides(args) -> dict:
    """The fusion options given on the command line, under the profile's keys."""
    return {key: getattr(args, key) for key in FUSION_OPTIONS if getattr(args, key) is not None}


def refuse_settings(parser: argparse.ArgumentParser, args):
    """The fusion settings the command line asks for; a bad combination is a usage error."""
    from acquisition.paths import file_used_path
    from fusion.refuse import saved_stack_settings

    given = {FUSION_OPTIONS[key]: value for key, value in fusion_overrides(args).items()}
    if given.get("weights") is not None:
        # As a profile's fusion.weights: ~ and $VARIABLES expanded, absolute (a batch's workers may run elsewhere
        # than here). A file that is not there would fail every stack alike (under ums: other measures read none,
        # and a warning says so).
        try:
            given["weights"] = file_used_path(given["weights"])
        except ValueError as error:
            parser.error(f"--weights {error}")
        if given.get("measure") == "ums" and not Path(given["weights"]).is_file():
            parser.error(f"--weights {args.weights}: no such weights file")
    try:
        return saved_stack_settings(given)
    except ValueError as error:
        parser.error(str(error))


def print_refuse_problems(outcomes, scheduler: str | None = None) -> int:
    """Each stack's warnings and errors on stderr, and one line where the scheduler went away (stacks lost); returns
    how many stacks failed or were lost."""
    from fusion.batch import LOST, scheduler_gone_line, stack_warning_lines, workers_gone_line

    for warning in stack_warning_lines(outcomes):  # (one line for a warning many stacks share; skipped ones' aside)
        print(f"warning: {warning}", file=sys.stderr)
    failures = [outcome for outcome in outcomes if outcome.status == "failed"]
    for outcome in failures:
        print(f"error: {outcome.error}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(outcomes)} stacks failed", file=sys.stderr)
    for gone in (scheduler_gone_line(outcomes, scheduler), workers_gone_line(outcomes)):
        if gone is not None:
            print(f"error: {gone}", file=sys.stderr)
    return len(failures) + sum(outcome.status == LOST or outcome.no_workers is not None for outcome in outcomes)


if __name__ == "__main__":
    try:
        # The last exit hook to run (the first registered): from it to the process's end, a stop signal is ignored.
        atexit.register(ignore_stop_signals)
        status = main()
    except KeyboardInterrupt:
        # Only a stop while starting (imports, reading the options) gets here: once a session or a
        # refusion runs, it saves what it has and says so itself. Nothing is imported here: numpy or
        # SciPy cut short halfway through their import fail on a second one (a RecursionError).
        ignore_stop_signals()  # (a second Ctrl-C while this is said)
        # (--refuse as argparse takes it: in full, with =VALUE, or cut short to --ref; --re is also --resume's)
        refusing = any(len(name) > 4 and "--refuse".startswith(name)
                       for name in (argument.split("=")[0] for argument in sys.argv[1:]))
        print(f"interrupted while starting: nothing was {'fused' if refusing else 'acquired'} or written",
              file=sys.stderr)
        status = interrupted_status()
    if status == interrupted_status():
        # Already stopping: another Ctrl-C, SIGTERM or SIGHUP while Python shuts down (dask's exit hooks)
        # must not turn the exit status into a death by signal.
        ignore_stop_signals()
    else:
        # The outputs are written and said: a signal now cuts nothing short (README), and is one warning.
        stops_said_after_the_end()
    sys.exit(status)
