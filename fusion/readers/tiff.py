"""Multi-page TIFF and OME-TIFF stacks (Micro-Manager's OME-TIFF datasets included)."""
from __future__ import annotations

import json
import math
import os
import struct
import warnings
import xml.etree.ElementTree as ElementTree
from typing import Any
from pathlib import Path

import numpy as np
import tifffile

from fusion import channel_look
from fusion.channel_look import ChannelLook
from fusion.errors import EmptyStackError, SliceMismatchError, StackLayoutError, UnreadableStackError
from fusion.output_names import SESSION_REPORT, STACK as SESSION_STACK
from fusion.outputs import COLOUR_SAMPLES_KEY, plausible_pixel_size_um
from fusion.readers.base import SavedStack, index_ranges

# Leading axes that can carry the focus sweep, by preference. tifffile names a plain
# multi-page file's axis I or Q; T is a time-lapse, taken only when nothing else varies.
STACK_AXES = "ZIQT"
CHANNEL_AXES = "CS"
OME_NAMESPACE_TAG = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"
MICROMANAGER_TAG = 51123
MICROMETRES_PER_INCH = 25400.0
# Length units in micrometres: every length of OME's UnitsLength (ome.xsd, 2016-06), then the other spellings that
# ImageJ's descriptions and writers use. OME's two others, "pixel" and "reference frame", are no length on the
# specimen: a size in them (or in a unit not here) is no size in µm, and ``_um_per`` says so.
LENGTH_UNITS_IN_UM = {
    "Ym": 1e30, "Zm": 1e27, "Em": 1e24, "Pm": 1e21, "Tm": 1e18, "Gm": 1e15, "Mm": 1e12, "km": 1e9, "hm": 1e8,
    "dam": 1e7, "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "nm": 1e-3, "pm": 1e-6, "fm": 1e-9,
    "am": 1e-12, "zm": 1e-15, "ym": 1e-18, "Å": 1e-4,
    "thou": MICROMETRES_PER_INCH / 1000, "li": MICROMETRES_PER_INCH / 12, "in": MICROMETRES_PER_INCH,
    "ft": MICROMETRES_PER_INCH * 12, "yd": MICROMETRES_PER_INCH * 36, "mi": MICROMETRES_PER_INCH * 63360,
    "pt": MICROMETRES_PER_INCH / 72,
    "ua": 1.495978707e17, "ly": 9.4607304725808e21, "pc": 3.0856775814913673e22,
    # (µ as the Greek mu, Å as the Angstrom sign; ImageJ's words, and its \u escape of µ)
    "\u03bcm": 1.0, "\u212b": 1e-4, "um": 1.0, "\\u00B5m": 1.0, "micron": 1.0, "microns": 1.0, "nanometer": 1e-3,
    "millimeter": 1e3, "meter": 1e6, "inch": MICROMETRES_PER_INCH,
}
# Resolutions (dots per inch) that writers put in the tags of any picture, whatever it shows: a screen's 72 and 96, a
# printer's or scanner's 150, 300, 600, a camera's 180, 240, 350 (1: tags filled in with nothing to say). They are no
# pixel size on a specimen (300 dpi would be 84.7 µm), so a TIFF whose tags say one of them in inches has none.
DOCUMENT_DPI = (1, 72, 75, 96, 100, 120, 144, 150, 180, 200, 240, 300, 350, 360, 400, 600, 720, 1200, 2400, 4800,
                9600)
# Pixels whose width and height differ by less than this (a calibration's rounding) are taken as square.
SQUARE_PIXEL_TOLERANCE = 1e-3
SESSION_PLANE_KEY = "ums_fusion_plane"  # written by fusion.stack_buffer on every page


# A live session that ended before its first slice (a device that failed at once) leaves no slice in its stack.
NO_COMPLETE_SLICE_IN_SESSION_STACK = ("the stack holds no whole slice: its session was stopped (killed?) while "
                                      f"writing its first; its {SESSION_REPORT}, if written, says more")
# How a warning ends where the stack's z cannot be read: a viewer (napari_ums_fusion.layers) says it in its own words.
DEPTH_IN_SLICE_INDEX = "the depth map is in slice index"
NO_SLICES_IN_SESSION_STACK = ("the stack holds no slices: its session ended before its first slice (its "
                              f"{SESSION_REPORT} says why)")


def is_session_stack(path: Path) -> bool:
    """Whether ``path`` is named as a live session's stack (``stack.ome.tif``, ``<name>.stack.ome.tif``)."""
    return path.name == SESSION_STACK or path.name.endswith(f".{SESSION_STACK}")


class TiffStack(SavedStack):
    """One z-stack in a TIFF: axes ZYX, ZYXC/ZYXS, ZCYX (and their T/I/Q equivalents)."""

    def __init__(self, path: Path, name: str | None = None):
        super().__init__(path, name or stack_name(path))
        self._reopened: list[tifffile.FileHandle] = []  # the dataset's other files, opened to read their slices
        try:
            self._tiff = tifffile.TiffFile(self.path)
            # Thumbnails and previews (reduced-resolution pages: a camera's, an LSM's) are no part of the stack.
            images = [s for s in self._tiff.series if not s.keyframe.is_reduced] or list(self._tiff.series)
        except Exception as error:
            if is_session_stack(path):  # (its pages are written in order: only its first can be broken so)
                raise EmptyStackError(f"{NO_COMPLETE_SLICE_IN_SESSION_STACK} ({type(error).__name__}: {error})",
                                      path) from error
            raise UnreadableStackError(f"not a readable TIFF ({type(error).__name__}: {error})", path) from error
        if not images or not images[0].pages:
            self.close()
            said = NO_SLICES_IN_SESSION_STACK if is_session_stack(self.path) else "the TIFF holds no image"
            raise EmptyStackError(said, path)
        series = images[0] if len(images) == 1 else self._one_series(images)
        self._series = series
        self._appended_pages = series is not images[0]  # pages written one at a time: the last may be cut short
        self._file_size = os.path.getsize(self.path)
        try:
            self._layout = _StackLayout(series.axes, series.shape, series.pages[0])
        except StackLayoutError as error:
            self.close()
            raise StackLayoutError(error.reason, path) from None
        self._session_planes = self._read_session_planes()
        written_a_page_at_a_time = self._session_planes is not None or self._appended_pages or is_session_stack(path)
        cut_short = written_a_page_at_a_time and self._drop_incomplete_last_slice()  # (and maybe killed)
        if self._layout.n_slices == 0:
            self.close()
            raise EmptyStackError(NO_COMPLETE_SLICE_IN_SESSION_STACK if cut_short and is_session_stack(path) else
                                  "the file ends inside its first slice (a cut copy?): no slice is whole"
                                  if cut_short else "the TIFF has zero slices", path)
        if self._layout.n_slices == 1 and series.axes.startswith("S"):
            # tifffile (before 2025) and some writers store 3 or 4 mono planes as one planar RGB(A) image.
            warnings.warn(f"{path}: read as one colour image of {series.shape[0]} planes (planar RGB), not a "
                          f"stack; if its planes are {series.shape[0]} slices, save them with "
                          "photometric='minisblack' (tifffile) or as a stack from Fiji", stacklevel=2)
        self._z_um = self._read_z_positions()

    def _one_series(self, all_series: list[tifffile.TiffPageSeries]) -> tifffile.TiffPageSeries:
        """The series to fuse, of a TIFF that tifffile reads as several:
        - pages of one size and type, each its own series (written one at a time, ``tifffile.imwrite(...,
          append=True)``, as acquisition scripts often do): one stack of all of them;
        - a page unlike the others (size, pixel type, samples): an error naming it, as a folder's odd slice is (tifffile
          would set it apart as a series of its own, and the slices after it would shift in the depth map);
        - several stacks (an OME-TIFF's positions, stacks appended one after another, of any size): the first, with a
          warning.
        """
        first = all_series[0]
        odd = next((s for s in all_series[1:] if _frame_of(s) != _frame_of(first)), None)
        if odd is not None and len(odd.pages) == 1 and not self._tiff.is_ome:
            self.close()
            raise SliceMismatchError(
                f"page {_first_page_index(odd)} is {_frame_text(odd)} but page {_first_page_index(first)} is "
                f"{_frame_text(first)}: every page of a stack must have the same size and pixel type", self.path)
        if odd is None and not self._tiff.is_ome and all(len(s.pages) == 1 for s in all_series):
            pages = [s.pages[0] for s in all_series]
            return tifffile.TiffPageSeries(pages, (len(pages),) + tuple(first.shape), first.dtype, "I" + first.axes,
                                           parent=self._tiff, kind="generic")
        warnings.warn(f"{self.path}: holds {len(all_series)} image series (positions or time points); only the "
                      f"first ({len(first.pages)} page{'s' if len(first.pages) != 1 else ''} of {_frame_text(first)}) "
                      "is fused: save each as its own file to fuse them all", stacklevel=3)
        return first

    @property
    def n_slices(self) -> int:
        return self._layout.n_slices

    @property
    def z_positions_um(self) -> list[float] | None:
        return self._z_um

    def focus_positions(self) -> tuple[list[float] | None, str]:
        """A live session's lens stack keeps each slice's focal power (dpt) in its OME description
        (finalized) or its pages (cut short): that, else µm."""
        if self._tiff.is_ome:
            described = _ome_session_focus(self._tiff.ome_metadata, self.n_slices)
            if described is not None:
                return described
        recorded = self._session_plane_positions()
        if recorded is not None and recorded[1] != "um":
            return recorded
        return self.z_positions_um, "um"

    def stage_xy_um(self) -> tuple[float, float] | None:
        """Where the XY stage was for the first slice, (x, y) µm: its OME plane's PositionX/Y (an MDA's stacks),
        else its page's own record (a stack never finalized); None where neither says."""
        found = _ome_pixels(self._tiff.ome_metadata) if self._tiff.is_ome else None
        plane = found[0].find(f"{found[1]}Plane") if found is not None else None
        if plane is not None and plane.get("PositionX") is not None and plane.get("PositionY") is not None:
            try:
                x_um, y_um = _ome_length_um(plane, "PositionX"), _ome_length_um(plane, "PositionY")
            except ValueError:  # (a position in no length places nothing)
                return None
            return (x_um, y_um) if x_um is not None and y_um is not None else None
        first = (self._session_planes or [None])[0]
        if isinstance(first, dict) and isinstance(first.get("x_um"), (int, float)) \
                and isinstance(first.get("y_um"), (int, float)):
            return float(first["x_um"]), float(first["y_um"])
        return None

    def pixel_size_um(self) -> float | None:
        """OME's PhysicalSizeX (and Y), else the first page's resolution tags (``pixel_sizes_um_of``). Pixels that
        are not square have none: the outputs record one size for both sides, and a warning gives the two."""
        found = _ome_pixels(self._tiff.ome_metadata) if self._tiff.is_ome else None
        if found is not None and found[0].get("PhysicalSizeX") is not None:
            try:
                x_um = _ome_length_um(found[0], "PhysicalSizeX")
                y_um = _ome_length_um(found[0], "PhysicalSizeY")
            except ValueError as unreadable:  # a size that is no number, or in no length, does not stop the fusion
                warnings.warn(f"{self.path}: {unreadable}; the fused image has no pixel size from it", stacklevel=2)
            else:
                return self._square_pixel_um(x_um, y_um, "OME PhysicalSizeX")
        recorded_sizes = [p["pixel_size_um"] for p in self._session_planes or [] if p and p.get("pixel_size_um")]
        if recorded_sizes:  # a live session's stack before its OME (kill -9, a full disk): its pages say
            return plausible_pixel_size_um(float(recorded_sizes[0]), str(self.path), "pixel size its pages record")
        recorded = pixel_sizes_um_of(self._tiff.pages.first)
        if recorded is None:
            return None
        return self._square_pixel_um(*recorded, "resolution tags' pixel size")

    def _square_pixel_um(self, x_um: float | None, y_um: float | None, said: str) -> float | None:
        """The pixel size ``x_um`` (``plausible_pixel_size_um``) where ``y_um`` is the same or not given; None, with a
        warning giving both, where they differ."""
        if x_um is not None and y_um is not None and x_um > 0 and y_um > 0 and not _square(x_um, y_um):
            warnings.warn(f"{self.path}: its pixels are {x_um:g} x {y_um:g} µm (x by y), not square; the fused image "
                          "and depth map hold one pixel size for both sides, so they are written without one (give "
                          "them each side's size in Fiji: Image > Properties)", stacklevel=3)
            return None
        return plausible_pixel_size_um(x_um, str(self.path), said)

    def session_slices(self) -> tuple[bool, int | None] | None:
        """For a live session's stack: (whether its session finished it: wrote its OME description, and how many
        slices the session planned, where its pages say: older stacks' do not); None for other stacks."""
        if self._session_planes is None:
            return None
        planned = [p["planned_slices"] for p in self._session_planes if p and isinstance(p.get("planned_slices"), int)]
        return self._tiff.is_ome, (max(planned) if planned else None)

    @property
    def channels_are_colour(self) -> bool:
        """Channels kept in pages of their own (ImageJ's channels, OME's SizeC) are separate images, unless the
        description says they are colour (``described_as_colour``: float colour); the samples of one page are colour
        where ``page_has_colour_samples``."""
        if self._layout.n_channels > 1:
            return described_as_colour(self._tiff.pages.first, self._layout.n_channels)
        return page_has_colour_samples(self._series.keyframe)

    def channel_look(self) -> ChannelLook | None:
        """Separate channels' names, colour tables and display ranges, from the ImageJ hyperstack's metadata or
        OME's Channel elements."""
        if self._layout.n_channels == 1 and self._series.keyframe.photometric == tifffile.PHOTOMETRIC.PALETTE:
            return self._palette_look()
        if self._layout.n_channels < 2 or self.channels_are_colour:
            return None
        if self._tiff.is_imagej:
            return channel_look.from_imagej(self._tiff.imagej_metadata or {}, self._layout.pages_of(0))
        found = _ome_pixels(self._tiff.ome_metadata) if self._tiff.is_ome else None
        if found is None:
            return None
        pixels, namespace = found
        return channel_look.from_ome([dict(c.attrib) for c in pixels.findall(f"{namespace}Channel")],
                                     self._layout.n_channels)

    def _palette_look(self) -> ChannelLook | None:
        """A palette image's colour table (``channel_look.from_palette``): its indices are fused as the light they
        stand for, which holds where the colours grow brighter with the index; a warning where they do not."""
        page = self._series.keyframe
        look = channel_look.from_palette(page.colormap, page.bitspersample)
        if look is not None and look.luts is not None and not channel_look.ordered_by_brightness(look.luts[0]):
            warnings.warn(f"{self.path}: its colour table does not grow brighter with the index (a palette picture, "
                          "not a colour table over intensities): the slices are fused by their indices, which need not "
                          "follow their light; save the stack as RGB to fuse its colours", stacklevel=3)
        return look

    def _session_plane_positions(self) -> tuple[list[float], str] | None:
        """(z, unit) from a live session's per-page records, when every slice has one, all in one unit."""
        if self._session_planes is None:
            return None
        planes = [p for p in self._session_planes[: self.n_slices] if isinstance(p, dict)]
        if len(planes) < self.n_slices:
            return None
        units = {str(p.get("unit", "um")) for p in planes}
        z = [p.get("z") for p in planes]
        numbers = [float(v) for v in z if isinstance(v, (int, float)) and not isinstance(v, bool)]  # (JSON: not text,
        if len(numbers) < len(z):                                                                  # null or a bool)
            warnings.warn(f"{self.path}: the z recorded in its pages is not a number on every page; "
                          f"{DEPTH_IN_SLICE_INDEX}", stacklevel=3)
            return None
        return (numbers, units.pop()) if len(units) == 1 else None

    def declared_size(self, index: int) -> tuple[int, int, int, np.dtype] | None:
        page = self._series.pages[self._layout.pages_of(index)[0]]
        if page is None:
            return None
        keyframe: Any = getattr(page, "keyframe", None) or page  # a TiffFrame reads its size from its keyframe
        samples = keyframe.samplesperpixel * self._layout.n_channels
        return keyframe.imagelength, keyframe.imagewidth, samples, keyframe.dtype

    def _read(self, index: int) -> np.ndarray:
        planes = [self._read_page(page_index) for page_index in self._layout.pages_of(index)]
        if len(planes) == 1:
            return planes[0]
        return np.stack(planes, axis=-1)

    def _read_page(self, page_index: int) -> np.ndarray:
        try:
            page = self._series.pages[page_index]
        except IndexError as error:  # tifffile lost the chain of page headers where the file ends
            raise UnreadableStackError(
                f"truncated or corrupt: page {page_index} cannot be read (the file ends before its header, or "
                f"the header is damaged)", self.path) from error
        except tifffile.TiffFileError as error:
            raise UnreadableStackError(
                f"truncated or corrupt: page {page_index} cannot be read ({error})", self.path) from error
        if page is None:
            gone = self._missing_dataset_files()
            if gone:  # a Micro-Manager dataset split over files (one each 4 GB), not all of them copied
                raise UnreadableStackError(
                    f"page {page_index} is missing: it is in another file of the dataset, and {', '.join(gone)}, "
                    "which its OME metadata names, is not there: copy the whole dataset folder", self.path)
            raise UnreadableStackError(
                f"page {page_index} is missing: the file is truncated or its metadata is wrong", self.path)
        # tifffile fills a truncated page with zeros rather than failing: check the bytes exist.
        if not page_is_whole(page, self._file_size):
            raise UnreadableStackError(
                f"truncated: page {page_index} needs bytes up to {page_data_end(page)} but the file has "
                f"{self._file_size}", self.path)
        handle = page.parent.filehandle
        if handle.closed:  # another file of the dataset: tifffile closed it once it had read its headers
            handle.open()  # (kept open until this stack closes; asarray reopened it each time, with a warning)
            self._reopened.append(handle)
        pixels = page.asarray()
        if pixels.ndim == 3 and self._layout.page_samples_first:
            pixels = np.moveaxis(pixels, 0, -1)  # planar RGB page (S, Y, X)
        return pixels

    def _read_session_planes(self) -> list[dict | None] | None:
        """Per-page z/time/exposure of a stack written by a live session, or None for other files."""
        planes = []
        for index in range(self._layout.n_slices):
            try:
                # As a full page: from 8 pages on, a series hands back frames without their description.
                page: Any = self._tiff.pages.get(self._layout.pages_of(index)[0], aspage=True)
            except (IndexError, tifffile.TiffFileError):
                break  # a truncated file: reading the slices will say so
            try:
                plane = json.loads(page.description).get(SESSION_PLANE_KEY) if page is not None else None
            except (ValueError, AttributeError, TypeError):
                plane = None  # page 0 of a finalized stack holds OME-XML instead
            planes.append(plane)
            if index == 1 and not any(planes):
                return None  # not a session's stack (its first or, once finalized, second page says so)
        if not any(planes):
            return None
        missing = [i for i, plane in enumerate(planes) if plane is None and not (i == 0 and self._tiff.is_ome)]
        if missing and not self._tiff.is_ome:
            warnings.warn(f"{self.path}: the z of slices {index_ranges(missing)} (counting from 0) could not be read "
                          "from their page metadata (missing, or cut off with the file); the depth map is in slice "
                          "index", stacklevel=3)
        return planes

    def _drop_incomplete_last_slice(self) -> bool:
        """A session killed mid-write leaves its last page short: fuse the complete ones, and say so. Whether it
        was short."""
        try:
            last: Any = self._series.pages[self._layout.n_slices - 1]
        except (IndexError, tifffile.TiffFileError):
            return False  # an IFD is broken, not only the last slice's data: reading will say so
        if page_is_whole(last, self._file_size):
            return False
        self._layout.n_slices -= 1
        if self._layout.n_slices:  # (none whole: the caller says so, as an error)
            warnings.warn(f"{self.path}: the file ends inside the last slice (a session interrupted while writing "
                          f"it, or a cut copy); using the {self._layout.n_slices} complete slices", stacklevel=3)
        return True

    def _read_z_positions(self) -> list[float] | None:
        recorded = None if self._tiff.is_ome else self._session_plane_positions()
        if recorded is not None and recorded[1] == "um":
            return recorded[0]
        if self._layout.stack_axis not in ("Z", None):
            return None
        if self._tiff.is_ome:
            z_um = _ome_z_positions(self._tiff.ome_metadata, self.n_slices, self.path)
            if z_um is not None:
                return z_um
        if self._tiff.is_micromanager:
            z_um = self._micromanager_z_positions()
            if z_um is not None:
                return z_um
        if self._tiff.is_imagej and self._layout.stack_axis == "Z":
            metadata = self._tiff.imagej_metadata or {}
            spacing = metadata.get("spacing")
            if spacing:
                # ImageJ's spacing is in its z unit, else its unit (none given: taken as µm, as microscopes' stacks).
                unit = str(metadata.get("zunit") or metadata.get("unit") or "um")
                if unit not in LENGTH_UNITS_IN_UM:
                    warnings.warn(f"{self.path}: ImageJ's slice spacing is in {unit!r}, not a length unit; "
                                  f"{DEPTH_IN_SLICE_INDEX}", stacklevel=3)
                    return None
                return [in_um(index * float(spacing), LENGTH_UNITS_IN_UM[unit]) for index in range(self.n_slices)]
        return None

    def _micromanager_z_positions(self) -> list[float] | None:
        z_um = []
        for index in range(self.n_slices):
            page: Any = self._series.pages[self._layout.pages_of(index)[0]]
            tag = page.tags.get(MICROMANAGER_TAG) if page is not None else None
            value = tag.value if tag is not None else None
            if isinstance(value, (str, bytes)):
                try:
                    value = json.loads(value)
                except ValueError:
                    return None
            if not isinstance(value, dict):
                return None
            z = value.get("ZPositionUm", value.get("Z-um"))
            if z is None:
                return None
            z_um.append(float(z))
        return z_um

    def _missing_dataset_files(self) -> list[str]:
        """The files that the OME metadata names (``UUID FileName``) and that are not beside this one."""
        parsed = _ome_root(self._tiff.ome_metadata) if self._tiff.is_ome else None
        if parsed is None:
            return []
        root, namespace = parsed
        named = dict.fromkeys(uuid.get("FileName") for uuid in root.iter(f"{namespace}UUID"))
        return [name for name in named if name and not (self.path.parent / name).exists()]

    def close(self) -> None:
        for handle in getattr(self, "_reopened", []):
            handle.close()
        tiff = getattr(self, "_tiff", None)
        if tiff is not None:
            tiff.close()


def page_data_end(page) -> int:
    """Where a page's (or frame's) pixel data end in its file (0: it names none); read from its header alone."""
    return max((offset + count for offset, count in zip(page.dataoffsets, page.databytecounts)), default=0)


def page_is_whole(page, file_size: int) -> bool:
    """Whether a page's pixel data lie within a file of ``file_size`` bytes: tifffile fills the part of a page cut
    off with the file (a session killed while writing it, a cut copy) with zeros, or fails reading it."""
    return page_data_end(page) <= file_size


def whole_pages(series: tifffile.TiffPageSeries) -> int:
    """How many of a series' pages, from its first, are whole in their files (``page_is_whole``); a page the file
    lacks (its header cut off or damaged, or in a file of the dataset not there) ends them. Headers only: no pixels
    are read."""
    for count in range(len(series.pages)):
        try:
            page = series.pages[count]
        except (IndexError, tifffile.TiffFileError):
            return count
        if page is None or not page_is_whole(page, page.parent.filehandle.size):
            return count
    return len(series.pages)


def page_headers_cut_off(tiff: tifffile.TiffFile) -> bool:
    """Whether the file's chain of page headers points past its end: pages after the last one tifffile found were
    cut off with the file (a cut copy, a full disk), and a series of them shows only those before. Headers only."""
    try:
        last: Any = tiff.pages[len(tiff.pages) - 1]
        layout, handle = tiff.tiff, tiff.filehandle
        handle.seek(last.offset)
        n_tags = struct.unpack(layout.tagnoformat, handle.read(layout.tagnosize))[0]
        handle.seek(last.offset + layout.tagnosize + n_tags * layout.tagsize)
        pointer = handle.read(layout.offsetsize)
        return len(pointer) < layout.offsetsize or struct.unpack(layout.offsetformat, pointer)[0] >= handle.size
    except Exception:  # (a header tifffile could not read: reading the pages says so)
        return False


def _frame_of(series: tifffile.TiffPageSeries) -> tuple:
    """The shape and pixel type of a series' pages."""
    keyframe = series.keyframe
    return tuple(keyframe.shape), keyframe.dtype


def _first_page_index(series: tifffile.TiffPageSeries) -> int:
    page = series.pages[0]
    return int(getattr(page, "index", 0))


def _frame_text(series: tifffile.TiffPageSeries) -> str:
    shape, dtype = _frame_of(series)
    return f"{'x'.join(map(str, shape))} {dtype}"


# A page that holds one frame: its rows and columns, with its colour or channel samples after them or (planar) before.
FRAME_PAGE_AXES = ("YX", "YXS", "SYX")


class _StackLayout:
    """Which TIFF pages make up slice k, from the series' axes. Numpy order throughout."""

    def __init__(self, axes: str, shape: tuple[int, ...], first_page):
        page_axes = first_page.axes if first_page is not None else "YX"
        frame_shape = tuple(shape[len(shape) - len(page_axes):])
        if first_page is not None and tuple(first_page.shape) != frame_shape:
            # (tifffile keeps frames 1 px wide several to a page: the series' frames are not its pages)
            raise StackLayoutError(
                f"axes {axes} (shape {'x'.join(map(str, shape))}) are not one frame per page (its pages are "
                f"{page_axes} {'x'.join(map(str, first_page.shape if first_page is not None else ()))}): frames "
                "this thin cannot be fused; save a stack of frames at least 2 px on each side, one frame per page")
        if first_page is not None:
            check_one_frame_per_page(page_axes, first_page.shape)
        self.page_samples_first = page_axes.startswith("S")
        leading_axes = axes[: len(axes) - len(page_axes)]
        self.leading_shape = tuple(shape[: len(leading_axes)])
        varying = [axis for axis, size in zip(leading_axes, self.leading_shape) if size > 1]
        channels = [axis for axis in varying if axis in CHANNEL_AXES]
        sweeps = [axis for axis in varying if axis not in CHANNEL_AXES]
        if len(channels) > 1 or len(sweeps) > 1:
            raise StackLayoutError(
                f"axes {axes} (shape {shape}) vary along {', '.join(varying)}; a focus stack varies "
                "along one of Z/T/I/Q and optionally C: export one position and time point")
        if sweeps and sweeps[0] not in STACK_AXES:
            raise StackLayoutError(f"axes {axes}: the stack would run along {sweeps[0]}, "
                                   f"expected one of {', '.join(STACK_AXES)}")
        self.stack_axis = sweeps[0] if sweeps else None
        self._stack_pos = leading_axes.index(sweeps[0]) if sweeps else None
        self._channel_pos = leading_axes.index(channels[0]) if channels else None
        self.n_slices = self.leading_shape[self._stack_pos] if self._stack_pos is not None else (1 if shape else 0)
        self.n_channels = self.leading_shape[self._channel_pos] if self._channel_pos is not None else 1

    def pages_of(self, index: int) -> list[int]:
        """Page indices (one per channel) that hold slice ``index``."""
        pages = []
        for channel in range(self.n_channels):
            position = [0] * len(self.leading_shape)
            if self._stack_pos is not None:
                position[self._stack_pos] = index
            if self._channel_pos is not None:
                position[self._channel_pos] = channel
            pages.append(int(np.ravel_multi_index(position, self.leading_shape)) if position else 0)
        return pages


def pixel_size_um_of(page: tifffile.TiffPage) -> float | None:
    """The pixel size (µm) a page's resolution tags record (``pixel_sizes_um_of``); None where they record none, or
    pixels that are not square."""
    sizes = pixel_sizes_um_of(page)
    if sizes is None:
        return None
    x_um, y_um = sizes
    return x_um if y_um is None or _square(x_um, y_um) else None


def _square(x_um: float, y_um: float) -> bool:
    """Whether pixels of width ``x_um`` and height ``y_um`` are square, but for a calibration's rounding."""
    return math.isclose(x_um, y_um, rel_tol=SQUARE_PIXEL_TOLERANCE)


def pixel_sizes_um_of(page: tifffile.TiffPage) -> tuple[float, float | None] | None:
    """The pixel width and height (µm; the height None where there is no YResolution) that a page's resolution tags
    record: in centimetres (most writers, and ``fusion.outputs.write_image_tiff``), in inches (TIFF's default unit:
    photo and document software, which write the same few ``DOCUMENT_DPI`` into any picture: those are no size), else
    in the unit its ImageJ description names (Fiji's files, and ``write_image_tiff``'s before, with ResolutionUnit
    NONE); None if none of them."""
    x_resolution, y_resolution = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x_resolution is None or not x_resolution.value[0]:
        return None
    unit_tag = page.tags.get("ResolutionUnit")
    described_unit = _imagej_properties(page).get("unit", "")
    if unit_tag is not None and unit_tag.value == tifffile.RESUNIT.CENTIMETER:
        um_per_unit: float | None = LENGTH_UNITS_IN_UM["cm"]
    elif unit_tag is not None and unit_tag.value == tifffile.RESUNIT.INCH or \
            unit_tag is None and not described_unit:  # (no tag, and no ImageJ unit: TIFF's default, inches)
        um_per_unit = MICROMETRES_PER_INCH
    else:
        um_per_unit = LENGTH_UNITS_IN_UM.get(described_unit)
    if um_per_unit is None:
        return None
    x_per_unit = x_resolution.value[0] / x_resolution.value[1] if x_resolution.value[1] else 0.0
    y_per_unit = y_resolution.value[0] / y_resolution.value[1] \
        if y_resolution is not None and y_resolution.value[0] and y_resolution.value[1] else None
    if not x_per_unit > 0:
        return None
    if um_per_unit == MICROMETRES_PER_INCH and any(math.isclose(x_per_unit, dpi, rel_tol=1e-6) for dpi in DOCUMENT_DPI):
        return None
    return in_um(1 / x_per_unit, um_per_unit), None if y_per_unit is None else in_um(1 / y_per_unit, um_per_unit)


def read_image_tiff(path: Path) -> np.ndarray:
    """An image that ``fusion.outputs.write_image_tiff`` wrote, in numpy order: (H, W) or (H, W, C), its channels
    last whether they are colour samples or pages of their own (an ImageJ hyperstack's CYX)."""
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        image = series.asarray()
        return np.moveaxis(image, 0, -1) if series.axes == "CYX" else image


def fused_tiff_is_colour(path: Path) -> bool:
    """Whether an image that ``write_image_tiff`` wrote is one colour picture (``page_has_colour_samples`` of its
    first page, or float colour in pages of their own that its description calls colour: ``described_as_colour``):
    False for a grey image, separate channels in pages of their own (CYX) and channels kept as the samples of one
    page (YXC, as an earlier version wrote 2 channels)."""
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        return page_has_colour_samples(tiff.pages.first) or described_as_colour(tiff.pages.first,
                                                                                series.sizes.get("channel", 1))


def depth_unit_of(page: tifffile.TiffPage) -> str:
    """The unit of a depth map's values, as ``fusion.outputs.write_depth_tiff`` records it (ImageJ description; a
    JSON description before); "slice index" where it says none."""
    unit = _imagej_properties(page).get("depth_unit")
    if unit is None:
        try:
            unit = json.loads(page.description).get("depth_unit")
        except (ValueError, AttributeError):
            unit = None
    return str(unit or "slice index")


def check_one_frame_per_page(page_axes: str, page_shape: tuple[int, ...]) -> None:
    """Refuse pages that each hold more than one frame (a volume per page: TIFF's ImageDepth, axes ZYX): taken for
    frames, a page of 8 planes of 64 x 64 was fused as a frame 8 pixels high with 64 channels."""
    if page_axes not in FRAME_PAGE_AXES:
        raise StackLayoutError(f"each page holds {page_axes} {'x'.join(map(str, page_shape))}, not one frame (a "
                               "volume per page); save the stack one 2-D frame per page (YX, with its colour samples)")


def page_has_colour_samples(page: tifffile.TiffPage) -> bool:
    """Whether the 3 or 4 samples of a page's pixels are one colour picture's: the page says RGB (YCbCr decodes
    to RGB), or it says nothing (no PhotometricInterpretation) and they are 8-bit, as Fiji reads them. A page that
    says otherwise (minisblack: tifffile's YXC channels), 16-bit samples it does not call RGB, and any other count
    of samples hold separate channels. The one rule by page (``fusion.outputs.colour_by_shape``: by shape)."""
    if page.samplesperpixel not in (3, 4):
        return False
    if page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR):
        return True
    # (tifffile reads a missing tag as 0, MINISWHITE, so ask whether the page has the tag.)
    return "PhotometricInterpretation" not in page.tags and page.dtype == np.uint8


def described_as_colour(page: tifffile.TiffPage, n_channels: int) -> bool:
    """Whether the ImageJ description of a file's first page says that its ``n_channels`` channels, in pages of their
    own (a composite), are one colour picture's samples, as ``fusion.outputs.write_image_tiff`` writes float colour
    (``COLOUR_SAMPLES_KEY``). Separate channels (fluorescence) say nothing."""
    return n_channels in (3, 4) and _imagej_properties(page).get(COLOUR_SAMPLES_KEY) == "RGBA"[:n_channels]


def _imagej_properties(page: tifffile.TiffPage) -> dict[str, str]:
    """The key=value lines of a page's ImageJ description ({} where it has none)."""
    description = page.imagej_description or ""
    return dict(line.split("=", 1) for line in description.splitlines() if "=" in line)


def _ome_root(ome_xml: str | None) -> tuple[ElementTree.Element, str] | None:
    """The OME-XML's root element and its namespace prefix ("{...}" or ""), or None if unreadable."""
    if not ome_xml:
        return None
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None
    return root, (root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else "")


def _ome_session_focus(ome_xml: str | None, n_slices: int) -> tuple[list[float], str] | None:
    """(positions, unit) from a live session's OME image description, where they are not in µm."""
    parsed = _ome_root(ome_xml)
    if parsed is None:
        return None
    root, namespace = parsed
    text = root.findtext(f"{namespace}Image/{namespace}Description")
    try:
        described = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(described, dict) or described.get("focus_unit", "um") == "um":
        return None
    positions = described.get("focus_positions")
    if not isinstance(positions, list) or len(positions) < n_slices:
        return None
    return [float(z) for z in positions[:n_slices]], str(described["focus_unit"])


def _ome_pixels(ome_xml: str | None) -> tuple[ElementTree.Element, str] | None:
    """The first image's Pixels element and the namespace prefix, or None."""
    parsed = _ome_root(ome_xml)
    if parsed is None:
        return None
    root, namespace = parsed
    pixels = root.find(f"{namespace}Image/{namespace}Pixels")
    return None if pixels is None else (pixels, namespace)


def _ome_z_positions(ome_xml: str | None, n_slices: int, where: Path) -> list[float] | None:
    """PositionZ of each TheZ plane of the first image (first channel and time point), else PhysicalSizeZ steps.
    A position or step in no length (``_ome_length_um``) places no slice: a warning names ``where`` (the file)."""
    found = _ome_pixels(ome_xml)
    if found is None:
        return None
    pixels, namespace = found
    by_z: dict[int, float] = {}
    for plane in pixels.findall(f"{namespace}Plane"):
        if int(plane.get("TheC", 0)) or int(plane.get("TheT", 0)) or plane.get("PositionZ") is None:
            continue
        try:
            z_um = _ome_length_um(plane, "PositionZ")
        except ValueError as unreadable:
            warnings.warn(f"{where}: {unreadable}; the depth map takes no z from it", stacklevel=4)
            by_z = {}
            break
        if z_um is not None:  # (it is: PositionZ is there)
            by_z.setdefault(int(plane.get("TheZ", 0)), z_um)
    if len(by_z) == n_slices and sorted(by_z) == list(range(n_slices)):
        return [by_z[index] for index in range(n_slices)]
    if pixels.get("PhysicalSizeZ") is not None and int(pixels.get("SizeZ", 1)) == n_slices:
        try:
            step_um = _ome_length_um(pixels, "PhysicalSizeZ")
        except ValueError as unreadable:
            warnings.warn(f"{where}: {unreadable}; the depth map takes no z from it", stacklevel=4)
            return None
        if step_um is not None:
            return [index * step_um + 0.0 for index in range(n_slices)]  # (+ 0.0: a negative step's first: not -0.0)
    return None


def _ome_length_um(element: ElementTree.Element, key: str) -> float | None:
    """An OME element's length ``key`` (PhysicalSizeX, PositionZ) in µm, by its unit (``key`` + "Unit": ``_um_per``);
    None where the element has no ``key``. ValueError, saying which and why, where it is no number or its unit is no
    length (pixel, reference frame, a unit OME does not know)."""
    value = element.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"the OME {key} {value!r} is not a number") from None
    unit = element.get(f"{key}Unit")
    um_per_unit = _um_per(unit)
    if um_per_unit is None:
        raise ValueError(f"the OME {key} {value} is in {unit!r} ({key}Unit), which is not a unit of length")
    return in_um(number, um_per_unit)


def in_um(number: float, um_per_unit: float) -> float:
    """``number`` of a unit of ``um_per_unit`` µm, in µm to 12 significant digits: 1.001 mm is 1001 µm, not the
    1000.9999999999999 that the product gives (the reports and the depth map's positions say it)."""
    return to_12_digits(number * um_per_unit)


def to_12_digits(number: float) -> float:
    """``number`` to 12 significant digits, as positions and sizes computed from others are kept: a step of
    (1.2 - 0.9) / 1 dpt is 0.3, not 0.30000000000000004."""
    return float(f"{number:.12g}")


def _um_per(unit: str | None) -> float | None:
    """An OME length unit's size in µm (none given: OME's default, µm); None for a unit that is no length (OME's
    "pixel" and "reference frame") or that OME does not know."""
    return LENGTH_UNITS_IN_UM.get(unit) if unit else 1.0


def stack_name(path: Path) -> str:
    """The name a stack's outputs are written under (``<name>.fused.tif``), as its reader names the stack:
    a folder (of slices, an NDTiff or Micro-Manager dataset) -> its whole name (``exp.1``, ``2024.05.01``);
    a file -> its name less its image suffix (``a.ome.tif`` -> ``a``, ``b.tif`` -> ``b``); a live session's
    ``stack.ome.tif`` -> its session folder's name (sessions refused together do not all write ``stack.*``); a
    multi-dimensional session's ``p0-A1_c0-DAPI.stack.ome.tif`` -> ``p0-A1_c0-DAPI``, as that session named its
    fused image (not ``p0-A1_c0-DAPI.stack.fused.tif``)."""
    # Absolute as a batch hands stacks to its workers: ".", "../x" and "x/" are named as they are there.
    path = Path(os.path.abspath(path))
    name = path.name
    if path.is_dir():  # (not Path.stem: "exp.1" and "exp.2" are two folders, not two "exp")
        return name
    if name == SESSION_STACK and path.parent.name:
        return path.parent.name
    for suffix in (f".{SESSION_STACK}", ".ome.tiff", ".ome.tif", ".ome.btf", ".tiff", ".tif", ".btf", ".tf8", ".png",
                   ".jpeg", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem or name
