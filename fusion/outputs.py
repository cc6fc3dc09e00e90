"""Writing a fusion's results: TIFFs that Fiji and napari open, and a JSON report.

Every file is written under a temporary name and renamed into place, so a reader (or a
resumed batch) never sees half a file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fusion.channel_look import ChannelLook


class OutputWriteError(OSError):
    """Raised when an output file cannot be written (a full disk, no permission); names the file.
    Nothing half-written is left behind."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def make_folder(folder: Path, what: str, exist_ok: bool = True) -> None:
    """``folder`` (and its parents) made; where it cannot be (below a file, a read-only or vanished
    parent), an OSError of one line naming it as ``what`` ("the output folder")."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as error:
        raise OSError(f"{folder}: cannot make {what}: {error.strerror or error}") from None


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def written_atomically(path: Path):
    """Yields the temporary name to write; renames it to ``path`` at the end, or removes it on failure."""
    partial = _atomic_target(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException as error:
        unwritten = error if isinstance(error, OSError) and not isinstance(error, OutputWriteError) else None
        # (while the temporary file still holds what was written: a full disk has room again once it goes)
        number, why = (None, "") if unwritten is None else _why_unwritten(unwritten, path.parent)
        with contextlib.suppress(OSError):
            partial.unlink()
        if unwritten is not None:
            advice = "; free some space there or write elsewhere" if number == errno.ENOSPC else ""
            raise OutputWriteError(number, f"cannot write {path.name} into {path.parent}: {why}{advice}") from None
        raise


# A write that came short, as numpy says it (``ndarray.tofile``, which tifffile writes pixels with): no errno.
SHORT_WRITE = re.compile(r"\b(\d+) requested and (\d+) written\b")
# Room a filesystem may keep for its own records (block maps, a journal) while a file's write runs out of space.
FULL_DISK_MARGIN_BYTES = 1 << 20


def _why_unwritten(error: OSError, folder: Path) -> tuple[int | None, str]:
    """The errno and the words for ``error``, met writing into ``folder``. A write that came short carries no errno
    (numpy's "147456 requested and 76716 written"): where the disk there has less room left than the write still
    needed, that is a full disk (ENOSPC) and said so; otherwise a quota or a file size limit stopped it."""
    if error.errno:
        return error.errno, error.strerror or str(error)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # (the folder gone meanwhile: nothing to tell by)
        return None, str(error)
    short = SHORT_WRITE.search(str(error))
    still_needed = int(short[1]) - int(short[2]) if short else 0
    if free < still_needed + FULL_DISK_MARGIN_BYTES:
        return errno.ENOSPC, os.strerror(errno.ENOSPC)
    if short:  # (numpy's words kept: fusion.batch knows a want of space by them)
        return None, (f"the write came short ({short[0]}) with room left on that disk: a disk quota or a file size "
                      "limit (ulimit -f) may have been reached")
    return None, str(error)


# Why a write into the output folder failed, where every later write there fails too: the batch stops (fusion.batch).
FULL = "full"
READ_ONLY = "read-only"
DENIED = "permission denied"


def unwritable_folder(error: BaseException, folder: Path | None = None) -> str | None:
    """``FULL`` where ``error`` is a want of space (``for_want_of_space``), ``READ_ONLY`` where it (or one it was
    raised from) is EROFS (a file system remounted read-only after a disk error), ``DENIED`` where it is EACCES and
    ``folder`` (the output folder) itself refuses a new file now (``denies_new_files``: its permissions changed; not a
    stack's own file in the way, nor a stack that cannot be read); None for any other error, which may be the one
    stack's own (EIO is left to the caller: one bad sector is not a dead disk, ``io_error``)."""
    if for_want_of_space(error):
        return FULL
    if _in_chain(error, errno.EROFS):
        return READ_ONLY
    if folder is not None and _in_chain(error, errno.EACCES) and denies_new_files(folder):
        return DENIED
    return None


def io_error(error: BaseException) -> bool:
    """Whether ``error``, or one it was raised from, is EIO (the disk failed to read or write a block)."""
    return _in_chain(error, errno.EIO)


def _in_chain(error: BaseException, number: int) -> bool:
    """Whether ``error``, or one it was raised from (``fusion.refuse`` says which output, from the OSError), is the
    OSError ``number``, or says its words (an error of one line that kept only them)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if (isinstance(cause, OSError) and cause.errno == number) or os.strerror(number) in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def denies_new_files(folder: Path) -> bool:
    """Whether a new file cannot be made in ``folder`` for want of permission (EACCES), tried with a hidden empty
    file that is removed at once: the folder's own mode, owner or ACL, as this process meets them (``os.access``
    would miss a capability or an ACL the server checks)."""
    probe = Path(folder) / f".write-check-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except PermissionError:
        return True
    except OSError:  # (gone, full, read-only: not a matter of permission)
        return False
    with contextlib.suppress(OSError):
        probe.unlink()
    return False


def for_want_of_space(error: BaseException) -> bool:
    """Whether ``error``, or one it was raised from (``fusion.refuse`` says which output, a stack's buffer which slice,
    from the OSError), is a full disk or quota: ENOSPC, EDQUOT, their words in its message, or a short write that gave
    no errno ("N requested and M written")."""
    full = (errno.ENOSPC, errno.EDQUOT)
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        said = str(cause)
        if isinstance(cause, OSError) and cause.errno in full:
            return True
        if SHORT_WRITE.search(said) or any(os.strerror(number) in said for number in full):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


# The samples ImageJ opens in an RGB TIFF (its TiffDecoder: "ImageJ can only open 8 and 16 bit/channel images").
IMAGEJ_SAMPLE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
# The ImageJ description's key saying that a composite's channels are one colour picture's samples ("RGB", "RGBA"):
# float colour, which no RGB TIFF holds for ImageJ (Fiji shows the composite in red, green, blue; ImageJ passes over
# the key). ``fusion.readers.tiff.described_as_colour`` reads it back, so that it is fused again as colour.
COLOUR_SAMPLES_KEY = "colour_samples"


# The pixel sizes (µm on the specimen) that outputs record: 0.1 nm to 1 cm a pixel. No light microscope resolves
# below ~0.1 µm (pixels of a few nm are already oversampled a hundredfold), and a focus stack of a whole object at
# 1 cm a pixel is 40 m across on a 4000 px sensor. Outside it, the number is a unit mistake (m for µm) or
# garbage, and TIFF cannot hold it: its resolution is a fraction of two 32-bit integers, in pixels per cm, so
# 1e-30 µm failed the writer and 1e30 µm was written as 0/1, which readers divide by.
PIXEL_SIZE_RANGE_UM = (1e-4, 1e4)


def plausible_pixel_size_um(size_um: float | None, source: str, said: str = "pixel size") -> float | None:
    """``size_um`` where it is a pixel size in ``PIXEL_SIZE_RANGE_UM``; else None, with a warning naming
    ``source`` (the file or device that gave it) where it is a number outside that range. None, zero, negative,
    NaN: None, without a word (they say that there is no calibration)."""
    if size_um is None or not size_um > 0 or math.isnan(size_um):
        return None
    low, high = PIXEL_SIZE_RANGE_UM
    if not low <= size_um <= high:
        warnings.warn(f"{source}: the {said} {size_um:g} µm is not a pixel size on a specimen ({low:g} to "
                      f"{high:g} µm); the outputs are written without one", stacklevel=2)
        return None
    return size_um


def colour_by_shape(shape: tuple[int, ...]) -> bool:
    """3 or 4 channels taken for the colour samples of one picture (RGB, RGBA), as cameras and photos give them,
    where nothing says otherwise."""
    return len(shape) == 3 and shape[2] in (3, 4)


def write_image_tiff(path: Path, image: np.ndarray, pixel_size_um: float | None = None, colour: bool | None = None,
                     properties: dict[str, str] | None = None, channel_look: ChannelLook | None = None) -> None:
    """(H, W) or (H, W, C) image as a TIFF that Fiji and napari open as what it is.

    ``colour``: whether the C values of a pixel are one colour picture's samples (RGB, RGBA), written as an RGB
    TIFF, or separate channels (fluorescence), written one plane each as an ImageJ hyperstack, which Fiji opens
    as a composite of C channels and the napari plugin as C layers; None: ``colour_by_shape``. Colour of other
    types than 8 and 16 bits (float) is written as channels too, Fiji opening no RGB TIFF of them; its description
    says that they are colour (``COLOUR_SAMPLES_KEY``).
    ``pixel_size_um`` goes into the resolution tags in pixels per centimetre (TIFF's unit, which tifffile, PIL and
    other plain readers take), and ``unit=um`` into the ImageJ description: Fiji turns centimetre tags into µm for
    exactly that unit, whatever the size (without it, it shows pixels over 10 µm in cm); ``pixel_size_um_of`` reads
    it back. ``properties``: more key=value lines for that one description (ImageJ
    passes over keys it does not know; two descriptions would leave readers to pick one: Fiji takes the last,
    tifffile the first). ``channel_look``: separate channels' names, colour tables and display ranges, as the stack
    gave them (ImageJ's Labels, LUTs and Ranges: Fiji shows each channel in its own colour again, napari names
    its layers); an 8-bit grey image's one colour table makes it a palette image (ImageJ's 8-bit with a LUT).
    """
    colour = colour_by_shape(image.shape) if colour is None else colour and image.ndim == 3
    described: dict[str, Any] = dict(properties or {})
    if colour and image.dtype not in IMAGEJ_SAMPLE_DTYPES:
        colour = False  # ImageJ refuses wider colour samples (float): a composite of their channels it opens
        described[COLOUR_SAMPLES_KEY] = "RGBA"[: image.shape[2]]  # (which says that they are colour)
    if image.ndim == 3 and not colour:
        image = np.moveaxis(image, -1, 0)  # (C, H, W): ImageJ keeps each channel in its own page
    axes = "YXS" if colour else ("CYX" if image.ndim == 3 else "YX")
    if axes == "CYX":
        described["mode"] = "composite"  # (ImageJ's default for a hyperstack is one channel at a time)
    resolution: dict[str, Any] = {}
    pixel_size_um = plausible_pixel_size_um(pixel_size_um, str(path))
    if pixel_size_um:
        described["unit"] = "um"  # (exactly "um": ImageJ converts cm tags for no other spelling)
        per_cm = 1e4 / pixel_size_um
        resolution = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    description = tifffile.imagej_description(image.shape, axes=axes, rgb=colour, **described)
    look = channel_look.imagej_metadata(image.shape[0]) if channel_look is not None and axes == "CYX" else {}
    extratags = tifffile.imagej_metadata_tag(look, "<") if look else ()
    photometric, colormap = ("rgb" if colour else "minisblack"), None
    palette = channel_look.luts if channel_look is not None and axes == "YX" and image.dtype == np.uint8 else None
    if palette is not None and len(palette) == 1:  # one grey channel with its colour table: a palette image, as Fiji's
        photometric, colormap = "palette", palette[0].astype(np.uint16) * 257
    with written_atomically(path) as partial:
        tifffile.imwrite(partial, image, photometric=photometric, colormap=colormap,
                         planarconfig="contig" if colour else None, description=description, metadata=None,
                         extratags=extratags, byteorder="<", **resolution)


def write_depth_tiff(path: Path, depth: np.ndarray, unit: str, pixel_size_um: float | None = None) -> None:
    """float32 (H, W) depth map; ``unit`` ("um", "dpt", "mA", "slice index") goes into its description as
    ``depth_unit`` (``depth_unit_of`` reads it back) and, but for slice indices, as ImageJ's value unit ``vunit``,
    which Fiji shows beside each value. NaN marks pixels with no texture to tell depth by (Fiji and napari show
    them as empty)."""
    properties = {"depth_unit": unit, "nan": "no texture: depth unknown"}
    if unit != "slice index":
        # (ImageJ reads the description as Java properties, which decode \u escapes: µm, in ASCII)
        properties["vunit"] = "\\u00B5m" if unit == "um" else unit
    write_image_tiff(path, depth.astype(np.float32), pixel_size_um=pixel_size_um, properties=properties)


def json_safe(value):
    """``value`` with NaN and infinity as None (null) and numpy scalars as Python numbers, so that
    strict JSON parsers (JavaScript's, Go's, jq) accept the file."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, report: dict) -> None:
    """``report`` as strict JSON (no NaN or Infinity tokens), written atomically."""
    text = json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    with written_atomically(path) as partial:
        partial.write_text(text)
