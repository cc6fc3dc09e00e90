"""A folder of single-image files (TIFF, PNG, JPEG), one slice each, in natural sort order."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import tifffile

from fusion.errors import EmptyStackError, FusionError, StackLayoutError, StackTooLargeError, UnreadableStackError
from fusion.memory import check_fits_in_memory
from fusion.output_names import is_our_output
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
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".") and not is_our_output(p)]
    return sorted(files, key=natural_key)


def multipage_tiffs(files: list[Path]) -> list[tuple[Path, int]]:
    """The TIFF files among ``files`` that hold more than one page, with their page counts."""
    found = []
    for file in files:
        if not is_tiff(file):
            continue
        try:
            with tifffile.TiffFile(file) as tiff:
                pages = len(tiff.pages)
        except Exception:  # unreadable: reading it as a slice will say so
            continue
        if pages > 1:
            found.append((file, pages))
    return found


class ImageFolderStack(SavedStack):
    """Each image file in the folder is one slice; other files (licences, notes) and our own outputs
    (``fused.tif``, ``<name>.depth.tif``, ...) are ignored."""

    def __init__(self, folder: Path, name: str | None = None):
        super().__init__(folder, name or Path(folder).name)
        self.files = image_files(Path(folder))
        if not self.files:
            raise EmptyStackError(
                f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder", folder)
        stacks = multipage_tiffs(self.files)
        if stacks:
            # Reading page 0 of each would fuse the wrong images and say nothing.
            listed = ", ".join(f"{file.name} ({pages} pages)" for file, pages in stacks[:3])
            more = f" and {len(stacks) - 3} more" if len(stacks) > 3 else ""
            # Name the stacks themselves: a live session's folder also holds its fused and depth images.
            target = str(stacks[0][0]) if len(stacks) == 1 else " ".join(str(file) for file, _ in stacks[:3])
            raise StackLayoutError(
                f"this folder holds multi-page TIFF stacks ({listed}{more}), not one slice per file: "
                f"refuse the stacks themselves (--refuse {target})", folder)

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
        with imageio.imopen(file, "r") as image:
            height, width, samples, dtype = _stored_size(image)
            if _orientation(image) in SIDEWAYS_ORIENTATIONS:  # shown a quarter turn round: as ``_read`` gives it
                height, width = width, height  # (a PNG is decoded to find its EXIF block, which may follow the pixels)
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
                return tifffile.imread(file, key=0)
            # Opened once: its header, pixels and EXIF orientation (read apart, Pillow parsed the EXIF block three
            # times a slice, and decoded a PNG for each: its EXIF may follow the pixels).
            with imageio.imopen(file, "r") as image:
                height, width, samples, dtype = _stored_size(image)  # (a quarter turn needs as much memory)
                check_fits_in_memory(height, width, samples, dtype, self.path, self.slice_label(index))
                pixels = np.asarray(image.read())  # (as imageio.imread)
                return upright(pixels, _orientation(image))
        except StackTooLargeError:
            raise
        except Exception as error:
            raise UnreadableStackError(f"{file.name} is not a readable image ({_why_unreadable(file, error)})",
                                       self.path) from error

    @classmethod
    def single_file(cls, file: Path) -> ImageFolderStack:
        """A stack of one image file (fused as it is, with a warning)."""
        stack = cls.__new__(cls)
        SavedStack.__init__(stack, file, file.stem)
        stack.files = [Path(file)]
        return stack


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


def _stored_size(image) -> tuple[int, int, int, np.dtype]:
    """(height, width, samples, dtype) of the pixels of an image that imageio has open, as stored, from its
    header (not decoded)."""
    header = image.properties()
    height, width = header.shape[:2]
    return height, width, header.shape[2] if len(header.shape) == 3 else 1, np.dtype(header.dtype)


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
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
