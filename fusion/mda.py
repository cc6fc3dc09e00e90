"""Fusion inside a pymmcore-plus MDA: every z-stack of the sequence fused as its frames arrive.

    handler = StreamingFusionHandler("fused/", method="sf")
    core.mda.run(sequence, output=handler)            # or output=["run.ome.zarr", handler]

pymmcore-plus calls ``sequenceStarted``, ``frameReady`` and ``sequenceFinished`` on its relay
thread, so acquisition never waits for them. One engine runs per (position, time, channel,
..., camera) stack, for any ``axis_order`` (a Multi Camera's physical cameras each have their own
stacks, ``p0_cam1``, their records naming the ``camera``); each stack's slices go to ``<name>.stack.ome.tif`` as they
arrive, and when its last slice is in, its fused image and depth map (µm, from the events'
z) are written beside it. ``mda_fusion.json`` sums the sequence up and names it (its uid and
start). The run returns once every output is written (pymmcore-plus waits for its handlers).

Nothing acquired is overwritten: a sequence writes into the folder it was given unless that
folder already holds an MDA's outputs (an earlier sequence through the same handler, as napari's
"Follow MDA" sends them all, or an earlier run); then into a new subfolder of it,
``mda-<YYYYMMDD-HHMMSS>-<first 8 of the sequence's uid>``. ``handler.out_dir`` is the folder the
current (or last) sequence writes into; ``handler.folder`` the one it was given.

A stack of one slice (a sequence with no z-plan, or none at one position) is stored and not
fused: the handler says so once per sequence, in a warning and in ``mda_fusion.json``.

A frame that cannot be stored (a full disk) is recorded in ``mda_fusion.json``. Given ``stop_mda``
(``core.mda.cancel``), the handler also stops the MDA there, as a single-stack session ends, instead of
exposing every remaining frame for nothing: ``handler.stopped_by`` says why, naming the stack and the folder.
A folder that cannot be made when the sequence starts (a file in its place, no permission) stores nothing:
``handler.error`` says why (and a warning), ``handler.summary`` sums the sequence up in memory, ``finished`` is set,
and, given ``stop_mda``, the MDA is stopped. An ``out_dir`` that is a file (or under one) is refused at once.

A z_plan whose steps the depth map cannot tell apart (``fusion.depth_z``: 1e-5 µm at 250 µm) is refused as the sequence
starts, not once its stacks are acquired and their fusion fails: ``handler.refused`` (and ``error``, a warning) names
the z_plan and the step to give it; nothing of the sequence is fused, and given ``stop_mda`` the MDA is stopped there. A
frame that comes all the same (an ``output=`` handler is told of the start on pymmcore-plus's relay thread, as the
runner goes on) is stored. ``check(sequence)`` raises it before anything runs.

A stack that could not be fused (or whose outputs could not be written) is said in a warning, one line naming the
stack and why, besides ``mda_fusion.json``'s ``failed`` and the stack's ``error``. Frames of a pixel type that fusion
does not take as it is (a 32-bit camera's uint32) are stored as they came and fused as float32, as ``--refuse``
fuses such a stack, with its warning. Every warning the handler gives a sequence is in ``mda_fusion.json``'s
``warnings``.

``preview()`` may be called from any thread at any time (napari's "Follow MDA" timer polls it).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from fusion.engine import FusionSettings
from fusion.mda_stacks import (PlannedStack, StackKey, channel_name, planned_stacks, stack_key, stack_name,
                               too_fine_z_plan)
from fusion.output_names import DEPTH, FUSED, MDA_SUMMARY, STACK
from fusion.outputs import for_want_of_space, plausible_pixel_size_um, write_json
from fusion.stack_stream import FINISH_TIMEOUT_S, StackInfo, StackStream

log = logging.getLogger(__name__)
SUMMARY_NAME = MDA_SUMMARY  # (fusion.output_names names every output)
SEQUENCE_FOLDER_PREFIX = "mda-"
# Frames a warning skips to point at whoever called the handler: its own modules, and the MDA
# machinery between (so a sequence run in the caller's thread points at the caller's ``run``).
# A stack of a sequence whose plan was refused, in its record (the summary's ``error`` says why).
_REFUSED_PLAN_NOTE = ("not fused: the sequence's z_plan steps finer than the depth map holds (mda_fusion.json's error "
                      "says where, and the step to give it); the frames are kept in its raw stack")
_NOT_THE_CALLER = ("fusion.mda", "fusion.stack_stream", "napari_ums_fusion.mda_follow", "pymmcore_plus",
                   "psygnal", "contextlib", "threading", "concurrent.futures")


class StreamingFusionHandler:
    """A pymmcore-plus MDA output handler that fuses every z-stack of the sequence into ``out_dir``.

    ``settings`` are ``fusion.FusionSettings`` fields (method, composition, window_px, ...;
    ``method`` is accepted for ``measure``). ``decision_channel``: a channel configuration
    (e.g. "DAPI") whose decision (chosen slices, depth) the other channels of the same
    position and time follow, so that they stay in register. ``keep_stacks=False`` deletes
    each raw stack once it is fused (keep it when no other writer saves the data).
    ``pixel_size_um`` overrides what the core reports (0 or nothing where it has no pixel size).
    ``stop_mda`` (e.g. ``core.mda.cancel``) is called, once, when a frame cannot be stored (a full disk): the
    frames taken while the MDA stops are recorded as not stored, and no new stack file is started.
    ``core``, the CMMCorePlus that runs the MDAs: each stack of its current camera then says the camera's exact bit
    depth (``core.getImageBitDepth()``, as a live session's stack does). Without it, and for the other cameras
    of a sequence (a multi-camera's), the stacks say the bits of the pixel format in the sequence's metadata,
    which rounds them up (an 11-bit camera's Mono12: 12). ``camera_bits``: cameras' exact bit depths by label, read
    before the MDA (``devices.micromanager.camera_bit_depths``: a Multi Camera's physical cameras, those its frames
    are tagged with, which ``core`` cannot be asked for while the MDA runs); the current camera's, read at each
    start, wins.

    Each sequence writes into ``out_dir`` unless it already holds an MDA's outputs, else into a
    subfolder of its own (see the module's docstring): one handler may run any number of MDAs.
    """

    def __init__(self, out_dir: str | Path, *, decision_channel: str | None = None, keep_stacks: bool = True,
                 max_slices_in_memory: int = 4, pixel_size_um: float | None = None,
                 stop_mda: Callable[[], object] | None = None, core: Any = None,
                 camera_bits: Mapping[str, int] | None = None, **settings):
        self.settings = FusionSettings.from_mapping(settings)
        if max_slices_in_memory < 0:
            raise ValueError(f"max_slices_in_memory must be 0 or more, got {max_slices_in_memory}")
        if pixel_size_um is not None and not pixel_size_um > 0:
            raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
        self.pixel_size_um = pixel_size_um
        not_a_folder = _not_a_folder(Path(out_dir))
        if not_a_folder is not None:
            raise ValueError(f"out_dir {out_dir} {not_a_folder}: the handler writes a folder of outputs there")
        self.folder = Path(out_dir)     # as given: the first sequence's folder, the others' parent
        self.out_dir = self.folder      # the current (or last) sequence's folder
        self.decision_channel = decision_channel
        self.keep_stacks = keep_stacks
        self.max_slices_in_memory = max_slices_in_memory
        self._stop_mda = stop_mda
        self._core = core
        self._given_camera_bits = dict(camera_bits or {})
        self._lock = threading.RLock()  # frameReady may start the sequence itself
        self.finished = threading.Event()  # set once a sequence's outputs and summary are written
        self._reset()

    def _reset(self) -> None:
        self._expected: dict[StackKey, int] | None = None
        self._open: dict[StackKey, StackStream] = {}
        self._started_keys: set[StackKey] = set()
        self._done: dict[StackKey, StackStream] = {}
        self._waiting: dict[StackKey, StackStream] = {}   # complete, waiting for their guide's decision
        self._records: list[dict] = []
        self._finisher: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future] = []
        self._pixel_size_um: float | None = None
        self._camera_bits: dict[str | None, int | None] = {}   # per camera: bits per sample
        self._camera_of: dict[str, str] = {}   # stack name -> the camera that took its frames (meta's camera_device)
        self._started = time.perf_counter()
        self._frames = 0
        self._frame_errors: list[dict] = []
        self.error: str | None = None
        # Why the sequence's plan was refused as it started (z steps finer than the depth map holds): nothing of it
        # is fused, and given stop_mda it is stopped there; a frame that comes all the same is stored.
        self.refused: str | None = None
        self.stopped_by: str | None = None       # with stop_mda: the frame that could not be stored, and why
        self.summary: dict | None = None
        self.summary_error: str | None = None    # mda_fusion.json could not be written (``summary`` says it all)
        self.latest: StackStream | None = None
        self._sequence: Any = None
        self._sequence_uid: str | None = None
        self._started_at = datetime.datetime.now().astimezone()
        self._planned: dict[StackKey, PlannedStack] | None = None
        self._one_slice_note: str | None = None   # said once per sequence
        self._no_folder: str | None = None        # why the sequence's folder could not be made: nothing is stored
        self._converted_said: set[str] = set()    # pixel types said to be fused as another, once per sequence
        self.warnings: list[str] = []             # every warning given for the sequence (also in mda_fusion.json)
        # Those of them that say an error the summary holds too (a stack that failed, no folder): a session that
        # prints the summary's errors leaves these out.
        self.errors_said: list[str] = []

    # -- checks anyone may call before running --
    def check(self, sequence) -> None:
        """Raise ValueError if this handler cannot fuse ``sequence`` as asked: a z_plan stepping finer than the depth
        map holds (the message says the step to give it), an unknown decision channel."""
        too_fine = too_fine_z_plan(sequence)
        if too_fine is not None:
            raise ValueError(too_fine)
        self._check_decision_channel(sequence)

    def _check_decision_channel(self, sequence) -> None:
        if self.decision_channel is None:
            return
        channels = [c.config for c in getattr(sequence, "channels", ())]
        if self.decision_channel not in channels:
            raise ValueError(f"decision_channel {self.decision_channel!r} is not among the sequence's channels "
                             f"({', '.join(channels) or 'none'})")

    # -- pymmcore-plus handler protocol --
    def sequenceStarted(self, sequence, meta: dict | None = None) -> None:
        with self._lock:
            self._reset()
            self.finished.clear()
            self._sequence = sequence
            # First of all (the runner goes on meanwhile): a plan whose stacks fusion would refuse once acquired.
            too_fine = too_fine_z_plan(sequence)
            if too_fine is not None:
                self._refuse_plan(too_fine)
            uid = getattr(sequence, "uid", None)
            self._sequence_uid = None if uid is None else str(uid)
            infos = (meta or {}).get("image_infos") or [{}]
            self._planned = planned_stacks(sequence, self._camera_channels(infos[0]))
            try:
                self.out_dir = self._claim_folder()
            except OSError as error:  # pymmcore-plus only logs what a handler raises, and runs on: said here
                self.out_dir = self.folder
                self._say_refused()
                self._refuse_sequence(error)
                return
            self._say_refused()
            self._expected = None if self._planned is None else {k: p.slices for k, p in self._planned.items()}
            self._pixel_size_um = infos[0].get("pixel_size_um") or None
            self._camera_bits = {info.get("camera_label"): _bits_of(info.get("pixel_format")) for info in infos}
            self._camera_bits.update(self._given_camera_bits)
            if self._core is not None:
                self._camera_bits.update(_current_camera_bits(self._core))
            self._finisher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fusion-finish")
            if self.refused is not None:  # (nothing of it is fused: how it would have been is no concern)
                return
            try:
                self._check_decision_channel(sequence)
            except ValueError as error:
                # pymmcore-plus only logs what a handler raises: say it, and fuse each stack on its own.
                self.error = f"{error}; each stack was fused on its own"
                log.error("StreamingFusionHandler: %s", self.error)
                self._say(self.error)
            if self._planned is not None:
                self._say_one_slice_stacks([p.name for p in self._planned.values() if p.slices == 1],
                                           len(self._planned))

    def _camera_channels(self, image_info: dict) -> int:
        """How many frames each event gives (a Multi Camera's physical cameras): as pymmcore-plus's runner counts
        them, from the sequence's metadata; else from ``core``; else one."""
        if "num_camera_adapter_channels" in image_info or self._core is None:
            return int(image_info.get("num_camera_adapter_channels", 1))
        try:
            return int(self._core.getNumberOfCameraChannels())
        except RuntimeError:
            return 1

    def frameReady(self, image, event, meta: dict | None = None) -> None:
        meta = meta or {}
        with self._lock:
            if self._finisher is None and self._no_folder is None:  # called without sequenceStarted (connected by
                self.sequenceStarted(getattr(event, "sequence", None), None)  # hand mid-run)
            key = stack_key(event)
            self._frames += 1
            z_um = _z_um(event, meta)
            if self._no_folder is not None:  # the sequence has no folder: nothing of it is stored anywhere
                self._frame_errors.append({"stack": stack_name(event), "z_um": z_um,
                                           "error": f"not stored: {self._no_folder}"})
                return
            if self.stopped_by is not None:  # taken while the MDA stops: nothing more goes to that disk
                self._frame_errors.append({"stack": stack_name(event), "z_um": z_um,
                                           "error": "not stored: the MDA was stopping, a frame before it could not "
                                                    "be stored"})
                return
            stream = self._open.get(key) or self._open_stack(key, event, meta)
            time_s = meta.get("runner_time_ms", (time.perf_counter() - self._started) * 1000) / 1000
            try:
                stream.add(image, z_um, time_s, meta.get("exposure_ms"), event.index.get("z"),
                           _stage_xy_um(event, meta))
            except (ValueError, OSError) as error:  # e.g. the frame size changed mid-stack: recorded, never silent
                self._frame_errors.append({"stack": stream.info.name, "z_um": z_um, "error": str(error)})
                if isinstance(error, OSError) and self._stop_mda is not None:
                    self._stop(stream, z_um, getattr(image, "nbytes", 0), error)
                else:
                    log.error("StreamingFusionHandler: frame at z=%s of %s not stored: %s", z_um, stream.info.name,
                              error)
                    stream.expected_slices = None if stream.expected_slices is None else stream.expected_slices - 1
            self._say_conversion(stream)
            self.latest = stream
            if stream.complete:
                self._close(key)

    def sequenceFinished(self, sequence) -> None:
        with self._lock:
            if self._no_folder is not None:  # nothing was stored: the summary says so, in memory only
                self.summary = self._summary(sequence)
                self.finished.set()
                return
            if self._finisher is None:
                return
            for key in list(self._open):   # cancelled, or frames that never came: fuse what arrived
                self._close(key)
            for key in list(self._waiting):  # their guide never finished: fuse them on their own
                self._submit(self._waiting.pop(key), None)
        try:
            self._wait_for_finishing()
            if self._planned is None:  # events not known in advance: said now, from what arrived
                self._say_one_slice_stacks([r["name"] for r in self._records if r.get("slices") == 1],
                                           len(self._records))
            self._write_summary(sequence)
        finally:  # whoever waits for the outputs is never left waiting
            self.finished.set()

    def _refuse_sequence(self, error: OSError) -> None:
        """The sequence's folder could not be made: nothing of it is stored (no frame, no stack file, no summary
        file); ``error`` and a warning say why, ``finished`` is set, and ``stop_mda`` (if given) stops the MDA."""
        not_a_folder = _not_a_folder(self.folder)   # (a file appeared in its place since the handler was made)
        why = str(error) if not_a_folder is None else f"it {not_a_folder} ({error})"
        self._no_folder = f"the folder {self.folder} could not be made: {why}"
        stopping = self._stop_mda is not None
        self.error = (f"{self._no_folder}; nothing of the sequence was stored"
                      + ("; the MDA was stopped" if stopping else ""))
        if stopping:
            self.stopped_by = self.error
        log.error("StreamingFusionHandler: %s", self.error)
        self._say(self.error, an_error=True)
        self.summary = self._summary(self._sequence)
        self.finished.set()  # nothing will be written: whoever waits for the outputs is not left waiting
        if self._stop_mda is not None:
            try:
                self._stop_mda()
            except Exception as stop_error:  # the MDA runs on: its frames are recorded as not stored
                log.error("StreamingFusionHandler: could not stop the MDA: %s: %s", type(stop_error).__name__,
                          stop_error)

    def _refuse_plan(self, too_fine: str) -> None:
        """The sequence's z_plan steps finer than the depth map holds (``too_fine`` says where and the step to give
        it): stopped now, given ``stop_mda``, before a frame is taken for a fusion that would refuse it; nothing of it
        is fused. Said once its folder is known (``_say_refused``)."""
        stopping = self._stop_mda is not None
        self.refused = too_fine + ("; the MDA was stopped: nothing of it is fused (a frame taken before it stopped is "
                                   "kept in its stack)" if stopping else
                                   "; nothing of it is fused: its frames are kept in their stacks as they come (a "
                                   "handler given stop_mda=core.mda.cancel stops such an MDA as it starts)")
        self.error = self.refused
        if stopping:
            assert self._stop_mda is not None
            try:
                self._stop_mda()
            except Exception as stop_error:  # the MDA runs on: its frames are stored, not fused
                log.error("StreamingFusionHandler: could not stop the MDA: %s: %s", type(stop_error).__name__,
                          stop_error)

    def _say_refused(self) -> None:
        if self.refused is not None:  # (warned, not logged too: a script printed it twice)
            self._say(self.refused, an_error=True)

    def _stop(self, stream: StackStream, z_um: float | None, frame_bytes: int, error: OSError) -> None:
        """A frame could not be stored (a full disk): every later one would fail too, so stop the MDA now."""
        where = f"z={z_um:g} µm" if z_um is not None else f"slice {stream.n_slices}"
        what = "the disk is full" if _disk_full(error, self.out_dir, frame_bytes) else "a frame could not be stored"
        folder = "" if str(self.out_dir) in str(error) else f" (in {self.out_dir})"  # (the error names its file)
        self.stopped_by = (f"{what}: the frame at {where} of stack {stream.info.name} was not stored: {error}{folder}; "
                           "the MDA was stopped there")
        log.error("StreamingFusionHandler: %s", self.stopped_by)
        assert self._stop_mda is not None  # (called only with one)
        try:
            self._stop_mda()
        except Exception as stop_error:  # the MDA runs on: its frames are still recorded as not stored
            log.error("StreamingFusionHandler: could not stop the MDA: %s: %s", type(stop_error).__name__, stop_error)

    # -- the sequence's folder, and what it is told --
    def _claim_folder(self) -> Path:
        """The folder this sequence writes into: the one given, unless it already holds an MDA's
        outputs; else a new ``mda-<start>-<uid>`` subfolder. Claimed by creating its mda_fusion.json.
        An OSError (a file in its place, no permission, a full disk) leaves none of the folders it made."""
        made = [folder for folder in (self.folder, *self.folder.parents) if not folder.exists()]
        try:
            return self._claim_a_folder()
        except OSError:
            for folder in made:  # (deepest first) only those it made, and only empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    def _claim_a_folder(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not holds_mda_outputs(self.folder) and self._claim(self.folder):
            return self.folder
        stamp = self._started_at.strftime("%Y%m%d-%H%M%S")
        label = (self._sequence_uid or uuid.uuid4().hex)[:8]
        base = f"{SEQUENCE_FOLDER_PREFIX}{stamp}-{label}"
        n = 1
        while True:
            folder = self.folder / (base if n == 1 else f"{base}-{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                n += 1
                continue
            try:
                self._claim(folder)
            except OSError:
                folder.rmdir()
                raise
            log.info("StreamingFusionHandler: %s holds an earlier MDA's outputs; MDA sequence %s goes to %s",
                     self.folder, self._sequence_uid, folder)
            return folder

    def _claim(self, folder: Path) -> bool:
        """Create ``folder``'s mda_fusion.json saying which sequence is being acquired; False if one exists."""
        try:
            descriptor = os.open(folder / SUMMARY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump({**self._identity(folder), "finished": False,
                           "note": "being acquired; replaced by the sequence's summary when it ends"}, file, indent=2)
                file.write("\n")
        except BaseException:  # (a full disk) no half-written summary is left to say the folder is claimed
            (folder / SUMMARY_NAME).unlink(missing_ok=True)
            raise
        return True

    def _identity(self, folder: Path) -> dict:
        return {"sequence_uid": self._sequence_uid, "started": self._started_at.isoformat(timespec="seconds"),
                "out_dir": str(folder)}

    def _describe(self) -> str:
        """The sequence in a message: its uid and the folder it writes into."""
        uid = self._sequence_uid or "without a uid"
        return f"MDA sequence {uid}" + ("" if self._no_folder is not None else f" (outputs in {self.out_dir})")

    def _say_one_slice_stacks(self, names: list[str], n_stacks: int) -> None:
        """Warn once per sequence that stacks of one slice are kept and not fused."""
        if not names or self._one_slice_note is not None:
            return
        self._one_slice_note = self._one_slice_text(names, n_stacks)
        self._say(self._one_slice_note)

    def _say(self, message: str, an_error: bool = False) -> None:
        """Warn, naming the sequence, and keep the warning for mda_fusion.json (``an_error``: one the summary's
        errors hold too)."""
        text = f"StreamingFusionHandler: {self._describe()}: {message}"
        with self._lock:
            self.warnings.append(text)
            if an_error:
                self.errors_said.append(text)
        _warn(text)

    def _say_conversion(self, stream: StackStream) -> None:
        """Say, once per sequence and pixel type, that frames of a type fusion does not take are fused as another."""
        if stream.conversion_note is None or str(stream.converted_from) in self._converted_said:
            return
        self._converted_said.add(str(stream.converted_from))
        others = self._planned is None or len(self._planned) > 1
        self._say(stream.conversion_note + (f"; so are the sequence's other {stream.converted_from} stacks"
                                            if others else ""))

    def _say_failed(self, record: dict) -> None:
        """Say in one line that a stack failed, naming it and why (the whole error is in mda_fusion.json)."""
        name, error = record.get("name", "?"), str(record["error"])
        reason = error.strip().removeprefix(f"{name}: ").removeprefix("fusion failed: ")  # (said by "failed")
        lines = reason.splitlines() or [""]
        more = " (the whole error is in mda_fusion.json)" if len(lines) > 1 else ""
        made = "its fused image was written" if "fused" in record.get("outputs", {}) else "no fused image"
        self._say(f"stack {name} failed ({made}): {lines[0].strip()}{more}", an_error=True)

    def _one_slice_text(self, names: list[str], n_stacks: int) -> str:
        if len(names) == n_stacks:
            z_plan = getattr(self._sequence, "z_plan", None)
            why = ("the sequence has no z-plan" if z_plan is None else
                   f"its z-plan ({z_plan!r}) gives one z position per stack")
            return (f"{why}: each of its {n_stacks} stacks is one frame, so there is nothing "
                    f"to fuse; the frames are kept as <name>.{STACK}, without fused images or depth maps")
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return (f"{len(names)} of its {n_stacks} stacks have one slice (no z-plan there: {shown}); they are kept "
                f"as <name>.{STACK}, without fused images or depth maps; the others are fused")

    # -- stacks --
    def _open_stack(self, key: StackKey, event, meta: dict) -> StackStream:
        name = stack_name(event)
        if key in self._done or key in self._waiting:  # more frames than the sequence planned: a stack of its own
            name = f"{name}-again{sum(1 for r in self._records if r['name'].startswith(name)) + 1}"
        pixel_size_um = self.pixel_size_um or plausible_pixel_size_um(  # (1e-30 failed the stack's first frame)
            meta.get("pixel_size_um") or self._pixel_size_um, "Micro-Manager", "pixel size the core gives")
        info = StackInfo(name=name, channel=channel_name(event), position=event.pos_name,
                         indices=dict(key), pixel_size_um=pixel_size_um, time_origin_s=0.0,
                         significant_bits=self._camera_bits.get(meta.get("camera_device"),
                                                                next(iter(self._camera_bits.values()), None)))
        if meta.get("camera_device"):
            self._camera_of[name] = str(meta["camera_device"])
        expected = None if self._expected is None else self._expected.get(key)
        follows = self.error is None and self._follows_another(event)
        stream = StackStream(info, self.out_dir, self.settings, expected, fuse=not follows,
                             max_slices_in_memory=self.max_slices_in_memory,
                             not_fused=None if self.refused is None else _REFUSED_PLAN_NOTE)
        self._open[key] = stream
        self._started_keys.add(key)
        return stream

    def _follows_another(self, event) -> bool:
        """Whether this event's stack takes its decision from the decision channel's stack."""
        return self.decision_channel is not None and event.channel is not None \
            and event.channel.config != self.decision_channel

    def _close(self, key: StackKey) -> None:
        stream = self._open.pop(key)
        if stream.fuse or stream.buffer is None:
            self._submit(stream, None)
            self._done[key] = stream
            for waiting_key in [k for k in self._waiting if self._guide_of(k) == key]:
                self._submit(self._waiting.pop(waiting_key), stream)
            return
        guide_key = self._guide_of(key)
        guide = self._done.get(guide_key)
        if guide is not None:
            self._submit(stream, guide)
        else:
            self._waiting[key] = stream

    def _guide_of(self, key: StackKey) -> StackKey:
        """The key of the decision channel's stack at the same position, time, ..."""
        guide_index = [c.config for c in self._sequence.channels].index(self.decision_channel)
        return tuple((axis, guide_index if axis == "c" else value) for axis, value in key)

    def _submit(self, stream: StackStream, like: StackStream | None) -> None:
        # One finisher thread, in order: a guide is always finished before the stacks that follow it.
        assert self._finisher is not None  # made when the sequence started
        self._pending.append(self._finisher.submit(self._finish_one, stream, like))

    def _finish_one(self, stream: StackStream, like: StackStream | None) -> None:
        try:
            record = stream.finish(like)
        except OSError as error:  # (a full disk) its images could not be written: its own record says so, by name
            stream.error = stream.error or f"{stream.info.name}: {error}"
            record = stream.report()
        except Exception as error:  # a bug in making its outputs: still its own record, by name
            stream.error = stream.error or f"{stream.info.name}: {type(error).__name__}: {error}"
            record = stream.report()
        if stream.info.name in self._camera_of:  # (which of a multi-camera's cameras: said per camera)
            record["camera"] = self._camera_of[stream.info.name]
        # Deleted once fused: a stack of one frame is never fused, so it is kept (it may be the only copy).
        if not self.keep_stacks and record["error"] is None and "fused" in record["outputs"]:
            stream.paths["stack"].unlink(missing_ok=True)
            record["outputs"].pop("stack", None)
        with self._lock:
            self._records.append(record)
        if record["error"] is not None:
            self._say_failed(record)

    def _wait_for_finishing(self) -> None:
        done, not_done = concurrent.futures.wait(self._pending, timeout=FINISH_TIMEOUT_S)
        lost = []
        for future in done:
            if future.exception() is not None:  # a bug in writing outputs: recorded, not lost
                lost.append({"name": "?", "error": f"{type(future.exception()).__name__}: {future.exception()}"})
        if not_done:
            lost.append({"name": "?", "error": f"{len(not_done)} stacks were still fusing after "
                                               f"{FINISH_TIMEOUT_S:g} s; their stacks are on disk"})
        for record in lost:
            self._records.append(record)
            self._say_failed(record)
        if self._finisher is not None:
            self._finisher.shutdown(wait=False)

    def _write_summary(self, sequence) -> None:
        summary = self._summary(sequence)
        self.summary = summary
        try:
            write_json(self.out_dir / SUMMARY_NAME, summary)
        except OSError as error:  # (a full disk) ``summary`` still says what was made where, to whoever asks
            self.summary_error = str(error)
            log.error("StreamingFusionHandler: %s", error)

    def _summary(self, sequence) -> dict:
        """What mda_fusion.json says when the sequence ends (``handler.summary``)."""
        records = sorted(self._records, key=lambda r: r["name"])
        # (A refused plan's stacks are not fused for that reason, whatever frames came: a kept first frame is no
        # stack of one slice.)
        one_slice = [] if self.refused is not None else [r["name"] for r in records if r.get("slices") == 1]
        return {**self._identity(self.out_dir), "finished": True,
                "note": self._one_slice_note,
                "one_slice_stacks": one_slice,
                "settings": dataclasses.asdict(self.settings),
                "decision_channel": self.decision_channel, "error": self.error, "frames": self._frames,
                "frames_not_stored": self._frame_errors,
                "stacks": records, "failed": [r["name"] for r in records if r.get("error")],
                "missing_slices": {r["name"]: r["expected_slices"] - r["slices"] for r in records
                                   if r.get("expected_slices") and r["slices"] < r["expected_slices"]},
                # Planned, and not one frame came (a cancelled or stopped MDA): no record, no file.
                "stacks_not_started": [] if self._planned is None else
                [planned.name for key, planned in self._planned.items() if key not in self._started_keys],
                "seconds": round(time.perf_counter() - self._started, 4),
                "stopped_by": self.stopped_by,
                "warnings": list(self.warnings),
                "sequence": _sequence_json(sequence)}

    # -- for viewers and sessions --
    def stacks_finished(self) -> list[dict]:
        """The records of the current sequence's z-stacks finished so far (fused, or why not), as mda_fusion.json
        lists them when the sequence ends. Safe from any thread."""
        with self._lock:
            return list(self._records)

    def preview(self):
        """(stack name, fused so far, depth so far) of the stack that last received a slice; or None."""
        stream = self.latest
        if stream is None:
            return None
        if stream.result is not None:
            return stream.info.name, stream.result.fused, stream.result.depth
        images = stream.preview()
        return None if images is None else (stream.info.name, *images)


def _not_a_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot be a folder ("is a file", "lies under X, which is a file"); None where it can."""
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            if path.is_dir():
                return None
            kind = "a file" if path.is_file() else "not a folder"
            return f"is {kind}" if path == folder else f"lies under {path}, which is {kind}"
    return None


def holds_mda_outputs(folder: Path) -> bool:
    """Whether ``folder`` holds an MDA's summary, or stacks, fused images or depth maps of ours."""
    if (folder / SUMMARY_NAME).exists():
        return True
    return any(True for suffix in (STACK, FUSED, DEPTH) for _ in folder.glob(f"*.{suffix}"))


def _warn(message: str) -> None:
    """Warn, pointing at whoever called the handler (the user's code where it is on this thread's
    stack), not at a line of the handler; the message names the sequence and the stacks itself."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    first_outside = None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not any(module == name or module.startswith(name + ".") for name in _NOT_THE_CALLER):
            break
        if first_outside is None and not module.startswith(("fusion.", "napari_ums_fusion.")):
            first_outside = level
        frame, level = frame.f_back, level + 1
    # On pymmcore-plus's relay thread no user code is on the stack: point at the handler's caller there.
    warnings.warn(message, UserWarning, stacklevel=level if frame is not None else (first_outside or 2))


def _disk_full(error: BaseException, folder: Path, frame_bytes: int) -> bool:
    """Whether ``error`` says the disk is full or its quota used up (``for_want_of_space``), or, where it says
    nothing that tells, whether the disk of ``folder`` has less room than a frame."""
    if for_want_of_space(error):
        return True
    try:
        return shutil.disk_usage(folder).free < frame_bytes
    except OSError:
        return False


def _bits_of(pixel_format: str | None) -> int | None:
    """The bits per sample a GenICam pixel format name says ("Mono12": 12, "RGB8": 8); None where it says none."""
    bits = re.search(r"(\d+)$", pixel_format or "")
    return int(bits.group(1)) if bits else None


def _current_camera_bits(core) -> dict[str | None, int | None]:
    """The core's current camera and its exact bit depth. Only that camera's: the others' would be read by making
    each the current one (as pymmcore-plus's image_infos does), which this handler may not do while the MDA runs
    (it is told of the start on a thread of its own, once the runner has gone on)."""
    try:
        camera = core.getCameraDevice()
        return {camera: int(core.getImageBitDepth()) or None} if camera else {}
    except RuntimeError:  # (the camera gone): its pixel format's bits stand
        return {}


def _z_um(event, meta: dict) -> float | None:
    """The slice's z: the event's, else where the stage said it was; None without either."""
    if event.z_pos is not None:
        return float(event.z_pos)
    z = (meta.get("position") or {}).get("z")
    return None if z is None else float(z)


def _stage_xy_um(event, meta: dict) -> tuple[float, float] | None:
    """Where the XY stage was for the frame, (x, y) µm: the event's position, else where the stage said it was;
    None without either (a rig with no XY stage)."""
    said = meta.get("position") or {}
    x = event.x_pos if event.x_pos is not None else said.get("x")
    y = event.y_pos if event.y_pos is not None else said.get("y")
    return None if x is None or y is None else (float(x), float(y))


def _sequence_json(sequence):
    try:
        return sequence.model_dump(mode="json", exclude_unset=True)
    except Exception:  # a placeholder for a generator of events, or not a useq model at all
        return None
