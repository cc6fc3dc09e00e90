"""One z-stack fused while it is acquired: slices to an OME-TIFF on disk, fusion in its own thread.

Memory stays O(H x W) whatever the depth: the worker holds at most a few slices and reads
the rest back from the stack file when it falls behind (see ``fusion.fusion_worker``).
A stack may instead follow another's decision (``fuse=False``, then ``finish(like=other)``): it
only buffers, and is composed from the other stack's decision map once that one is done.
A stack of one slice (an MDA with no z-plan, or none at its position) is stored and not fused:
its "fused image" would be the frame itself, so it gets no fused image or depth map. So is a stack given
``not_fused`` (why: its plan was refused), whatever its slices.
A pixel type fusion does not take as it is (a 32-bit camera's uint32) is stored as it came and fused as a saved
stack of it is refused: converted by ``fusion.readers.base.convert_dtype`` (``conversion_note`` says so).
``preview`` may be called from any thread (a viewer's timer) while the stack is fused.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion.channel_look import ChannelLook
from fusion.fusion_worker import FusionWorker
from fusion.stack_buffer import StackBuffer, StackWriteError
from fusion.engine import SUPPORTED_DTYPES, FusionResult, FusionSettings, StreamingFusion
from fusion.guided import compose_from_decision
from fusion.output_names import stack_outputs
from fusion.outputs import write_depth_tiff, write_image_tiff
from fusion.readers.base import conversion_note, convert_dtype
from fusion.slice_store import SliceSource

FINISH_TIMEOUT_S = 600.0  # fusion catching up after the last slice; far beyond any stack we measured
ONE_SLICE_NOTE = "one slice: nothing to fuse; the frame is kept in its raw stack, without a fused image or depth map"


@dataclass
class StackInfo:
    """What a stack is: its name, where it was taken, and what is known about its pixels."""

    name: str
    channel: str | None = None
    position: str | None = None
    indices: dict[str, int] = field(default_factory=dict)
    pixel_size_um: float | None = None
    time_origin_s: float | None = None   # on the clock of the slices' time_s
    significant_bits: int | None = None  # the camera's bits per sample (12 for a 12-bit camera's uint16)


class StackStream:
    """Slices in with ``add``; ``finish`` fuses, writes fused, depth and the stack, and returns a record."""

    def __init__(self, info: StackInfo, out_dir: Path, settings: FusionSettings, expected_slices: int | None = None,
                 fuse: bool = True, max_slices_in_memory: int = 4, not_fused: str | None = None):
        self.info = info
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.expected_slices = expected_slices
        self.paths = stack_outputs(self.out_dir, info.name)
        self.fuse = fuse
        self.not_fused = not_fused   # why it is stored and not fused (its record's note); None: it is fused
        self.max_slices_in_memory = max_slices_in_memory
        self.buffer: StackBuffer | None = None
        self.engine: StreamingFusion | None = None
        self.worker: FusionWorker | None = None
        self.slices: list[dict] = []
        self.error: str | None = None
        self.result: FusionResult | None = None
        self.decision_from: str | None = None   # the stack whose decision this one was composed from
        self.note: str | None = None
        # A pixel type fused as another (uint32 as float32): the type as it came, and what a warning says of it.
        self.converted_from: np.dtype | None = None
        self.conversion_note: str | None = None
        self._source: SliceSource | None = None   # the stack file's slices as fusion takes them
        # Held with the worker's lock: once the engine's finish begins, preview() no longer reads it.
        self._finishing = False
        self.started = time.perf_counter()

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def one_slice(self) -> bool:
        """Whether the stack is a single frame, which is stored and not fused."""
        return self.n_slices == 1

    @property
    def complete(self) -> bool:
        return self.expected_slices is not None and self.n_slices >= self.expected_slices

    def add(self, pixels: np.ndarray, z_um: float | None, time_s: float, exposure_ms: float | None,
            z_index: int | None = None, stage_xy_um: tuple[float, float] | None = None) -> None:
        """Store one slice on disk (``stage_xy_um``: where the XY stage was, µm), then hand it to fusion (which
        never holds acquisition up)."""
        if self.buffer is None:
            self._open(pixels)
        assert self.buffer is not None  # _open made it
        unit = "um" if z_um is not None else "slice index"
        index = self.buffer.append(pixels, self.n_slices if z_um is None else z_um, time_s, exposure_ms, unit=unit,
                                   stage_xy_um=stage_xy_um)
        self.slices.append({"index": index, "z_index": z_index, "z_um": z_um, "time_s": round(time_s, 4)})
        if self.worker is not None:
            self.worker.submit(index, self._for_fusion(pixels, index), z_um)

    def _for_fusion(self, pixels: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` as fusion takes it: converted, as a saved stack's reader converts it, where its type
        needs it."""
        if self.converted_from is None:
            return pixels
        return convert_dtype(pixels, self.paths["stack"], f"slice {index}")

    def _open(self, pixels: np.ndarray) -> None:
        expected = pixels.nbytes * (self.expected_slices or 1)
        try:
            self.buffer = StackBuffer(self.paths["stack"], expected_bytes=expected,
                                      pixel_size_um=self.info.pixel_size_um, channel=self.info.channel,
                                      time_origin_s=self.info.time_origin_s, planned_slices=self.expected_slices,
                                      significant_bits=self.info.significant_bits)
        except StackWriteError as error:  # (a full disk) it leaves no empty file
            raise StackWriteError(f"{error}; no slice of {self.info.name} was written") from error
        self._source = self.buffer
        if pixels.dtype not in SUPPORTED_DTYPES:  # stored as it came; fused (and read back) as refusion reads it
            self.converted_from = pixels.dtype
            self._source = _Converted(self.buffer, self.paths["stack"])
            if pixels.dtype != np.bool_:  # (bool as uint8 loses nothing, and a stack's reader says nothing of it)
                self.conversion_note = conversion_note(pixels.dtype, self.paths["stack"])
        if not self.fuse or self.expected_slices == 1 or self.not_fused is not None:  # (one frame: nothing to fuse)
            return
        try:
            fusable = self._for_fusion(pixels, 0)
            self.engine = StreamingFusion(fusable.shape, fusable.dtype, self.settings, source=self._source,
                                          name=self.info.name, channels_last=True)  # (a camera's frame: (H, W, C))
        except ValueError as error:  # e.g. a frame shape fusion does not take: the slices are still saved
            self.error = f"{self.info.name}: cannot fuse: {error}"
            return
        self.worker = FusionWorker(self.engine, self._source, self.max_slices_in_memory)

    def preview(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(fused so far, depth so far) while the stack is acquired; None before its first fused slice, and once its
        final composition has begun (``result`` then holds the fused image). Safe from any thread: it reads the
        engine between slices, under the fusion thread's lock, as the live view does."""
        engine, worker = self.engine, self.worker
        if engine is None or worker is None:
            return None
        with worker.lock:
            return None if self._finishing else engine.preview()

    def finish(self, like: StackStream | None = None) -> dict:
        """Fuse (or, with ``like``, compose from that finished stack's decision), write, and report.

        Whatever fails is recorded in the report's ``error``; the stack file is complete either way.
        """
        try:
            if self.one_slice or self.not_fused is not None:
                self._stop_fusing()
                self.note = ONE_SLICE_NOTE if self.not_fused is None else self.not_fused
            elif self.buffer is not None and self.error is None:
                self.result = self._fused(like)
        except Exception as error:  # recorded: the other stacks of the sequence go on
            self.error = f"{self.info.name}: fusion failed: {type(error).__name__}: {error}"
        finally:
            if self.buffer is not None:
                try:
                    self.buffer.finalize({"stack": self.info.name, "settings": dataclasses.asdict(self.settings)},
                                         "um" if self._has_z() else "slice index")
                except StackWriteError as error:  # (a full disk) its slices keep their z: fused images still go out
                    self.error = self.error or f"{self.info.name}: {error}"
                if not self.slices:  # its first slice found the disk full: a file of no slice is no stack
                    self.paths["stack"].unlink(missing_ok=True)
        if self.result is not None:
            self._write_fused(self.result.fused)
            write_depth_tiff(self.paths["depth"], self.result.depth, self.result.depth_unit,
                             pixel_size_um=self.info.pixel_size_um)
        return self.report()

    def _write_fused(self, fused: np.ndarray) -> None:
        """The fused image; a grey one of a known channel as a hyperstack of that one channel, labelled with its name
        (ImageJ's Labels, as a refused stack's channels are): Fiji shows which channel it is."""
        if fused.ndim == 2 and self.info.channel:
            write_image_tiff(self.paths["fused"], fused[..., np.newaxis], pixel_size_um=self.info.pixel_size_um,
                             colour=False, channel_look=ChannelLook(names=(self.info.channel,)))
        else:
            write_image_tiff(self.paths["fused"], fused, pixel_size_um=self.info.pixel_size_um)

    def _stop_fusing(self) -> None:
        """Let the fusion thread of a stack that will not be fused end (it was started before the count was known)."""
        if self.worker is not None:
            self.worker.finish(FINISH_TIMEOUT_S)
            self.worker = None
        self.engine = None

    def _has_z(self) -> bool:
        return all(s["z_um"] is not None for s in self.slices)

    def _fused(self, like: StackStream | None) -> FusionResult:
        if like is not None and like.result is None:
            self.note = f"fused on its own: {like.info.name}, whose decision it was to follow, was not fused"
        elif like is not None:
            if [s["z_um"] for s in like.slices] == [s["z_um"] for s in self.slices]:
                self.decision_from = like.info.name
                return self._composed_like(like)
            # Cut short (a cancelled run) or planned differently: its own decision is the only one that fits.
            self.note = (f"fused on its own: its {self.n_slices} slices are not the {like.n_slices} of "
                         f"{like.info.name}, whose decision it was to follow")
        if self.worker is None:  # buffered only (its guide never finished): fuse from the file
            self._fuse_from_buffer()
        assert self.worker is not None and self.engine is not None
        self.worker.finish(FINISH_TIMEOUT_S)
        with self.worker.lock:  # a preview under way ends first; none reads the engine while it finishes
            self._finishing = True
        return self.engine.finish().with_depth()  # (its depth map, made beside the image, may have failed)

    def _fuse_from_buffer(self) -> None:
        assert self._source is not None  # finish() is only called on a stack with slices
        first = self._source.read_slice(0)
        self.engine = StreamingFusion(first.shape, first.dtype, self.settings, source=self._source, name=self.info.name,
                                      channels_last=True)
        self.worker = FusionWorker(self.engine, self._source, max_slices_in_memory=0)
        for record in self.slices:
            self.worker.submit(record["index"], None, record["z_um"])

    def _composed_like(self, like: StackStream) -> FusionResult:
        guide = like.result
        assert guide is not None and self._source is not None  # _fused checked both
        z_here = [s["z_um"] for s in self.slices]
        fused = compose_from_decision(guide.decision, self._source, self.settings.feather_px)
        return FusionResult(fused=fused, depth=guide.depth, depth_unit=guide.depth_unit, decision=guide.decision,
                            focus_scores=[], z_positions=list(z_here), seconds={}, alignment=None,
                            measure_device=guide.measure_device)  # (where the decision it follows was measured)

    def report(self) -> dict:
        record: dict[str, Any] = {"name": self.info.name, "channel": self.info.channel, "position": self.info.position,
                  "indices": self.info.indices, "slices": self.n_slices, "expected_slices": self.expected_slices,
                  "z_um": [s["z_um"] for s in self.slices], "error": self.error,
                  "seconds_open": round(time.perf_counter() - self.started, 4)}
        if self.converted_from is not None:
            record["converted_from"] = str(self.converted_from)   # fused as float32 (uint8 from bool)
        if self.result is not None:
            try:  # (the decision map is made beside the fused image: what failed there is this stack's error)
                chosen_fraction = self.result.chosen_fraction()
            except Exception as error:
                chosen_fraction = None
                self.error = self.error or f"{self.info.name}: fusion failed: {type(error).__name__}: {error}"
                record["error"] = self.error
            record.update(focus_scores=self.result.focus_scores, depth_unit=self.result.depth_unit,
                          chosen_fraction=chosen_fraction,
                          decision_from=self.decision_from, note=self.note,
                          # Where the deep measure ran ("cpu", "cuda"), as a refusion reports it (a stack composed
                          # from another's decision: where that one's ran); None: a measure without a device.
                          device_used=self.result.measure_device,
                          seconds={k: round(v, 4) for k, v in self.result.seconds.items()})
            if self.worker is not None:
                record["slices_read_back_by_fusion"] = len(self.worker.read_back)
        elif self.note is not None:
            record["note"] = self.note
        record["outputs"] = {kind: str(path) for kind, path in self.paths.items()
                             if path.is_file() and (kind == "stack" or self.result is not None)}
        return record


class _Converted:
    """The stack file's slices as fusion takes them: a pixel type it does not fuse as it is, converted as a saved
    stack's reader converts it (``convert_dtype``), so slices read back are those that were pushed."""

    def __init__(self, buffer: SliceSource, path: Path):
        self._buffer = buffer
        self._path = path

    def read_slice(self, index: int) -> np.ndarray:
        return convert_dtype(self._buffer.read_slice(index), self._path, f"slice {index}")
