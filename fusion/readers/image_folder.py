"""A folder of single-image files (TIFF, PNG, JPEG), one slice each, in natural sort order."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import imagecodecs
import imageio.v3 as imageio
import numpy as np
import tifffile
from PIL import ExifTags, Image

from fusion.errors import (EmptyStackError, FusionError, SliceMismatchError, StackLayoutError, StackTooLargeError,
                           UnreadableStackError)
from fusion.memory import check_fits_in_memory
from fusion.output_names import SESSION_REPORT, STACK as SESSION_STACK, is_our_output
from fusion.readers.base import SavedStack

SLICE_TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = SLICE_TIFF_SUFFIXES + (".png", ".jpg", ".jpeg")


def is_tiff(path: Path) -> bool:
    """Whether a slice file is a TIFF (read by tifffile, with pages and tags), not a PNG or JPEG."""
    return path.suffix.lower() in SLICE_TIFF_SUFFIXES


def natural_key(path: Path) -> list:
    """Sort key under which ``slice_2`` comes before ``slice_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> list[Path]:
    """The folder's slices in natural order. A slice's name that is a link leading nowhere (a network share
    not mounted, a copy half synced) is an error naming it: passed over, the slices after it would shift in
    the depth map."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".") and not is_our_output(p)]
    broken = sorted((p for p in files if p.is_symlink() and not p.exists()), key=natural_key)
    if broken:
        target = os.readlink(broken[0])
        looped = os.path.lexists(broken[0].parent / target)  # (the target is itself a link, round in a loop)
        leads = "which leads round in a loop of links" if looped else "which does not exist"
        raise UnreadableStackError(f"{broken[0].name} is a link to {target}, {leads}"
                                   f"{f' (and {len(broken) - 1} more such links)' if len(broken) > 1 else ''}: "
                                   "mount or copy the slices it names, or remove the link", folder)
    return sorted((p for p in files if p.is_file()), key=natural_key)


def tiff_pages(file: Path) -> int | None:
    """How many pages tifffile finds in the TIFF ``file`` (a file cut short: those before the cut); None where it
    cannot be read as a TIFF at all (empty, damaged header, not a TIFF)."""
    try:
        with tifffile.TiffFile(file) as tiff:
            return len(tiff.pages)
    except Exception:  # unreadable: reading it as a slice or a stack will say so
        return None


def multipage_tiffs(files: list[Path]) -> list[tuple[Path, int]]:
    """The TIFF files among ``files`` that hold more than one page, with their page counts."""
    found = []
    for file in files:
        pages = tiff_pages(file) if is_tiff(file) else None
        if pages is not None and pages > 1:
            found.append((file, pages))
    return found


def _holds_no_page(path: Path) -> bool:
    """Whether the TIFF at ``path`` is a header with no page (a live session's stack before its first slice)."""
    try:
        with tifffile.TiffFile(path) as tiff:
            return len(tiff.pages) == 0
    except Exception:  # unreadable: reading it will say so
        return False


def _stacks_inside_hint(folder: Path) -> str:
    """Where a folder holds no slices but folders that do (a folder of sessions, of slice folders): how to
    refuse each of them."""
    with contextlib.suppress(OSError):
        inside = sorted(entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        holding = [entry for entry in inside if (entry / SESSION_REPORT).is_file() or image_files(entry)]
        if holding:
            pattern = shlex.quote(str(folder / "*"))
            return (f"; it holds {len(holding)} folder{'s' if len(holding) > 1 else ''} of stacks or slices "
                    f"(e.g. {holding[0].name}): to refuse each, give them all, e.g. --refuse {pattern}")
    return ""


def _first_tiff_frame(file: Path) -> np.ndarray:
    """A TIFF file's first page as (H, W) or (H, W, S); (0, 0) for a header without an image (``read_slice`` says
    it holds none); a page that is not one frame (a volume) is refused."""
    from fusion.readers.tiff import check_one_frame_per_page

    with tifffile.TiffFile(file) as tiff:
        if not len(tiff.pages):
            return np.zeros((0, 0), np.uint8)
        page = tiff.pages.first
        check_one_frame_per_page(page.axes, page.shape)
        pixels = page.asarray()
    # A planar page is (S, H, W): given so, the engine refused it as channels first, with advice for code that
    # pushes slices, not for a folder of files.
    return np.moveaxis(pixels, 0, -1) if pixels.ndim == 3 and page.axes.startswith("S") else pixels


class ImageFolderStack(SavedStack):
    """Each image file in the folder is one slice; other files (licences, notes) and our own outputs
    (``fused.tif``, ``<name>.depth.tif``, ...) are ignored."""

    _sideways: dict[int, bool]   # by slice read: shown a quarter turn round (EXIF), for the mismatch error
    _said_alpha: bool            # the warning that alpha is not fused was given
    _said_orientation: bool      # the warning that a slice's EXIF orientation was overruled was given
    _first_look: tuple[int, int, int] | None  # the first slice's stored height, width and EXIF orientation, once needed

    def __init__(self, folder: Path, name: str | None = None):
        super().__init__(folder, name or Path(folder).name)
        self.files = image_files(Path(folder))
        self._init_reading()
        report = Path(folder) / SESSION_REPORT
        if not self.files and report.is_file():
            raise EmptyStackError(f"a live session's folder with no stack: its session acquired no slice (its "
                                  f"{SESSION_REPORT} says why)", folder)
        if not self.files:
            raise EmptyStackError(
                f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder{_stacks_inside_hint(Path(folder))}",
                folder)
        stack = Path(folder) / SESSION_STACK
        if report.is_file() and stack in self.files and _holds_no_page(stack):
            from fusion.readers.tiff import NO_SLICES_IN_SESSION_STACK

            raise EmptyStackError(NO_SLICES_IN_SESSION_STACK, stack)
        stacks = multipage_tiffs(self.files)
        if stacks:
            # Reading page 0 of each would fuse the wrong images and say nothing.
            listed = ", ".join(f"{file.name} ({pages} pages)" for file, pages in stacks[:3])
            more = f" and {len(stacks) - 3} more" if len(stacks) > 3 else ""
            # Name the stacks themselves: a live session's folder also holds its fused and depth images.
            target = str(stacks[0][0]) if len(stacks) == 1 else " ".join(str(file) for file, _ in stacks[:3])
            # The files left out of that advice said too: one may be a stack damaged or cut short in a copy.
            others = [file for file in self.files if file not in dict(stacks)]
            besides = (f"; beside them {len(others)} file{'s' if len(others) > 1 else ''} of one image or none "
                       f"readable ({', '.join(file.name for file in others[:3])}"
                       f"{f' and {len(others) - 3} more' if len(others) > 3 else ''}), which may be stacks damaged "
                       "or cut short") if others else ""
            raise StackLayoutError(
                f"this folder holds multi-page TIFF stacks ({listed}{more}), not one slice per file: "
                f"refuse the stacks themselves (--refuse {target}){besides}", folder)

    @property
    def n_slices(self) -> int:
        return len(self.files)

    def slice_label(self, index: int) -> str:
        return self.files[index].name

    def pixel_size_um(self) -> float | None:
        """The first slice's, where it is a TIFF that says (Fiji's image sequences, a camera's TIFFs: resolution
        tags in µm or another length, OME); PNG and JPEG carry none that microscopes write."""
        first = self.files[0]
        if not is_tiff(first):
            return None
        from fusion.readers.tiff import TiffStack

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (about the file as a stack: reading its slice will say what matters)
                with TiffStack(first) as stack:
                    return stack.pixel_size_um()
        except (FusionError, ValueError):
            return None

    @property
    def channels_are_colour(self) -> bool:
        """PNG and JPEG channels are colour; TIFF slices say so in their first page (``page_has_colour_samples``)."""
        first = self.files[0]
        if not is_tiff(first) or len(self.first_slice_format()[0]) != 3:
            return super().channels_are_colour
        from fusion.readers.tiff import page_has_colour_samples

        with tifffile.TiffFile(first) as tiff:
            return page_has_colour_samples(tiff.pages.first)

    def declared_size(self, index: int) -> tuple[int, int, int, np.dtype] | None:
        file = self.files[index]
        if is_tiff(file):
            with tifffile.TiffFile(file) as tiff:
                page = tiff.pages.first
                return page.imagelength, page.imagewidth, page.samplesperpixel, page.dtype
        height, width, samples, dtype, orientation = _stored_look(file)
        if self._shown_as(index, (height, width), orientation) in SIDEWAYS_ORIENTATIONS:  # as ``_read`` gives it
            height, width = width, height
        return height, width, samples, dtype

    def _check_declared_size(self, index: int) -> None:
        if is_tiff(self.files[index]):
            super()._check_declared_size(index)
        # (a PNG's or JPEG's is checked by ``_read``, from the one opening of the file that also decodes it)

    def _read(self, index: int) -> np.ndarray:
        file = self.files[index]
        try:
            if file.stat().st_size == 0:  # (imageio would try every plugin it has on it first)
                raise _EmptyFile("the file is empty: 0 bytes")
            if is_tiff(file):
                return _first_tiff_frame(file)
            png = png_header(file)
            if png is not None and png.pillow_misreads:
                check_fits_in_memory(*png.decoded_size(), self.path, self.slice_label(index))
                pixels, orientation = _decode_png(file)
                pixels = self._without_alpha(pixels, pixels.shape[2] if pixels.ndim == 3 else 1)
            else:
                # Opened once: its header, pixels and EXIF orientation (read apart, Pillow parsed the EXIF block
                # three times a slice, and decoded a PNG for each: its EXIF may follow the pixels).
                with imageio.imopen(file, "r") as image:
                    height, width, samples, dtype = _stored_size(image)  # (a quarter turn needs as much memory)
                    check_fits_in_memory(height, width, samples, dtype, self.path, self.slice_label(index))
                    jpeg = _whole_jpeg(file, (height, width, samples, dtype))
                    if jpeg is not None:
                        pixels = jpeg
                    elif samples == 4 and _starts_as_jpeg(file):  # its 4 samples are CMYK (or YCCK), not RGBA
                        pixels = np.asarray(cast(Any, image).read(mode="RGB"))  # (Pillow's plugin takes a mode)
                    else:
                        pixels = self._without_alpha(np.asarray(image.read()), samples)  # (as imageio.imread)
                    orientation = _orientation(image)
            if index == 0:  # (the other slices are turned as it is where only their tags differ: ``_shown_as``)
                self._first_look = (pixels.shape[0], pixels.shape[1], orientation)
            orientation = self._shown_as(index, pixels.shape[:2], orientation)
            self._sideways[index] = orientation in SIDEWAYS_ORIENTATIONS
            return upright(pixels, orientation)
        except StackTooLargeError:
            raise
        except StackLayoutError as error:
            raise StackLayoutError(f"{file.name}: {error.reason}", self.path) from None
        except Exception as error:
            raise UnreadableStackError(f"{file.name} is not a readable image ({_why_unreadable(file, error)})",
                                       self.path) from error

    def _without_alpha(self, pixels: np.ndarray, samples: int) -> np.ndarray:
        """A PNG's grey or colour samples without its alpha (LA, RGBA, a tRNS chunk's): transparency is no part of
        the scene, and a fused alpha steered the focus (grey + alpha: 99% of the weight) or made a see-through fused
        image."""
        if samples not in (2, 4) or pixels.ndim != 3:
            return pixels
        alpha = pixels[:, :, -1]
        if not self._said_alpha and alpha.min() < np.iinfo(pixels.dtype).max:
            self._said_alpha = True
            warnings.warn(f"{self.path}: the slices' alpha channel (transparency) is not fused: the fused image is "
                          "opaque, with the colours as stored under the transparent parts", stacklevel=4)
        return pixels[:, :, :-1]

    def _shown_as(self, index: int, stored_size: tuple[int, ...], orientation: int) -> int:
        """The EXIF orientation slice ``index`` is turned by: its own, or the first slice's where the two differ but
        their pixels are stored alike. A camera pointing straight down (a copy stand, a microscope's phototube)
        writes this tag at random from shot to shot; followed, it turned one slice of the same scene upside down
        and the fused image was a double exposure. The slices of one stack come from one camera in one place, so
        the pixels as stored are what lines up."""
        first = self.files[0]
        if index == 0 or is_tiff(first) or is_tiff(self.files[index]):
            return orientation
        if self._first_look is None:
            first_height, first_width, _, _, first_orientation = _stored_look(first)
            self._first_look = (first_height, first_width, first_orientation)
        first_height, first_width, first_orientation = self._first_look
        if orientation == first_orientation or tuple(stored_size) != (first_height, first_width):
            return orientation
        if not self._said_orientation:
            self._said_orientation = True
            warnings.warn(
                f"{self.path}: {self.files[index].name}'s EXIF orientation ({_orientation_said(orientation)}) "
                f"differs from {first.name}'s ({_orientation_said(first_orientation)}), though their pixels are "
                f"stored alike: it is turned as {first.name} is (a camera pointing straight down writes this tag at "
                "random); turn its pixels if it was really taken turned", stacklevel=4)
        return first_orientation

    def read_slice(self, index: int) -> np.ndarray:
        try:
            return super().read_slice(index)
        except SliceMismatchError as error:
            if self._sideways.get(index, False) == self._sideways.get(0, False):
                raise
            turned, other = (self.files[index], self.files[0]) if self._sideways.get(index) else \
                (self.files[0], self.files[index])
            raise SliceMismatchError(
                f"{error.reason}: {turned.name} is shown a quarter turn round, as its EXIF orientation says (as "
                f"viewers show it), and {other.name} is not; turn its pixels or the others' alike", self.path) from None

    @classmethod
    def single_file(cls, file: Path) -> ImageFolderStack:
        """A stack of one image file (fused as it is, with a warning)."""
        stack = cls.__new__(cls)
        SavedStack.__init__(stack, file, file.stem)
        stack.files = [Path(file)]
        stack._init_reading()
        return stack

    def _init_reading(self) -> None:
        self._sideways = {}
        self._said_alpha = False
        self._said_orientation = False
        self._first_look = None


# EXIF Orientation (tag 274): how a camera held sideways or upside down wants its pixels shown. Viewers,
# Helicon and Zerene honour it, so a fused image that did not would come out turned from its slices.
EXIF_ORIENTATION = "Orientation"  # tag 274 (0x0112), by the name imageio gives it (Pillow's ExifTags.TAGS)
SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)


def _orientation(image) -> int:
    """The EXIF orientation of an image that imageio has open (1: as stored, or no EXIF that says)."""
    try:
        return int(image.metadata(exclude_applied=False).get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: the pixels as they are stored
        return 1


JPEG_START = b"\xff\xd8\xff"   # SOI and the next marker's first byte
JPEG_END = b"\xff\xd9"          # EOI


def _starts_as_jpeg(file: Path) -> bool:
    """What the file holds, not what its name says (the scorpion stack's JPEGs are named .png)."""
    with open(file, "rb") as stream:
        return stream.read(len(JPEG_START)) == JPEG_START


def _whole_jpeg(file: Path, stored: tuple[int, int, int, np.dtype]) -> np.ndarray | None:
    """An 8-bit grey or colour JPEG's pixels as stored, by libjpeg-turbo through imagecodecs: the same values as
    Pillow's decoder (checked on every JPEG in ../shared/data and on progressive, 4:4:4 and grey ones) in about
    half its CPU time (a 5 MP slice: 38 ms against 68). None (then Pillow decodes it, or says why it cannot) for
    anything else, and for a file that does not end in the end-of-image marker: imagecodecs decodes a truncated
    JPEG without a word, greying what is missing, where Pillow says 'image file is truncated'."""
    height, width, samples, dtype = stored
    if samples not in (1, 3) or dtype != np.uint8:
        return None
    data = file.read_bytes()
    if not (data.startswith(JPEG_START) and data.endswith(JPEG_END)):
        return None
    try:
        pixels = imagecodecs.jpeg8_decode(data)
    except imagecodecs.Jpeg8Error:
        return None
    expected = (height, width) if samples == 1 else (height, width, samples)
    return pixels if pixels.shape == expected and pixels.dtype == np.uint8 else None


def _stored_look(file: Path) -> tuple[int, int, int, np.dtype, int]:
    """(height, width, samples, dtype, EXIF orientation) of a PNG or JPEG as stored, from its header (a PNG's EXIF
    block may follow its pixels: Pillow decodes those to find it, ``_png_orientation`` does not)."""
    png = png_header(file)
    if png is not None and png.pillow_misreads:
        with open(file, "rb") as stream:
            return (*png.decoded_size(), _png_orientation(stream))
    with imageio.imopen(file, "r") as image:
        return (*_stored_size(image), _orientation(image))


ORIENTATIONS_SAID = {1: "as stored", 2: "mirrored", 3: "upside down", 4: "upside down and mirrored",
                     5: "a quarter turn round and mirrored", 6: "a quarter turn clockwise",
                     7: "a quarter turn round and mirrored", 8: "a quarter turn anticlockwise"}


def _orientation_said(orientation: int) -> str:
    return f"{orientation}: shown {ORIENTATIONS_SAID[orientation]}" if orientation in ORIENTATIONS_SAID \
        else f"{orientation}: not an orientation, shown as stored"


def _stored_size(image) -> tuple[int, int, int, np.dtype]:
    """(height, width, samples, dtype) of the pixels of an image that imageio has open, as stored, from its
    header (not decoded)."""
    header = image.properties()
    height, width = header.shape[:2]
    return height, width, header.shape[2] if len(header.shape) == 3 else 1, np.dtype(header.dtype)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# By PNG colour type: samples per pixel as libpng decodes them (grey, RGB, palette as its RGB colours, grey + alpha,
# RGBA), before a tRNS chunk adds an alpha sample.
PNG_SAMPLES = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class PngHeader:
    """What a PNG says before its pixels: its IHDR chunk, and whether a tRNS chunk makes some colour transparent."""
    height: int
    width: int
    bit_depth: int
    colour_type: int
    has_transparency_chunk: bool

    @property
    def pillow_misreads(self) -> bool:
        """Whether Pillow would read it wrong: it decodes 16-bit RGB, RGBA and grey + alpha to 8 bits (grey +
        alpha even to RGBA), and drops a tRNS chunk's transparency without a word. libpng (``imagecodecs``)
        reads these at their depth, with tRNS as an alpha sample. (16-bit grey Pillow reads whole.)"""
        return self.has_transparency_chunk or (self.bit_depth == 16 and self.colour_type != 0)

    def decoded_size(self) -> tuple[int, int, int, np.dtype]:
        """(height, width, samples, dtype) as libpng decodes it, alpha included."""
        samples = PNG_SAMPLES[self.colour_type] + int(self.has_transparency_chunk)
        return self.height, self.width, samples, np.dtype(np.uint16 if self.bit_depth == 16 else np.uint8)


def png_header(file: Path) -> PngHeader | None:
    """The header of an image file that is a PNG (whatever its name), read from the chunks before its pixels;
    None where it is no PNG or its IHDR is damaged (Pillow then reads it, or says what is wrong)."""
    with open(file, "rb") as stream:
        if stream.read(8) != PNG_SIGNATURE:
            return None
        chunks = _png_chunks(stream)
        if next(chunks, None) != (b"IHDR", 13):
            return None
        ihdr = stream.read(13)
        if len(ihdr) != 13 or ihdr[9] not in PNG_SAMPLES or ihdr[8] not in (1, 2, 4, 8, 16):
            return None
        transparent = False
        for kind, _ in chunks:
            if kind == b"IDAT":  # (tRNS must come before the pixels)
                break
            transparent = transparent or kind == b"tRNS"
    return PngHeader(height=int.from_bytes(ihdr[4:8], "big"), width=int.from_bytes(ihdr[:4], "big"),
                     bit_depth=ihdr[8], colour_type=ihdr[9], has_transparency_chunk=transparent)


def _png_chunks(stream: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """(type, data length) of each chunk of a PNG stream past its signature, the stream at the chunk's data as
    each is yielded (the caller may read it); ends at IEND or where the stream does."""
    while len(head := stream.read(8)) == 8:
        kind, data_at = head[4:], stream.tell()
        yield kind, int.from_bytes(head[:4], "big")
        if kind == b"IEND":
            return
        stream.seek(data_at + int.from_bytes(head[:4], "big") + 4)  # past the data and its CRC


def _decode_png(file: Path) -> tuple[np.ndarray, int]:
    """A PNG's pixels as libpng decodes them (16 bits kept, a palette as its colours, tRNS as alpha), and its EXIF
    orientation."""
    with open(file, "rb") as stream:
        orientation = _png_orientation(stream)
        stream.seek(0)
        return imagecodecs.png_decode(stream.read()), orientation


def _png_orientation(stream: BinaryIO) -> int:
    """A PNG's EXIF orientation as Pillow reads it (eXIf chunk, ImageMagick's raw profile, XMP) wherever its
    chunks lie, from the PNG without its pixels: Pillow's PNG reader decodes them (at 8 bits) to look for EXIF
    after them."""
    stream.seek(0)
    kept = [stream.read(8)]
    for kind, length in _png_chunks(stream):
        if kind != b"IDAT":
            kept.append(length.to_bytes(4, "big") + kind + stream.read(length + 4))
    try:
        with Image.open(io.BytesIO(b"".join(kept))) as header:
            # (Pillow's base getexif: its PNG reader's own would try to decode the pixels left out)
            return int(Image.Image.getexif(header).get(ExifTags.Base.Orientation, 1))
    except Exception:  # a damaged EXIF block: the pixels as they are stored
        return 1


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels (H, W[, C]) as stored, turned and mirrored as EXIF ``orientation`` says they are shown."""
    transposed = pixels.swapaxes(0, 1)
    shown = {2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1], 5: transposed, 6: transposed[:, ::-1],
             7: transposed[::-1, ::-1], 8: transposed[::-1]}.get(orientation, pixels)
    return np.ascontiguousarray(shown)


class _EmptyFile(ValueError):
    """A slice's file of 0 bytes: said as it is."""


def _why_unreadable(file: Path, error: Exception) -> str:
    """One line: imageio's "no backend" message runs over lines and suggests installing a video
    plugin, which would not help a damaged or mislabelled image."""
    text = str(error)
    if isinstance(error, _EmptyFile):
        return text
    if "Could not find a backend" in text:
        return f"no decoder reads it: damaged, or not the {file.suffix.lstrip('.').upper()} image its name says"
    said = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
    if isinstance(error, (SyntaxError, struct.error, EOFError)) or "runcated" in text:
        # Pillow's words for a file cut short in or after its header ("not identified by this driver",
        # "unpack_from requires a buffer of at least 2 bytes", "Truncated File Read"): what a user can act on first.
        return f"truncated or damaged: the file ends before its image does, or its bytes were changed; {said}"
    return said
