"""Offline refusion: one saved stack in, fused image + depth map + JSON report out."""
from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fusion.align.defaults import default_alignment
from fusion.engine import FusionSettings, StreamingFusion
from fusion.errors import StackLayoutError, FrameShapeError
from fusion.focus_checks import focus_warning
from fusion.output_names import SESSION_REPORT, refusion_outputs
from fusion.outputs import make_folder, write_depth_tiff, write_image_tiff, write_json
from fusion.read_ahead import read_ahead
from fusion.readers import SavedStack, open_stack
from fusion.readers.image_folder import ImageFolderStack
from fusion.readers.tiff import TiffStack
from fusion.refuse_report import RefuseReport
from fusion.stack_fingerprint import stack_fingerprint
from fusion.staged_outputs import StagedOutputs


# One stack at a time in a process: a stack's warnings are caught by ``warnings.catch_warnings``, whose state is the
# process's, not the thread's; a ``dask worker`` with several threads fusing stacks side by side lost some stacks'
# warnings or gave them to another stack. (Each stack's kernels use every core anyway.)
_ONE_STACK_AT_A_TIME = threading.Lock()


class RefusionStopped(BaseException):
    """Raised by ``refuse_stack`` once its ``stop`` is set: nothing of the stack is written. A BaseException, as
    KeyboardInterrupt: no ``except Exception`` on the way swallows it."""


def refuse_stack(path: str | Path, out_dir: str | Path, settings: FusionSettings | Mapping | None = None,
                 progress: bool | None = None, stop: threading.Event | None = None) -> RefuseReport:
    """Fuse the stack at ``path`` into ``out_dir``; returns the report also written as JSON.

    ``settings``: a ``FusionSettings``, or a mapping of its fields (``{"composition": "pick"}``; ``method`` is taken
    for ``measure``); None: the defaults. Alignment not given (None, or a mapping without ``align``) is a saved
    stack's, as ``--refuse``'s (``fusion.align.defaults``: ``auto``); a ``FusionSettings`` is taken as it is.
    Raises a ``fusion.errors.StackError`` naming the file when the stack cannot be fused.
    Warnings about the stack (one slice only, pixels fused as float32, little focus information, z positions
    dropped, ...) are not shown: they are caught and returned in the report's ``warnings`` (and its JSON), each
    once; print them from there (the command line does).
    ``progress``: None shows a bar only on a terminal. Threads of one process fuse their stacks one after another.
    ``stop``: once set (from another thread), the refusion ends at its next slice, or before its outputs are written
    or moved into place, with ``RefusionStopped``, leaving no outputs.
    """
    if settings is None or isinstance(settings, Mapping):
        settings = saved_stack_settings(settings or {})
    elif not isinstance(settings, FusionSettings):
        raise TypeError(f"settings must be a FusionSettings or a mapping of its fields, got {type(settings).__name__} "
                        f"{settings!r}")
    with _ONE_STACK_AT_A_TIME:
        return _refuse_stack(path, out_dir, settings, progress, stop)


def saved_stack_settings(given: Mapping) -> FusionSettings:
    """Settings from a mapping of their fields (``FusionSettings.from_mapping``), aligning as a saved stack is
    aligned where it does not say (``fusion.align.defaults``): ``refuse_stack``'s and ``--refuse``'s."""
    return FusionSettings.from_mapping({**default_alignment("saved stack"), **given})


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise RefusionStopped


def _refuse_stack(path: str | Path, out_dir: str | Path, settings: FusionSettings,
                  progress: bool | None, stop: threading.Event | None) -> RefuseReport:
    out_dir = Path(out_dir)
    make_folder(out_dir, "the output folder")
    seconds = {"read": 0.0}
    started = time.perf_counter()
    fingerprint = stack_fingerprint(path)  # before reading: a stack that changes meanwhile is fused again later
    with warnings.catch_warnings(record=True) as caught, open_stack(path) as stack:
        warnings.simplefilter("always")
        missing = missing_slices_warning(stack)
        if missing:
            warnings.warn(missing, stacklevel=1)
        shape, dtype = stack.first_slice_format()
        channels_are_colour = stack.channels_are_colour  # (a folder of TIFFs opens its first file to say)
        z, z_unit = stack.usable_focus_positions()  # µm, or a lens's dpt or mA
        try:
            engine = StreamingFusion(shape, dtype, settings, source=stack, name=str(stack.path),
                                     channels_are_colour=channels_are_colour,  # fluorescence: each channel counts
                                     z_unit=z_unit, channels_last=True)  # (a reader gives (H, W, C), by its axes)
        except FrameShapeError as error:  # frames the engine does not take (200 channels for the pyramid): the
            # stack's layout, said as such (it read "unexpected ValueError")
            raise StackLayoutError(str(error).removeprefix(f"{stack.path}: "), stack.path) from None
        bar = tqdm(total=stack.n_slices, desc=stack.name, unit="slice", disable=None if progress is None
                   else not progress, leave=False)
        with bar:
            # The next slice decodes on another thread while this one fuses. One is enough (a 5 MP slice
            # decodes in ~0.06 s and fuses in ~0.3 s); each more held 15 MB at 5 MP RGB.
            for index, pixels, read_s in read_ahead(stack.read_slice, stack.n_slices, depth=1):
                seconds["read"] += read_s
                _check_stop(stop)
                engine.push(pixels, None if z is None else z[index])
                del pixels  # (warped or fused, it is not needed while the next one is read)
                bar.update(1)
        _check_stop(stop)
        result = engine.finish()
        _check_stop(stop)
        said = focus_warning(result.focus_scores, result.depth, str(stack.path))
        if said:
            warnings.warn(said, stacklevel=1)
        look = None if channels_are_colour else stack.channel_look()  # names and colours of separate channels
        seconds.update(result.seconds)
        write_started = time.perf_counter()
        outputs = StagedOutputs(refusion_outputs(out_dir, stack.name), stack.path)  # (aside: one run's set, or none)
        try:
            pixel_size_um = stack.pixel_size_um()  # the input's calibration stays with its fused image
            outputs.write("fused", lambda path: write_image_tiff(path, result.fused, pixel_size_um=pixel_size_um,
                                                                 colour=channels_are_colour,  # channels stay
                                                                 channel_look=look))
            depth_unit = result.depth_unit
            outputs.write("depth", lambda path: write_depth_tiff(path, result.depth, depth_unit,
                                                                 pixel_size_um=pixel_size_um))
            seconds["write"] = time.perf_counter() - write_started
            seconds["total"] = time.perf_counter() - started
            report = RefuseReport(
                stack=os.path.abspath(stack.path), name=stack.name, method=settings.measure,  # (absolute: compared)
                settings=settings.to_json(), n_slices=engine.n_slices, shape=list(shape), dtype=str(dtype),
                depth_unit=depth_unit,
                depth_defined_fraction=round(float(np.isfinite(result.depth).mean()), 5),
                z_positions_um=z if z_unit == "um" else None,
                focus_positions=z if z_unit != "um" else None,
                seconds={phase: round(value, 4) for phase, value in seconds.items()},
                focus_scores=result.focus_scores, chosen_fraction=result.chosen_fraction(),
                outputs={kind: str(p) for kind, p in outputs.paths.items()}, alignment=result.alignment,
                warnings=list(dict.fromkeys(str(w.message) for w in caught)),  # each once
                source_fingerprint=fingerprint,
                slice_files=[file.name for file in stack.files] if isinstance(stack, ImageFolderStack) else None,
                device_used=result.measure_device,  # (settings keep the device asked for: --resume compares them)
                channel_weights=result.channel_weights,
                channels=None if look is None else look.to_json(),
            )
            outputs.write("report", lambda path: write_json(path, report.to_json()))
            _check_stop(stop)
            outputs.move_into_place()
        finally:
            outputs.discard()
    return report


def missing_slices_warning(stack: SavedStack) -> str | None:
    """Where ``stack`` is a live session's stack with fewer slices than its session planned, or one its session never
    finished (killed: no OME description), a warning that says so and how many it holds of how many; else None."""
    said = stack.session_slices() if isinstance(stack, TiffStack) else None
    if said is None:
        return None
    finished, planned = said
    n = stack.n_slices
    holds = f"it holds {n} of the {planned} slices its session planned" if planned is not None and n < planned else \
        f"it holds all {planned} slices its session planned" if planned is not None else \
        f"it holds the {n} slice{'s' if n > 1 else ''} written before it stopped, which may be fewer than the " \
        "session planned (the stack does not record how many)"
    if not finished:
        return (f"{stack.path}: a live session's stack that its session never finished (no OME description: the "
                f"session was killed, is still running, or had no room to write it): {holds}")
    if planned is not None and n < planned:  # ended early (Ctrl-C, a device that failed) or lost frames
        return f"{stack.path}: a live session's stack short of its plan (its {SESSION_REPORT} says why): {holds}"
    return None
