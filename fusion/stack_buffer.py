"""The session's stack on disk: a TIFF written slice by slice that survives a crash.

Each slice is one page, written with an unbuffered file so that it is in the file the
moment ``append`` returns; each page's description holds its z, time and exposure as JSON,
so even after ``kill -9`` the slices already acquired read back with their positions.
``finalize`` then puts OME-XML (every plane's z, time and exposure, its stage x/y where known, the
pixel size and channel name when known, and the profile) into the first page, which makes the file an
OME-TIFF that Fiji (Bio-Formats) and napari open as one z-stack. OME's ``DeltaT`` is time
since the experiment began: since the first plane, unless ``time_origin_s`` says otherwise.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from typing import Any
from pathlib import Path

import numpy as np
import tifffile

from fusion.errors import slice_name
from fusion.memory import size_said
from fusion.outputs import colour_by_shape
from fusion.readers.tiff import SESSION_PLANE_KEY

CLASSIC_TIFF_LIMIT_BYTES = 3_500_000_000  # beyond this, BigTIFF
FINALIZE_MARGIN_BYTES = 1 << 20           # free space beyond the OME description that finalize asks for
# What each slice adds to the file besides its pixels: its page's tags and JSON description (352 bytes measured) and
# its plane in the OME description (about 150); the description's fixed part (the profile) is in the margin above.
METADATA_BYTES_PER_SLICE = 1024
OUTPUT_MARGIN_BYTES = 64 << 10             # a stack's focus curve (PNG, ~30 kB) and report (JSON, ~7 kB)


class StackWriteError(OSError):
    """A slice, the stack's OME description, or the file itself could not be written (a full disk): says what is
    safe. A stack that could not be started leaves no file."""


class StackWontFitError(OSError):
    """Raised before a stack is acquired, where the disk it is to be written to has not the room for it: nothing was
    acquired (``check_room_for_stack``)."""


def stack_bytes(slices: int, frame_bytes: int) -> int:
    """About the room a stack of ``slices`` frames of ``frame_bytes`` takes on disk, its OME description included."""
    return slices * (frame_bytes + METADATA_BYTES_PER_SLICE) + FINALIZE_MARGIN_BYTES


def outputs_bytes(frame_bytes: int, frame_pixels: int) -> int:
    """About the room one stack's outputs take: the fused image (a frame), the depth map (float32 per pixel: four
    times an 8-bit mono frame), the focus curve and the report."""
    return frame_bytes + 4 * frame_pixels + OUTPUT_MARGIN_BYTES


def check_room_for_stack(folder: Path, slices: int, frame_bytes: int, plan: str = "the plan", unit: str = "slices",
                         smaller: str = "a larger step or a shorter range", frame_pixels: int | None = None,
                         stacks: int = 1) -> None:
    """Before anything moves: a StackWontFitError of one line where the disk of ``folder`` has not the room for
    ``slices`` frames of ``frame_bytes`` (``frame_pixels`` each; unknown: as many as bytes) and the outputs of
    ``stacks`` stacks (``plan``: whose they are; ``smaller``: how to plan fewer). A plan that cannot fit would otherwise
    run for hours and meet a full disk. (Where the disk cannot say, nothing is refused.)"""
    pixels = frame_bytes if frame_pixels is None else frame_pixels
    needed = stack_bytes(slices, frame_bytes) + stacks * outputs_bytes(frame_bytes, pixels)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed <= free:
        return
    raise StackWontFitError(f"{plan} has {slices} {unit} of {size_said(frame_bytes)}: with the fused images, it needs "
                            f"about {size_said(needed)} and the disk of {folder} has {size_said(free)} free; nothing "
                            f"was acquired: plan fewer {unit} ({smaller}) or write to a disk with more room (--out)")


def _description_entry(path: Path) -> tuple[int, bytes]:
    """Where the first page's ImageDescription tag entry is in the file, and its bytes (12, or 20 in BigTIFF)."""
    with tifffile.TiffFile(path) as tiff:
        tag = tiff.pages.first.tags[270]
        length = tiff.tiff.tagsize
    with open(path, "rb") as handle:
        handle.seek(tag.offset)
        return tag.offset, handle.read(length)


class StackBuffer:
    """Append-only z-stack in ``path``. Also a ``fusion.slice_store.SliceSource``."""

    def __init__(self, path: str | Path, expected_bytes: int = 0, pixel_size_um: float | None = None,
                 channel: str | None = None, time_origin_s: float | None = None, planned_slices: int | None = None,
                 significant_bits: int | None = None):
        """``pixel_size_um`` and ``channel`` go into the OME-XML when given; ``time_origin_s`` is
        when the experiment began, on the clock of ``append``'s ``time_s`` (default: the first plane);
        ``planned_slices``, when known, goes into every page: after kill -9 it says how many are missing;
        ``significant_bits``, the camera's bits per sample (12 for 12-bit data in uint16), goes into OME's Pixels
        SignificantBits for integer pixels that hold them."""
        if pixel_size_um is not None and not pixel_size_um > 0:
            raise ValueError(f"{path}: pixel size must be positive, got {pixel_size_um} µm")
        self.path = Path(path)
        self.pixel_size_um = pixel_size_um
        # Per page, in centimetres: Fiji's own TIFF opener skips the OME-XML and reads only these (as µm up to 10 µm,
        # as cm above: an ImageJ description, which would say µm, cannot share the first page with OME's).
        self._resolution: dict[str, Any] = {} if pixel_size_um is None else {
            "resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um), "resolutionunit": "CENTIMETER"}
        self.channel = channel
        self.time_origin_s = time_origin_s
        self.planned_slices = planned_slices
        self.significant_bits = significant_bits
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 -- open for the buffer's life; finalize closes it
        except OSError as error:
            raise StackWriteError(f"cannot start {self.path}: {error.strerror or error}") from error
        try:
            self._writer = tifffile.TiffWriter(self._file, bigtiff=expected_bytes > CLASSIC_TIFF_LIMIT_BYTES)
        except OSError as error:  # (a full disk) the file was made, its header not written: no empty file is left
            self._file.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise StackWriteError(f"cannot start {self.path}: {error.strerror or error}") from error
        self.planes: list[dict] = []
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._lock = threading.Lock()
        self._reader: tifffile.TiffFile | None = None
        self._reader_slices = 0  # slices in the file when the reader opened it
        self.finalized = False

    @property
    def n_slices(self) -> int:
        return len(self.planes)

    def append(self, pixels: np.ndarray, z: float, time_s: float, exposure_ms: float | None, unit: str = "um",
               stage_xy_um: tuple[float, float] | None = None) -> int:
        """Write one slice; returns its index. Slices must all have the first one's shape and dtype.
        ``stage_xy_um``: where the XY stage was, (x, y) in µm (an MDA's position), for OME's PositionX/Y."""
        if self._shape is None:
            self._shape, self._dtype = pixels.shape, pixels.dtype
        elif pixels.shape != self._shape or pixels.dtype != self._dtype:
            raise ValueError(f"{self.path}: {slice_name(self.n_slices)} is {pixels.shape} {pixels.dtype}, "
                             f"the stack is {self._shape} {self._dtype}")
        index = self.n_slices
        plane = {"index": index, "z": float(z), "unit": unit, "time_s": round(float(time_s), 6),
                 "exposure_ms": None if exposure_ms is None else float(exposure_ms)}
        if self.pixel_size_um is not None:  # in every page too: after kill -9 there is no OME to say it
            plane["pixel_size_um"] = self.pixel_size_um
        if stage_xy_um is not None:
            plane["x_um"], plane["y_um"] = float(stage_xy_um[0]), float(stage_xy_um[1])
        if self.planned_slices is not None:
            plane["planned_slices"] = self.planned_slices
        colour = colour_by_shape(pixels.shape)  # (a camera's frame: nothing else says)
        with self._lock:
            size_before = os.fstat(self._file.fileno()).st_size
            try:
                self._writer.write(pixels, photometric="rgb" if colour else "minisblack", contiguous=False,
                                   description=json.dumps({SESSION_PLANE_KEY: plane}), metadata=None,
                                   **self._resolution)
            except OSError as error:  # a full disk, a removed drive: say where, and what is safe
                # The part of the slice that was written goes: its room is what session.json needs.
                with contextlib.suppress(OSError):
                    self._file.truncate(size_before)
                reason = error.strerror or f"it was not written whole ({error}): is the disk full?"
                before = "no slice before it" if index == 0 else "the slice before it is" if index == 1 \
                    else f"the {index} slices before it are"
                raise StackWriteError(f"cannot write {slice_name(index)} to {self.path}: {reason}; "
                                      f"{before} in the file") from error
            self.planes.append(plane)
        return index

    def read_slice(self, index: int) -> np.ndarray:
        """Slice ``index`` back from the file (the fusion thread catching up, or recomposing)."""
        with self._lock:
            # Reopen when the slice was written after the reader opened. (Asking the open reader
            # how many pages it has walks past the file size it saw, which tifffile logs as an error.)
            if self._reader is None or index >= self._reader_slices:
                if self._reader is not None:
                    self._reader.close()
                self._reader = tifffile.TiffFile(self.path)
                self._reader_slices = len(self.planes)
            return self._reader.pages[index].asarray()

    def finalize(self, profile: dict, unit: str) -> None:
        """Close the file and make it an OME-TIFF describing the slices written (none: left as is)."""
        if self.finalized:
            return
        self.finalized = True
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._writer.close()
            self._file.close()
        if not self.planes or self._shape is None:
            return
        xml = self._ome_xml(profile, unit)
        kept = "each slice keeps its z in its own page (run_session.py --refuse reads them)"
        if shutil.disk_usage(self.path.parent).free < len(xml) + FINALIZE_MARGIN_BYTES:
            raise StackWriteError(f"{self.path}: no room on the disk for its OME description; {kept}")
        # tifffile points the first page at the new description before writing it: where the write fails all
        # the same (a quota, a file-size limit), the pointer is put back and the file cut to its old end.
        entry_offset, entry = _description_entry(self.path)
        size = self.path.stat().st_size
        try:
            tifffile.tiffcomment(self.path, comment=xml, pageindex=0)
        except OSError as error:
            with open(self.path, "r+b") as handle:
                handle.seek(entry_offset)
                handle.write(entry)
                handle.truncate(size)
            raise StackWriteError(f"{self.path}: its OME description could not be written "
                                  f"({error.strerror or error}); {kept}") from error

    def _ome_xml(self, profile: dict, unit: str) -> bytes:
        """The OME-XML of the slices written: planes' z, time, exposure and stage x/y, pixel size, channel, the
        profile."""
        assert self._shape is not None and self._dtype is not None  # (finalize asks only once a slice is in)
        n = len(self.planes)
        colour = len(self._shape) == 3
        shape = (n, *self._shape)
        stored = (n, 1, 1, self._shape[0], self._shape[1], self._shape[2] if colour else 1)
        z_values = [p["z"] for p in self.planes]
        ome = tifffile.OmeXml()
        # Positions in another unit than µm (a lens's dpt) have no OME field: the description keeps them.
        description = {"profile": profile, "focus_unit": unit}
        if unit != "um":
            description["focus_positions"] = z_values
        metadata: dict[str, Any] = {"axes": "ZYXS" if colour else "ZYX", "Name": self.path.stem,
                    "Description": json.dumps(description), "Plane": {"DeltaT": self._delta_t_s()}}
        exposures_ms = [p["exposure_ms"] for p in self.planes]
        if None not in exposures_ms:  # a camera that does not say (a GenTL producer without it): none, not 0 ms
            metadata["Plane"].update(ExposureTime=exposures_ms, ExposureTimeUnit=["ms"] * n)
        if all("x_um" in p for p in self.planes):  # where the stage was: viewers place an MDA's positions apart
            metadata["Plane"].update(PositionX=[p["x_um"] for p in self.planes], PositionXUnit=["µm"] * n,
                                     PositionY=[p["y_um"] for p in self.planes], PositionYUnit=["µm"] * n)
        if self.pixel_size_um is not None:
            metadata.update(PhysicalSizeX=self.pixel_size_um, PhysicalSizeXUnit="µm", PhysicalSizeY=self.pixel_size_um,
                            PhysicalSizeYUnit="µm")
        if self.channel is not None:
            metadata["Channel"] = {"Name": self.channel}
        if unit == "um":  # OME's PositionZ is a length; lens powers stay in the description and pages
            metadata["Plane"].update(PositionZ=z_values, PositionZUnit=["µm"] * n)  # (OME's default unit: none)
            if n > 1:  # the step between planes neighbouring in z, not in time: [20, -4, 44, 4] is 8 um apart
                steps = np.diff(np.unique(np.asarray(z_values, np.float64)))
                metadata["PhysicalSizeZ"] = float(np.median(steps)) if steps.size else 1.0
        ome.addimage(self._dtype, shape, stored, **metadata)
        xml = ome.tostring()
        bits = self.significant_bits
        if self._dtype.kind in "ui" and bits is not None and 0 < bits <= 8 * self._dtype.itemsize:
            xml = xml.replace("<Pixels ", f'<Pixels SignificantBits="{int(bits)}" ', 1)  # (tifffile writes none)
        return xml.encode()

    def _delta_t_s(self) -> list[float]:
        origin = self.planes[0]["time_s"] if self.time_origin_s is None else self.time_origin_s
        return [round(p["time_s"] - origin, 6) for p in self.planes]
